"""Two-tower retrieval model, shared by training and serving.

Each tower maps one side (the *entity* asking for recommendations, or a *candidate*) to an
L2-normalised vector of size ``dim``; the retrieval score is their dot product (cosine).

A tower is the sum of four parts, then L2-normalised:

* ``base``: one learned vector (what every row has in common; an unknown id in an id-only
  dataset ends up here, i.e. a popularity-like direction);
* a **feature part**: categorical embeddings, multi-valued embeddings (``EmbeddingBag`` mean,
  padding index 0) and numerics (already standardised by the feature encoder, 0 = missing)
  through one small layer, concatenated and passed through a small MLP;
* an **id part**: an id embedding whose index 0 (unknown id) is a fixed zero row, so a new
  startup or user gets the feature part alone. Training drops ids at random (``id_dropout``) so
  the feature part learns to stand on its own;
* a **shared-token part** (:class:`TokenPair`): for each pair of fields the match terms compare
  token by token (skills needed / skills, sector / sectors, location / location;
  :func:`startup_recs.features.token_column_pairs`), both towers sum their tokens' vectors from
  ONE table (``EmbeddingBag`` sum, tied weights), straight into the output. With near-orthogonal
  rows at init, the dot product of the two sums starts proportional to the count of shared tokens:
  the tower begins where the content heuristic is and learns from there, instead of rediscovering
  "same token on both sides" through two MLPs in a two-epoch budget.

Inputs come from :class:`SideTensors`: ``ids`` [n] int64, ``cat`` [n, n_cat] int64 (0 = unknown),
``multi`` {name: [n, L] int64 padded with 0}, ``num`` [n, n_num] float32, as produced from the
saved feature encoder by :func:`side_tensors`. :meth:`TwoTowerModel.from_dir` needs only the
models folder: ``two_tower{sfx}_v1_config.json`` names every other file. The precomputed
embeddings serving uses are written and read by :func:`save_embeddings` / :func:`load_embeddings`
(names from :func:`startup_recs.core.artifacts.two_tower_files`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from startup_recs.core.errors import ModelMismatchError

KINDS = ("categorical", "multi", "numeric")


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature: ``kind`` in KINDS; ``cardinality`` = vocabulary size incl. index 0."""

    name: str
    kind: str
    cardinality: int = 0


@dataclass(frozen=True)
class TowerSpec:
    """What one tower consumes: the id vocabulary size (incl. 0 = unknown) and its features."""

    n_ids: int
    features: tuple[FeatureSpec, ...] = ()

    def of_kind(self, kind: str) -> list[FeatureSpec]:
        return [f for f in self.features if f.kind == kind]

    def to_json(self) -> dict[str, Any]:
        return {"n_ids": self.n_ids, "features": [asdict(f) for f in self.features]}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TowerSpec:
        return cls(int(obj["n_ids"]), tuple(FeatureSpec(**f) for f in obj.get("features", ())))

    def feature_signature(self) -> list[tuple[str, str]]:
        """Names and kinds only: what must match between a model and new data."""
        return [(f.name, f.kind) for f in self.features]


@dataclass(frozen=True)
class TokenPair:
    """An entity field and a candidate field holding the same kind of token, one shared table.

    ``entity_map`` / ``candidate_map``: each side's encoded code (index into that field's own
    vocabulary, 0 = unknown) -> shared token index (0 = none); ``n_tokens`` counts the shared
    table's rows including 0. Saved in the model config, so loading needs no encoder.
    """

    entity: str
    candidate: str
    entity_map: tuple[int, ...]
    candidate_map: tuple[int, ...]
    n_tokens: int

    @property
    def key(self) -> str:
        """Module and buffer name of the pair (imported column names may hold any character)."""
        return re.sub(r"\W", "_", f"{self.entity}__{self.candidate}")

    def to_json(self) -> dict[str, Any]:
        return {"entity": self.entity, "candidate": self.candidate, "entity_map": list(self.entity_map),
                "candidate_map": list(self.candidate_map), "n_tokens": self.n_tokens}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TokenPair:
        return cls(str(obj["entity"]), str(obj["candidate"]), tuple(int(i) for i in obj["entity_map"]),
                   tuple(int(i) for i in obj["candidate_map"]), int(obj["n_tokens"]))


