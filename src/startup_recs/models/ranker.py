"""The neural re-ranker: a small MLP that scores ``[m, f]`` ranking features into ``[m]`` scores.

One definition serves training (``forward`` in torch, autograd) and serving (``numpy_forward``
over the same weights exported once by :meth:`RankerMLP.export_numpy`; for a 200 x 30 input a
numpy pass takes tens of microseconds where a torch call costs more in dispatch than in maths).
The input normaliser (per-feature mean and std, fitted on the training rows) lives inside the
module as buffers, so the state_dict alone reproduces a score; the config JSON beside the weights
records the same numbers for people, plus the feature names, hidden sizes and use case.

Artifacts (:func:`startup_recs.core.artifacts.ranker_files`; ``{sfx}`` is ``_reverse`` for reverse
use cases): ``ranker{sfx}_v1.pth`` (final state_dict), ``ranker{sfx}_v1_best.pth`` (best validation
state_dict), ``ranker{sfx}_v1_config.json``. :func:`from_dir` needs only the folder. The LightGBM
learner (:mod:`startup_recs.models.ranker_lgbm`) shares the config and writes
``ranker{sfx}_v1_booster.txt`` instead of the two ``.pth`` files; :func:`load_scorer` loads either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import ModelMismatchError

CONFIG_VERSION = 1
LEARNERS = ("mlp", "lightgbm")


@dataclass
class RankerConfig:
    """Everything a loader needs besides the weights.

    ``features``: ordered feature names (columns of ``ranking_features.build``); ``learner``:
    ``"mlp"`` (torch weights) or ``"lightgbm"`` (the booster text model,
    :mod:`startup_recs.models.ranker_lgbm`); ``mean``/``std``: the MLP's input normaliser ([f]
    each; empty for LightGBM); ``hidden``: MLP hidden sizes; ``weights``: which state_dict file
    serving loads (``best`` or ``final``); ``pool``: the candidate pool it re-ranks
    (:meth:`startup_recs.serving.pool.PoolSpec.to_dict`; empty = the default pool);
    ``train``: the training hyperparameters and metrics, for the record (not read back).
    """

    use_case: str
    features: list[str]
    hidden: list[int]
    mean: list[float]
    std: list[float]
    weights: str = "best"
    dropout: float = 0.0
    version: int = CONFIG_VERSION
    learner: str = "mlp"
    pool: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"model": "ranker", **asdict(self), "files": artifacts.ranker_files(self.use_case).as_dict()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RankerConfig:
        if obj.get("model") != "ranker":
            raise ModelMismatchError(f"not a ranker config (model={obj.get('model')!r})")
        keys = set(cls.__dataclass_fields__)
        cfg = cls(**{k: v for k, v in obj.items() if k in keys})
        if cfg.learner not in LEARNERS:
            raise ModelMismatchError(f"ranker config: unknown learner {cfg.learner!r} (expected one of {LEARNERS})")
        if cfg.learner == "mlp" and (len(cfg.mean) != len(cfg.features) or len(cfg.std) != len(cfg.features)):
            raise ModelMismatchError(
                f"ranker config: {len(cfg.features)} features but normaliser of "
                f"{len(cfg.mean)}/{len(cfg.std)} values"
            )
        return cfg


class RankerMLP(nn.Module):
    """``score = MLP((x - mean) / std)``: Linear-ReLU blocks of ``hidden`` sizes, then Linear(., 1).

    Input ``[m, f]`` float32 (raw features, normalised inside), output ``[m]`` scores (logits;
    only their order within one entity's list matters).
    """

    def __init__(self, n_features: int, hidden: Sequence[int] = (64, 32), dropout: float = 0.0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.n_features = int(n_features)
        mean_t = torch.zeros(n_features) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.ones(n_features) if std is None else torch.as_tensor(std, dtype=torch.float32)
        self.register_buffer("mean", mean_t.clone())
        self.register_buffer("std", std_t.clone().clamp_min(1e-6))
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [..., f] -> scores [...]."""
        return self.net((x - self.mean) / self.std).squeeze(-1)

    def export_numpy(self) -> NumpyMLP:
        """The same function as plain float32 arrays (for per-request serving without torch calls)."""
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        return NumpyMLP(
            mean=self.mean.detach().cpu().numpy().astype(np.float32),
            inv_std=(1.0 / self.std.detach().cpu().numpy()).astype(np.float32),
            layers=[(lin.weight.detach().cpu().numpy().T.astype(np.float32).copy(),
                     lin.bias.detach().cpu().numpy().astype(np.float32).copy()) for lin in linears],
        )


@dataclass
class NumpyMLP:
    """Exported :class:`RankerMLP` weights; ``__call__`` is its eval-mode forward in numpy."""

    mean: np.ndarray  # [f]
    inv_std: np.ndarray  # [f]
    layers: list[tuple[np.ndarray, np.ndarray]]  # (W [in, out], b [out]); ReLU between layers

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x`` [m, f] float32 -> [m] float32."""
        h = (np.asarray(x, dtype=np.float32) - self.mean) * self.inv_std
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < last:
                np.maximum(h, 0.0, out=h)
        return h[:, 0]


def save(model: RankerMLP, cfg: RankerConfig, output_dir: str, *, best_state: dict | None = None) -> dict[str, str]:
    """Write the final state_dict, the best one (``best_state`` or the final) and the config.

    The config goes last so a reader never finds a config naming weights that are not there.
    Returns ``{"final"|"best"|"config": uri}``.
    """
    import io

    names = artifacts.ranker_files(cfg.use_case).as_dict()
    uris = {k: storage.join(output_dir, names[k]) for k in ("final", "best", "config")}
    for key, state in (("final", model.state_dict()), ("best", best_state or model.state_dict())):
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
        storage.write_bytes(uris[key], buf.getvalue())
    storage.write_json(uris["config"], cfg.to_json())
    return uris


def save_booster(booster_text: str, cfg: RankerConfig, output_dir: str) -> dict[str, str]:
    """Write a LightGBM ranker: its text model (``ranker{sfx}_v1_booster.txt``), then the config.

    Returns ``{"booster"|"config": uri}``.
    """
    files = artifacts.ranker_files(cfg.use_case)
    uris = {"booster": storage.join(output_dir, files.booster), "config": storage.join(output_dir, files.config)}
    storage.write_bytes(uris["booster"], booster_text.encode())
    storage.write_json(uris["config"], cfg.to_json())
    return uris


def load_scorer(models_dir: str, use_case: str, *, which: str | None = None) -> tuple[Any, RankerConfig]:
    """``(scorer, config)`` of any learner: ``scorer(X float32 [m, f]) -> float32 [m]`` (the MLP's
    numpy forward, or the LightGBM booster). :class:`ModelMismatchError` for files that do not fit."""
    cfg = load_config(models_dir, use_case)
    if cfg.learner == "lightgbm":
        from startup_recs.models.ranker_lgbm import BoosterScorer

        uri = storage.join(models_dir, artifacts.ranker_files(use_case).booster)
        return BoosterScorer.from_text(storage.read_bytes(uri).decode(), len(cfg.features)), cfg
    model, cfg = from_dir(models_dir, use_case, which=which)
    return model.export_numpy(), cfg


def load_config(models_dir: str, use_case: str) -> RankerConfig:
    """Read ``ranker{sfx}_v1_config.json`` and check it belongs to ``use_case``."""
    uri = storage.join(models_dir, artifacts.ranker_files(use_case).config)
    cfg = RankerConfig.from_json(storage.read_json(uri))
    if cfg.use_case != use_case:
        raise ModelMismatchError(f"ranker config {uri} is for use case {cfg.use_case!r}, not {use_case!r}")
    return cfg


def from_dir(models_dir: str, use_case: str, *, which: str | None = None) -> tuple[RankerMLP, RankerConfig]:
    """Load the ranker of ``use_case`` from a folder: (eval-mode model, config).

    ``which`` = ``"best"`` or ``"final"`` (default: the config's ``weights``). Weights are read with
    ``torch.load(weights_only=True)``; a state_dict whose shapes do not fit the config's feature
    count raises :class:`ModelMismatchError` (the legacy "feature dimension mismatch").
    """
    import io

    cfg = load_config(models_dir, use_case)
    if cfg.learner != "mlp":
        raise ModelMismatchError(f"ranker in {models_dir} is a {cfg.learner} model, not an MLP; use load_scorer")
    key = which or cfg.weights
    uri = storage.join(models_dir, artifacts.ranker_files(use_case).as_dict()[key])
    state = torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)
    model = RankerMLP(len(cfg.features), cfg.hidden, cfg.dropout, cfg.mean, cfg.std)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise ModelMismatchError(f"ranker weights {uri} do not fit its config: {first}") from None
    model.eval()
    return model, cfg

