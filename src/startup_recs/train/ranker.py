"""Train the neural re-ranker (``recs train ranker``; legacy ``train_ranker.py``).

What it learns from (docs/contracts.md "Fitting windows"): the ranker dataset's *validation*
rows (``split == "val"``), with features built by :mod:`startup_recs.serving.ranking_features` from the
*stage-1* retrievers and serving data, which were fit strictly before the validation start. So a
retrieval score never saw the label it is asked to predict (the legacy ranker's ``model_score``
did). Inputs and leak checks: :mod:`startup_recs.train.ranker_inputs`; lists:
:mod:`startup_recs.train.ranker_lists`; losses: :mod:`startup_recs.train.ranker_losses`.

This module: :class:`RankerTrainConfig` (every hyperparameter, recorded in the config JSON),
:func:`fit` (the training loop), :func:`train` (the whole step: lists, fit, the three artifact
files), :func:`train_ranker` (the pipeline's keyword entry) and :func:`cli_train`.

Lists. The loss compares candidates only *within one list* (one entity's candidates, or one
logged session's), never across entities: a listwise softmax cross-entropy or a pairwise
logistic loss over a padded ``[lists, max_len]`` batch with a validity mask.

Model choice. A fixed-seed slice of the *entities* (``holdout``) is held out; after each epoch the
IPS-free NDCG@10 of its lists (:func:`startup_recs.evaluation.metrics.ndcg_lists`, the
evaluation's NDCG) picks the best checkpoint (``_best.pth``) and stops training after
``patience`` epochs without gain. The config records the holdout NDCG of the ranker and of
ordering by each single feature (every retrieval score, popularity), the baselines it must beat.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from startup_recs.core.errors import ConfigError, DataError, ModelFitError
from startup_recs.core.usecases import get_use_case
from startup_recs.evaluation.metrics import ndcg_lists
from startup_recs.models.ranker import LEARNERS, RankerConfig, RankerMLP, save, save_booster
from startup_recs.serving import ranking_features
from startup_recs.serving.pool import DEFAULT_SIZES, PoolSpec
from startup_recs.train.ranker_inputs import dataset_sidecar, training_lists
from startup_recs.train.ranker_lists import ListData
from startup_recs.train.ranker_losses import LOSSES, pad_lists

log = logging.getLogger(__name__)

EVAL_K = 10
# Relevance grade of each event (contact/apply > save > click > view); the use case's positive
# events are always ``positive_grade`` whatever this says. Views grade 0: opening a profile is
# not acting on it (snapshot.PASSIVE_EVENTS), and grading it hurt on the demo data (-0.002).
DEFAULT_GRADES: dict[str, int] = {"click": 1, "save": 2}


@dataclass
class RankerTrainConfig:
    """Hyperparameters of one ranker training run (all recorded in the config JSON)."""

    use_case: str
    epochs: int = 20
    batch_size: int = 128  # lists per optimiser step
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.0
    loss: str = "listwise"  # listwise | pairwise
    seed: int = 0
    holdout: float = 0.2  # fraction of entities held out for the best checkpoint
    patience: int = 5
    lists: str = "pool"  # pool | entity | session: what one softmax / one set of pairs spans
    extra_negatives: int = 20  # entity lists: retrieved-but-not-acted negatives added (0 = off);
    # pool lists: negatives kept per list for the loss after features are built (0 = all)
    retrieve_k: int = 200  # entity lists: the retrieval depth the extra negatives come from
    positives: str = "both"  # dataset | both: also every validation-window positive event (entity lists)
    retrievers: tuple[str, ...] = ranking_features.RETRIEVERS
    # pool lists: the hybrid pool serving re-ranks (retriever -> top-N; serving/pool.py)
    pool: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SIZES))
    # graded labels: relevance of a candidate = the highest grade of its window events (0 = none);
    # the use case's positive events (contact, apply) get ``positive_grade``
    grades: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_GRADES))
    positive_grade: int = 3
    # auto: fit both and keep the one with the better holdout NDCG@10 | lightgbm (LambdaRank) | mlp
    learner: str = "auto"
    threads: int = 2
    # LightGBM LambdaRank (train/ranker_lgbm.py): few leaves, many rows per leaf, L2: the lists are
    # few (one per validation entity) and a 31-leaf booster overfits them within ~15 rounds
    lgb_num_leaves: int = 7
    lgb_min_data_in_leaf: int = 100
    lgb_learning_rate: float = 0.03
    lgb_lambda_l2: float = 10.0
    lgb_feature_fraction: float = 0.8
    lgb_rounds: int = 400
    lgb_early_stopping: int = 60
    lgb_eval_every: int = 5
    tune_trials: int = 0  # > 0: an Optuna search over learner + key parameters on the holdout first
    # validation-length windows the lists come from: 1 = the validation window; each more one is the
    # window before, scored by stage-1 retrievers the pipeline fits again before it
    # (pipeline/ranker_windows.py; measured on the demo: README "What limits the ranker")
    windows: int = 1

    def __post_init__(self) -> None:
        get_use_case(self.use_case)
        if self.loss not in ("listwise", "pairwise"):
            raise ConfigError(f"--loss must be listwise or pairwise, not {self.loss!r}")
        if self.positives not in ("dataset", "both"):
            raise ConfigError(f"--positives must be dataset or both, not {self.positives!r}")
        if self.lists not in ("pool", "entity", "session"):
            raise ConfigError(f"--lists must be pool, entity or session, not {self.lists!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("--epochs and --batch-size must be >= 1 and --lr > 0")
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"--holdout must be in [0, 1), got {self.holdout}")
        self.hidden = tuple(int(h) for h in self.hidden)
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"--hidden needs positive sizes, got {self.hidden}")
        if self.learner not in (*LEARNERS, "auto"):
            raise ConfigError(f"--learner must be auto or one of {LEARNERS}, not {self.learner!r}")
        if int(self.windows) < 1:
            raise ConfigError(f"ranker_windows must be >= 1, got {self.windows}")
        PoolSpec.of(self.pool)  # validates the sizes
        self.pool = {str(k): int(v) for k, v in dict(self.pool).items()}
        self.grades = {str(k): int(v) for k, v in dict(self.grades).items()}
        if self.positive_grade < 1 or any(g < 0 or g > self.positive_grade for g in self.grades.values()):
            raise ConfigError(f"grades must lie in [0, positive_grade={self.positive_grade}], got {self.grades}")


# --- fitting ------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """A fitted ranker: the MLP (``model`` final weights, ``best_state``) or the LightGBM
    booster (``booster_text``, LightGBM's text model at its best iteration)."""

    model: RankerMLP | None
    best_state: dict[str, torch.Tensor] | None
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    learner: str = "mlp"
    booster_text: str | None = None


def holdout_split(entities: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over lists: True where the list's entity is in the held-out slice."""
    uniq = np.unique(entities.astype(str))
    rng = np.random.default_rng(seed)
    n_hold = int(round(fraction * len(uniq)))
    if fraction > 0 and len(uniq) >= 2:
        n_hold = min(max(n_hold, 1), len(uniq) - 1)
    held = set(rng.permutation(uniq)[:n_hold].tolist()) if fraction > 0 else set()
    return np.array([e in held for e in entities.astype(str)], dtype=bool)


def _useful(d: ListData) -> np.ndarray:
    """Lists a loss can learn from: at least one positive and one lower-labelled item."""
    out = np.zeros(d.n_lists, dtype=bool)
    for i in range(d.n_lists):
        y = d.y[d.offsets[i]:d.offsets[i + 1]]
        out[i] = len(y) > 1 and y.max() > 0 and y.min() < y.max()
    return out


def relevance(d: ListData, cfg: RankerTrainConfig | None = None) -> np.ndarray:
    """Binary relevance of each row for model choice: a positive event (the evaluation's target,
    labels >= ``d.relevant_from``), not a click or a save (they only grade the training labels)."""
    return (d.y >= d.relevant_from).astype(np.float32)


def feature_baselines(d: ListData, k: int = EVAL_K, rel: np.ndarray | None = None) -> dict[str, float]:
    """NDCG@k of ordering each list by one feature: each retriever's within-pool rank, popularity."""
    rel = d.y if rel is None else rel
    out: dict[str, float] = {}
    for j, name in enumerate(d.names):
        base = name[: -len("_rank")] if name.endswith("_rank") else None
        if base in ranking_features.RETRIEVERS and np.ptp(d.X[:, j]) > 0:
            out[base] = ndcg_lists(-d.X[:, j], rel, d.offsets, k)
        elif name == "pop_log" and np.ptp(d.X[:, j]) > 0:
            out[name] = ndcg_lists(d.X[:, j], rel, d.offsets, k)
    return out


def _fit_lightgbm(tr: ListData, ho: ListData, cfg: RankerTrainConfig) -> FitResult:
    from startup_recs.models.ranker_lgbm import booster_to_text
    from startup_recs.train.ranker_lgbm import fit_lambdarank

    booster, history, metrics = fit_lambdarank(tr, ho, cfg, float(tr.relevant_from))
    metrics.update({"train_lists": tr.n_lists, "holdout_lists": ho.n_lists, "train_rows": int(len(tr.X))})
    if ho.n_lists and (relevance(ho, cfg) > 0).any():
        metrics["holdout_baselines_ndcg@10"] = feature_baselines(ho, rel=relevance(ho, cfg))
    return FitResult(None, None, history, metrics, learner="lightgbm", booster_text=booster_to_text(booster))


def fit(data: ListData, cfg: RankerTrainConfig, *, progress: bool = False) -> FitResult:
    """Train a :class:`RankerMLP` on ``data``'s lists (holdout by entity); CPU, seeded.

    ``cfg.learner == "auto"``: both learners are fitted and the one with the better holdout
    NDCG@10 is returned (``metrics["learner_choice"]`` records both). Raises :class:`DataError`
    when no list has both a positive and a negative, and :class:`ModelFitError` on a non-finite loss.
    """
    if cfg.learner == "auto":
        from dataclasses import replace

        fits = {name: fit(data, replace(cfg, learner=name), progress=progress) for name in LEARNERS}
        score = {name: float(r.metrics.get("holdout_ndcg@10", -1.0)) for name, r in fits.items()}
        best = max(LEARNERS, key=lambda n: (score[n], n == "lightgbm"))
        fits[best].metrics["learner_choice"] = {"chosen": best, "holdout_ndcg@10": score}
        log.info("ranker learner chosen on the holdout: %s (%s)", best, score)
        return fits[best]
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    useful = _useful(data)
    if not useful.any():
        raise DataError("ranker: no candidate list has both a positive and a negative to learn from")
    held = holdout_split(data.entity, cfg.holdout, cfg.seed)
    tr = data.subset(np.flatnonzero(useful & ~held))
    ho = data.subset(np.flatnonzero(held))
    if tr.n_lists == 0:
        raise DataError("ranker: every useful list fell into the holdout; lower --holdout")
    if cfg.learner == "lightgbm":
        return _fit_lightgbm(tr, ho, cfg)
    mean = tr.X.mean(0) if len(tr.X) else np.zeros(tr.X.shape[1])
    std = tr.X.std(0) if len(tr.X) else np.ones(tr.X.shape[1])
    std = np.where(std < 1e-6, 1.0, std)
    model = RankerMLP(tr.X.shape[1], cfg.hidden, cfg.dropout, mean.tolist(), std.tolist())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = LOSSES[cfg.loss]
    Xt, yt, wt = (torch.from_numpy(a) for a in (tr.X, tr.y, tr.w))
    has_ho = ho.n_lists > 0 and (relevance(ho, cfg) > 0).any()

    def evaluate(d: ListData) -> float:
        model.eval()
        with torch.no_grad():
            s = model(torch.from_numpy(d.X)).numpy()
        model.train()
        return ndcg_lists(s, relevance(d, cfg), d.offsets)

    history: list[dict[str, float]] = []
    best = -math.inf
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    best_epoch, stale = 0, 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(tr.n_lists)
        total, steps = 0.0, 0
        model.train()
        for lo in range(0, len(order), cfg.batch_size):
            idx, mask = pad_lists(tr.offsets, order[lo:lo + cfg.batch_size])
            it, mt = torch.from_numpy(idx), torch.from_numpy(mask)
            scores = model(Xt[it])
            loss = loss_fn(scores, yt[it], wt[it], mt)
            if not torch.isfinite(loss):
                raise ModelFitError(f"ranker loss became {loss.item()} at epoch {epoch}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        row = {"epoch": epoch, "loss": total / max(steps, 1), "seconds": time.perf_counter() - t0,
               "train_ndcg@10": evaluate(tr)}
        if has_ho:
            row["holdout_ndcg@10"] = evaluate(ho)
        history.append(row)
        score = row.get("holdout_ndcg@10", row["train_ndcg@10"])
        if progress or log.isEnabledFor(logging.INFO):
            log.info("epoch %d/%d loss %.4f train ndcg@10 %.4f holdout ndcg@10 %s (%.2fs)", epoch, cfg.epochs,
                     row["loss"], row["train_ndcg@10"],
                     f"{row['holdout_ndcg@10']:.4f}" if has_ho else "-", row["seconds"])
        if score > best + 1e-6:
            best, best_epoch, stale = score, epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= cfg.patience:
                log.info("early stop after epoch %d (best %d)", epoch, best_epoch)
                break
    model.eval()
    metrics: dict[str, Any] = {
        "best_epoch": best_epoch, "epochs_run": len(history),
        "train_lists": tr.n_lists, "holdout_lists": ho.n_lists, "train_rows": int(len(tr.X)),
    }
    if has_ho:
        final = model.state_dict()
        model.load_state_dict(best_state)
        metrics["holdout_ndcg@10"] = evaluate(ho)
        model.load_state_dict(final)
        model.eval()
        metrics["holdout_baselines_ndcg@10"] = feature_baselines(ho, rel=relevance(ho, cfg))
    return FitResult(model, best_state, history, metrics)


def train(cfg: RankerTrainConfig, data_uri: str, retrievers_dir: str, output_dir: str, *,
          serving_data: str | None = None, snapshot: str | None = None,
          extra_windows: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The whole step: read the dataset, build stage-1 features, fit, write the three artifacts.

    ``extra_windows``: ``(ranker dataset, retrievers folder)`` of earlier validation windows
    (:func:`startup_recs.pipeline.ranker_windows.earlier_windows`), each folder fit before its own
    window and leak-checked like the first; their lists join the training lists (the holdout stays
    by entity). Returns the config JSON written (with ``train`` metrics and history).
    """
    if len(extra_windows) != cfg.windows - 1:
        raise ConfigError(f"ranker: {cfg.windows} windows configured, {1 + len(extra_windows)} given")
    lists, info = training_lists(cfg, data_uri, retrievers_dir, serving_data=serving_data, snapshot=snapshot)
    if extra_windows:
        windows = [_window_record(info, lists.n_lists)]
        for data_j, retrievers_j in extra_windows:
            lists_j, info_j = training_lists(cfg, data_j, retrievers_j, snapshot=snapshot)
            lists = lists.concat(lists_j)
            windows.append(_window_record(info_j, lists_j.n_lists))
        info["window_lists"] = windows
        log.info("ranker: %d validation windows, %d lists (%s)", len(windows), lists.n_lists,
                 ", ".join(f"{w['val_start'][:10]}: {w['lists']}" for w in windows))
    search: dict[str, Any] | None = None
    if cfg.tune_trials > 0:
        from startup_recs.train.ranker_search import search_learner

        cfg, search = search_learner(lists, cfg)
    result = fit(lists, cfg)
    train_info = {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
                  **info, "metrics": result.metrics, "history": result.history}
    if search is not None:
        train_info["search"] = search
    pool = PoolSpec.of(cfg.pool).to_dict()
    if result.learner == "lightgbm":
        rcfg = RankerConfig(use_case=cfg.use_case, features=lists.names, hidden=[], mean=[], std=[],
                            weights="booster", learner="lightgbm", pool=pool, train=train_info)
        uris = save_booster(result.booster_text or "", rcfg, output_dir)
    else:
        rcfg = RankerConfig(
            use_case=cfg.use_case, features=lists.names, hidden=list(cfg.hidden),
            mean=result.model.mean.tolist(), std=result.model.std.tolist(), dropout=cfg.dropout,
            weights="best", learner="mlp", pool=pool, train=train_info,
        )
        uris = save(result.model, rcfg, output_dir, best_state=result.best_state)
    log.info("ranker written: %s (holdout ndcg@10 %s, baselines %s)", uris["config"],
             result.metrics.get("holdout_ndcg@10"), result.metrics.get("holdout_baselines_ndcg@10"))
    return rcfg.to_json()


def _window_record(info: dict[str, Any], n_lists: int) -> dict[str, Any]:
    """What the config records of one validation window the ranker learnt from."""
    return {"val_start": info.get("val_start"), "features_fit_until": info.get("features_fit_until"),
            "lists": int(n_lists)}


def _use_case_of(data_uri: str, given: str | None) -> str:
    """``--use-case``, checked against the dataset's recorded one (or taken from it)."""
    recorded = dataset_sidecar(data_uri).get("use_case")
    if given and recorded and given != recorded:
        from startup_recs.core.errors import ModelMismatchError

        raise ModelMismatchError(f"{data_uri} was built for use case {recorded!r}, not {given!r}")
    if given or recorded:
        return str(given or recorded)
    raise ConfigError("--use-case is required (the dataset's sidecar does not name one)")


def train_ranker(*, data: str, output_dir: str, use_case: str | None = None, retrievers_dir: str | None = None,
                 serving_data: str | None = None, snapshot: str | None = None, **params: Any) -> dict[str, Any]:
    """Keyword entry for the pipeline step: :func:`train` with :class:`RankerTrainConfig` fields
    as ``params`` (``epochs``, ``batch_size``, ``lr``, ``hidden``, ``loss``...); the retrievers
    default to ``output_dir``. Returns flat scalars (holdout NDCG@10 of the ranker and baselines)."""
    cfg = RankerTrainConfig(use_case=_use_case_of(data, use_case), **params)
    out = train(cfg, data, retrievers_dir or output_dir, output_dir, serving_data=serving_data, snapshot=snapshot)
    m = out["train"]["metrics"]
    info: dict[str, Any] = {k: v for k, v in m.items() if isinstance(v, int | float)}
    for name, v in (m.get("holdout_baselines_ndcg@10") or {}).items():
        info[f"holdout_ndcg@10_{name}"] = v
    return info


def cli_train(args: argparse.Namespace) -> int:
    """``recs train ranker``: see :func:`train`."""
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    hidden = tuple(int(h) for h in str(getattr(args, "hidden", "64,32")).split(",") if h.strip())
    cfg = RankerTrainConfig(
        use_case=_use_case_of(args.data, getattr(args, "use_case", None)), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        hidden=hidden, loss=getattr(args, "loss", "listwise"), seed=getattr(args, "seed", 0),
        lists=getattr(args, "lists", "entity"), extra_negatives=getattr(args, "extra_negatives", 20),
        retrieve_k=getattr(args, "retrieve_k", 200), positives=getattr(args, "positives", "both"), holdout=getattr(args, "holdout", 0.2),
        patience=getattr(args, "patience", 5), learner=getattr(args, "learner", None) or "auto",
        tune_trials=int(getattr(args, "tune_trials", 0) or 0),
    )
    retrievers_dir = getattr(args, "retrievers", None) or args.output_dir
    out = train(cfg, args.data, retrievers_dir, args.output_dir,
                serving_data=getattr(args, "serving_data", None), snapshot=getattr(args, "snapshot", None))
    m = out["train"]["metrics"]
    best = f"best epoch {m['best_epoch']}" if "best_epoch" in m else f"best iteration {m.get('best_iteration')}"
    print(f"ranker ({out['learner']}): holdout ndcg@10 {m.get('holdout_ndcg@10')} ({best}); "
          f"single-feature baselines {m.get('holdout_baselines_ndcg@10')}")
    return 0