@dataclass
class SideTensors:
    """Encoded rows of one side. ``take(idx)`` gathers a batch of rows (all on one device)."""

    ids: torch.Tensor  # [n] int64, 0 = unknown id
    cat: torch.Tensor  # [n, n_cat] int64
    multi: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [n, L] int64
    num: torch.Tensor | None = None  # [n, n_num] float32

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def take(self, idx: torch.Tensor) -> SideTensors:
        return SideTensors(
            self.ids[idx], self.cat[idx], {k: v[idx] for k, v in self.multi.items()},
            None if self.num is None else self.num[idx],
        )

    def to(self, device: torch.device | str) -> SideTensors:
        return SideTensors(
            self.ids.to(device), self.cat.to(device), {k: v.to(device) for k, v in self.multi.items()},
            None if self.num is None else self.num.to(device),
        )

    def with_ids(self, ids: torch.Tensor) -> SideTensors:
        return SideTensors(ids, self.cat, self.multi, self.num)


def side_tensors(spec: TowerSpec, ids: np.ndarray, feats: Mapping[str, np.ndarray]) -> SideTensors:
    """Pure conversion: encoded numpy arrays (ids [n], feature name -> array) -> SideTensors.

    Raises :class:`ModelMismatchError` when a feature of ``spec`` is missing or has the wrong
    shape (the legacy "feature dimension mismatch").
    """
    n = int(len(ids))
    cats, multi, nums = [], {}, []
    for f in spec.features:
        if f.name not in feats:
            raise ModelMismatchError(
                f"feature dimension mismatch: the model needs feature {f.name!r} ({f.kind}) "
                f"which the data does not have (data has: {sorted(feats) or 'no features'})"
            )
        a = np.asarray(feats[f.name])
        want_ndim = 2 if f.kind == "multi" else 1
        if a.ndim != want_ndim or a.shape[0] != n:
            raise ModelMismatchError(
                f"feature dimension mismatch: {f.name!r} ({f.kind}) has shape {a.shape}, "
                f"expected {'[n, L]' if want_ndim == 2 else '[n]'} with n={n}"
            )
        if f.kind == "numeric":
            nums.append(a.astype(np.float32, copy=False))
        else:
            a = a.astype(np.int64, copy=False)
            # Index beyond the model's vocabulary = a value the model never saw: unknown (0).
            a = np.where((a >= 0) & (a < f.cardinality), a, 0)
            if f.kind == "categorical":
                cats.append(a)
            else:
                multi[f.name] = torch.from_numpy(np.ascontiguousarray(a if a.shape[1] else np.zeros((n, 1), np.int64)))
    ids64 = np.asarray(ids, dtype=np.int64)
    ids64 = np.where((ids64 >= 0) & (ids64 < spec.n_ids), ids64, 0)
    return SideTensors(
        torch.from_numpy(ids64),
        torch.from_numpy(np.stack(cats, 1)) if cats else torch.zeros((n, 0), dtype=torch.int64),
        multi,
        torch.from_numpy(np.stack(nums, 1)) if nums else None,
    )


class Tower(nn.Module):
    """One side: ``base + feature MLP + id embedding + shared tokens`` -> L2-normalised [n, dim].

    ``pairs``: ``(pair, this side's field, its code map)`` per :class:`TokenPair`; the model ties
    the two towers' tables of one pair (:class:`TwoTowerModel`).
    """

    def __init__(self, spec: TowerSpec, dim: int, hidden: int = 256, feature_dim: int = 32,
                 pairs: tuple[tuple[TokenPair, str, tuple[int, ...]], ...] = ()) -> None:
        super().__init__()
        self.spec = spec
        self.cat_names = [f.name for f in spec.of_kind("categorical")]
        self.multi_names = [f.name for f in spec.of_kind("multi")]
        self.n_num = len(spec.of_kind("numeric"))
        self.base = nn.Parameter(torch.randn(dim) * 0.01)
        self.id_emb = nn.Embedding(max(spec.n_ids, 1), dim, padding_idx=0)
        nn.init.normal_(self.id_emb.weight, std=0.05)
        with torch.no_grad():
            self.id_emb.weight[0].zero_()
        self.cat_emb = nn.ModuleList(
            nn.Embedding(max(f.cardinality, 1), feature_dim, padding_idx=0) for f in spec.of_kind("categorical")
        )
        self.multi_emb = nn.ModuleDict({
            f.name: nn.EmbeddingBag(max(f.cardinality, 1), feature_dim, mode="mean", padding_idx=0)
            for f in spec.of_kind("multi")
        })
        self.num_mlp = nn.Sequential(nn.Linear(self.n_num, feature_dim), nn.ReLU()) if self.n_num else None
        n_in = feature_dim * (len(self.cat_names) + len(self.multi_names) + (1 if self.n_num else 0))
        self.mlp = (
            nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, dim)) if n_in else None
        )
        # (pair key, field, column of x.cat for a categorical field / None for a list field in x.multi)
        self.pair_inputs: list[tuple[str, str, int | None]] = []
        self.pair_emb = nn.ModuleDict()
        for pair, name, code_map in pairs:
            if name not in self.cat_names and name not in self.multi_names:
                raise ModelMismatchError(f"shared-token field {name!r} is not a categorical or list feature of this tower")
            self.pair_emb[pair.key] = nn.EmbeddingBag(pair.n_tokens, dim, mode="sum", padding_idx=0)
            self.register_buffer(f"pair_map_{pair.key}", torch.tensor(code_map, dtype=torch.int64), persistent=False)
            self.pair_inputs.append((pair.key, name, self.cat_names.index(name) if name in self.cat_names else None))

    def features(self, x: SideTensors) -> torch.Tensor | None:
        """The feature part [n, dim], or None for an id-only tower."""
        if self.mlp is None:
            return None
        parts = [emb(x.cat[:, i]) for i, emb in enumerate(self.cat_emb)]
        parts += [self.multi_emb[name](x.multi[name]) for name in self.multi_names]
        if self.num_mlp is not None and x.num is not None:
            parts.append(self.num_mlp(x.num))
        return self.mlp(torch.cat(parts, dim=1))

    def shared_tokens(self, x: SideTensors) -> torch.Tensor | None:
        """The shared-token part [n, dim]: each pair's token vectors summed, or None without pairs."""
        out = None
        for key, name, cat_col in self.pair_inputs:
            codes = x.multi[name] if cat_col is None else x.cat[:, cat_col, None]
            part = self.pair_emb[key](getattr(self, f"pair_map_{key}")[codes])
            out = part if out is None else out + part
        return out

    def forward(self, x: SideTensors) -> torch.Tensor:
        out = self.id_emb(x.ids) + self.base
        for part in (self.features(x), self.shared_tokens(x)):
            if part is not None:
                out = out + part
        return F.normalize(out.float(), dim=-1)


class TwoTowerModel(nn.Module):
    """Entity tower + candidate tower. ``score = entity_vec @ candidate_vec.T`` (cosine).

    ``pairs``: the shared-token tables (:class:`TokenPair`), one per pair, tied between the
    towers; ``pair_init``: each token row's norm at init (rows drawn at random, so nearly
    orthogonal in ``dim`` dimensions; row 0 is padding).
    """

    def __init__(self, entity: TowerSpec, candidate: TowerSpec, dim: int = 128, hidden: int = 256,
                 feature_dim: int = 32, meta: dict[str, Any] | None = None,
                 pairs: tuple[TokenPair, ...] = (), pair_init: float = 0.3) -> None:
        super().__init__()
        self.dim = dim
        self.pairs = tuple(pairs)
        self.entity_tower = Tower(entity, dim, hidden, feature_dim, tuple((p, p.entity, p.entity_map) for p in pairs))
        self.candidate_tower = Tower(candidate, dim, hidden, feature_dim,
                                     tuple((p, p.candidate, p.candidate_map) for p in pairs))
        for p in self.pairs:
            table = self.entity_tower.pair_emb[p.key]
            nn.init.normal_(table.weight, std=pair_init / dim ** 0.5)
            with torch.no_grad():
                table.weight[0].zero_()
            self.candidate_tower.pair_emb[p.key].weight = table.weight  # tied: one table per pair
        self.meta: dict[str, Any] = dict(meta or {})  # the config JSON it came from
        self.encoder: Any = None  # the feature encoder (set by from_dir)

    def encode(self, side: str, x: SideTensors) -> torch.Tensor:
        return (self.entity_tower if side == "entity" else self.candidate_tower)(x)

    # ---------------------------------------------------------------- loading (serving)
    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TwoTowerModel:
        m = config["model"]
        return cls(TowerSpec.from_json(m["entity"]), TowerSpec.from_json(m["candidate"]), int(m["dim"]),
                   int(m["hidden"]), int(m["feature_dim"]), meta=dict(config),
                   pairs=tuple(TokenPair.from_json(p) for p in m.get("pairs", ())))

    @classmethod
    def from_dir(cls, models_dir: str, use_case: str, which: str = "best",
                 map_location: str = "cpu") -> TwoTowerModel:
        """Load the model of ``use_case`` from a models folder; needs nothing else.

        ``which``: ``"best"`` or ``"latest"``. The config names the weights and encoder files.
        """
        from startup_recs.core import artifacts, storage

        cfg_uri = storage.join(models_dir, artifacts.two_tower_files(use_case).config)
        if not storage.exists(cfg_uri):
            raise ModelMismatchError(f"no two-tower model for {use_case} in {models_dir} (missing {cfg_uri})")
        config = storage.read_json(cfg_uri)
        if config.get("use_case") != use_case:
            raise ModelMismatchError(
                f"model config {cfg_uri} is for use case {config.get('use_case')!r}, not {use_case!r}")
        model = cls.from_config(config)
        files = config["files"]
        model.load_weights(storage.read_bytes(storage.join(models_dir, files[which])), map_location)
        enc_uri = storage.join(models_dir, files["encoder"])
        model.encoder = load_encoder(storage.read_json(enc_uri)) if storage.exists(enc_uri) else None
        model.eval()
        return model

    def load_weights(self, blob: bytes, map_location: str = "cpu") -> None:
        """Load a ``_best.pth`` (state_dict) or ``_latest.pth`` ({"model": state_dict, ...}) blob."""
        state = torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        self.load_weights_state(state)

    def load_weights_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """``load_state_dict`` with a one-line ModelMismatchError when shapes or names differ."""
        try:
            self.load_state_dict(state)
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
            detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
            raise ModelMismatchError(
                f"feature dimension mismatch: checkpoint does not fit the model config ({detail})") from None

    # ---------------------------------------------------------------- serving helpers
    @torch.no_grad()
    def encode_frame(self, side: str, ids: Any, features: Any = None, batch_size: int = 8192) -> np.ndarray:
        """Embed rows of one side -> L2-normalised float32 [n, dim].

        ``ids``: a sequence of ids with ``features`` a DataFrame of their raw feature rows
        (indexed by id, aligned with ``ids``; None for id-only data), or a DataFrame holding an
        id column (``entity_id`` / ``candidate_id``) or id index plus the raw feature columns.
        Ids the model never trained on get the feature-only embedding.
        """
        if self.encoder is None:
            raise ModelMismatchError("this two-tower model has no feature encoder loaded")
        enc_ids, feats = encode_side(self.encoder, side, ids, features)
        spec = self.entity_tower.spec if side == "entity" else self.candidate_tower.spec
        return embed_all(self, side, side_tensors(spec, enc_ids, feats), batch_size)

    def encode_entities(self, ids: Any, features: Any = None) -> np.ndarray:
        """Entity rows (startups for reverse use cases) -> float32 [n, dim]; see encode_frame."""
        return self.encode_frame("entity", ids, features)

    def encode_candidates(self, ids: Any, features: Any = None) -> np.ndarray:
        """Candidate rows (users for reverse use cases) -> float32 [n, dim]; see encode_frame."""
        return self.encode_frame("candidate", ids, features)


@torch.no_grad()
def embed_all(model: TwoTowerModel, side: str, x: SideTensors, batch_size: int = 8192,
              device: torch.device | str = "cpu") -> np.ndarray:
    """Embed every row of ``x`` in chunks -> float32 [n, dim] on the CPU."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(x)))
        out.append(model.encode(side, x.take(idx).to(device)).float().cpu())
    model.train(was_training)
    dim = model.dim
    return torch.cat(out).numpy() if out else np.zeros((0, dim), np.float32)


# ------------------------------------------------------------------------ precomputed embeddings
SIDES = ("entity", "candidate")


def _embedding_files(use_case: str, side: str) -> tuple[str, str]:
    """(vectors ``.npy``, ids ``.json``) file names of one side's precomputed embeddings."""
    from startup_recs.core import artifacts

    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    files = artifacts.two_tower_files(use_case)
    if side == "entity":
        return files.entity_embeddings, files.entity_ids
    return files.candidate_embeddings, files.candidate_ids


def save_embeddings(output_dir: str, use_case: str, side: str, vectors: np.ndarray, ids: Any) -> None:
    """Write one side's embeddings: float32 ``[n, dim]`` ``.npy`` (no pickle) + the ``n`` ids (JSON list)."""
    from startup_recs.core import storage

    vec_file, ids_file = _embedding_files(use_case, side)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
    storage.write_bytes(storage.join(output_dir, vec_file), buf.getvalue())
    storage.write_json(storage.join(output_dir, ids_file), list(ids))


def load_embeddings(models_dir: str, use_case: str, side: str) -> tuple[list[str], np.ndarray] | None:
    """``(ids [n], float32 [n, dim])`` of one side written by :func:`save_embeddings`, or None
    when the folder has none for ``use_case``."""
    from startup_recs.core import storage

    vec_file, ids_file = _embedding_files(use_case, side)
    vec_uri = storage.join(models_dir, vec_file)
    if not storage.exists(vec_uri):
        return None
    vectors = np.load(io.BytesIO(storage.read_bytes(vec_uri)), allow_pickle=False)
    ids = [str(i) for i in storage.read_json(storage.join(models_dir, ids_file))]
    if len(ids) != vectors.shape[0]:
        raise ModelMismatchError(f"{vec_uri}: {len(ids)} ids for {vectors.shape[0]} vectors")
    return ids, vectors


# ------------------------------------------------------------------------ encoder adapter
# The feature code is startup_recs.features (a PairEncoder = one FeatureEncoder per side, fitted
# on the fit window, JSON). The functions below are the only places that touch its API.
def fit_encoder(entities: Any, candidates: Any, entity_ids: Any, candidate_ids: Any,
                specs: Mapping[str, Any] | None = None, kinds: tuple[str, str] = ("imported", "imported")) -> Any:
    """Fit both sides on the fit window: id vocabularies = ``entity_ids`` / ``candidate_ids``
    (the ids with fit-window positives), feature vocabularies and statistics from their rows.

    ``entities`` / ``candidates``: raw feature frames (id index or ``<side>_id`` column; None or
    no feature columns = id-only); ``specs``: {"entity": FeatureSpec, "candidate": FeatureSpec}
    (default: chosen from the columns and ``kinds``, the use case's entity/candidate kinds).
    """
    from startup_recs.features import PairEncoder

    def frame(df: Any, side: str) -> Any:
        if df is None:
            return None
        n_feature_cols = len([c for c in df.columns if c != f"{side}_id"])
        return df if n_feature_cols else None

    specs = specs or {}
    return PairEncoder.fit(frame(entities, "entity"), frame(candidates, "candidate"), entity_ids, candidate_ids,
                           entity_spec=specs.get("entity"), candidate_spec=specs.get("candidate"),
                           entity_kind=kinds[0], candidate_kind=kinds[1])


def tower_spec(encoder: Any, side: str) -> TowerSpec:
    """The tower input spec of one side from its fitted encoder (sizes include index 0)."""
    enc = encoder.side(side)
    sizes = enc.sizes()
    feats = [FeatureSpec(c, "categorical", sizes[c]) for c in enc.spec.categorical]
    feats += [FeatureSpec(c, "multi", sizes[c]) for c in enc.spec.multi]
    feats += [FeatureSpec(c, "numeric", 0) for c in enc.spec.numeric]
    return TowerSpec(enc.n_ids, tuple(feats))


def token_pairs(encoder: Any, use_case: str) -> tuple[TokenPair, ...]:
    """The shared-token pairs of a fitted encoder: the fields the use case's match terms compare
    token by token (:func:`startup_recs.features.token_column_pairs`), each pair's shared table
    the sorted union of both fields' vocabularies. A pair whose vocabularies share no token is
    left out (nothing to tie). Pure: the same encoder gives the same maps."""
    from startup_recs.features import token_column_pairs

    ent, cand = encoder.side("entity"), encoder.side("candidate")
    out = []
    for e_col, c_col in token_column_pairs(use_case, [*ent.spec.categorical, *ent.spec.multi],
                                           [*cand.spec.categorical, *cand.spec.multi]):
        ve, vc = ent.vocab.get(e_col, []), cand.vocab.get(c_col, [])
        if not set(ve) & set(vc):
            continue
        index = {t: i + 1 for i, t in enumerate(sorted(set(ve) | set(vc)))}
        out.append(TokenPair(e_col, c_col, (0, *(index[t] for t in ve)), (0, *(index[t] for t in vc)), len(index) + 1))
    return tuple(out)


def encode_side(encoder: Any, side: str, ids: Any, features: Any = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Raw rows -> (id indices [n] int64, feature name -> encoded array).

    ``ids``: a DataFrame (id column ``entity_id``/``candidate_id`` or id index, plus raw feature
    columns), or a sequence of ids with ``features`` a frame indexed by id (None = id-only).
    Raises :class:`ModelMismatchError` when the frame lacks a feature column the model uses.
    """
    import pandas as pd

    from startup_recs.features import encode_side as _encode

    if isinstance(ids, pd.DataFrame):
        df, id_list = ids, None
    else:
        df, id_list = features, [str(i) for i in ids]
    spec = encoder.side(side).spec
    if df is not None and not spec.empty:
        missing = [c for c in spec.columns if c not in df.columns]
        if missing:
            raise ModelMismatchError(
                f"feature dimension mismatch: the {side} features lack column(s) {missing} the model was trained on")
    if df is None and id_list is not None:
        df = pd.DataFrame(index=pd.Index(id_list, name=f"{side}_id"))
    return _encode(encoder, side, df, ids=id_list)


def load_encoder(obj: Mapping[str, Any] | str | bytes) -> Any:
    from startup_recs.features import PairEncoder

    return PairEncoder.from_json(obj if isinstance(obj, str | bytes) else dict(obj))


def dumps_encoder(encoder: Any) -> str:
    return encoder.to_json()
