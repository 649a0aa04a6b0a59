"""Train the neural re-ranker (``recs train ranker``; legacy ``train_ranker.py``).

What it learns from (docs/contracts.md "Fitting windows"): the ranker dataset's *validation*
rows (``split == "val"``), with features built by :mod:`startup_recs.serving.ranking_features` from the
*stage-1* retrievers and serving data, which were fit strictly before the validation start. So a
retrieval score never saw the label it is asked to predict (the legacy ranker's ``model_score``
did). :func:`check_fit_window` refuses models fit at or after the validation start.

Lists. The loss compares candidates only *within one list* (one entity's candidates, or one
logged session's), never across entities: a listwise softmax cross-entropy or a pairwise
logistic loss over a padded ``[lists, max_len]`` batch with a validity mask. Positives carry the
dataset's inverse-propensity ``weight`` (position bias: a click at rank 9 counts more than one at
rank 1); negatives weigh 1.

Training matches serving. Online the ranker re-orders the router's top-``retrieve_k`` retrieved
candidates, not the logged impressions. So by default (``lists="pool"``) each entity's list IS its
routed stage-1 top-``retrieve_k`` (the same Recommender code serving uses), labelled by its
validation-window positives: the dataset's session positives (with their IPS weights) and, with
``positives="both"``, every other positive event of the window (organic applications too;
weight 1). Positives the router did not retrieve are dropped: next to retrieved negatives they
would teach "a low retrieval score means a positive" (measured on the small synthetic data with
ALS-only routing: entity lists with all window positives -35% NDCG@10 against routed, pool lists
+99%).
``lists="entity"`` (logged rows + ``extra_negatives`` sampled from the retrieved top-k) and
``lists="session"`` (each logged session) remain for comparison.

Model choice. A fixed-seed slice of the *entities* (``holdout``) is held out; after each epoch the
IPS-free NDCG@10 of its lists picks the best checkpoint (``_best.pth``) and stops training after
``patience`` epochs without gain. The config records the holdout NDCG of the ranker and of
ordering by each single feature (every retrieval score, popularity), the baselines it must beat.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import ConfigError, DataError, ModelFitError
from startup_recs.core.usecases import get_use_case
from startup_recs.models.ranker import RankerConfig, RankerMLP, save
from startup_recs.serving import ranking_features
from startup_recs.serving.data import ServingData

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("entity_id", "candidate_id", "label", "weight", "split")
EVAL_K = 10


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
    retrieve_k: int = 200  # the serving re-rank depth the extra negatives come from
    positives: str = "both"  # dataset | both: also every validation-window positive event (entity lists)
    retrievers: tuple[str, ...] = ranking_features.RETRIEVERS

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


# --- lists: the layout every piece below shares ------------------------------------------------
@dataclass
class ListData:
    """Rows grouped into lists: list ``i`` is rows ``offsets[i]:offsets[i+1]``.

    ``X`` float32 [N, f], ``y`` float32 [N] (label, >= 0), ``w`` float32 [N] (loss weight),
    ``offsets`` int64 [L+1], ``entity`` [L] (the list's entity id, for the holdout split),
    ``cand`` int64 [N] (candidate index of each row, for inspection).
    """

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    offsets: np.ndarray
    entity: np.ndarray
    names: list[str] = field(default_factory=list)
    cand: np.ndarray | None = None

    @property
    def n_lists(self) -> int:
        return len(self.offsets) - 1

    def subset(self, lists: np.ndarray) -> ListData:
        """The lists ``lists`` (indices), re-packed contiguously."""
        lists = np.asarray(lists, dtype=np.int64)
        sizes = np.diff(self.offsets)[lists]
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in lists]) \
            if len(lists) else np.zeros(0, np.int64)
        return ListData(self.X[rows], self.y[rows], self.w[rows],
                        np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), self.entity[lists], self.names,
                        None if self.cand is None else self.cand[rows])


def pad_lists(offsets: np.ndarray, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-index matrix ``int64 [B, Lmax]`` and validity mask ``bool [B, Lmax]`` of ``lists``.

    Padded cells point at row 0 and are masked; the losses never let a padded cell or another
    list's row enter a list's softmax or pairs.
    """
    starts = offsets[lists]
    sizes = offsets[np.asarray(lists) + 1] - starts
    width = int(sizes.max()) if len(sizes) else 0
    ar = np.arange(width)
    mask = ar[None, :] < sizes[:, None]
    idx = np.where(mask, starts[:, None] + ar[None, :], 0)
    return idx.astype(np.int64), mask


# --- losses (within each list only) -------------------------------------------------------------
def listwise_loss(scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each list (ListNet with one-hot-like targets), IPS-weighted.

    ``scores``, ``labels``, ``weights`` float [B, L], ``mask`` bool [B, L]. Per list
    ``-sum_i w_i y_i log softmax(s)_i`` over that list's valid cells only; summed over lists and
    divided by the number of positive cells, so a positive of weight 3 counts three times one of
    weight 1 wherever it sits, and a batch's size does not change the loss scale.
    """
    s = scores.masked_fill(~mask, float("-inf"))
    logp = s - torch.logsumexp(s, dim=1, keepdim=True)
    gain = labels * weights * mask
    logp = logp.masked_fill(~mask, 0.0)
    n_pos = (labels * mask > 0).sum().clamp_min(1)
    return -(gain * logp).sum() / n_pos


def pairwise_loss(scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """RankNet logistic loss over pairs ``(i, j)`` of the *same list* with ``y_i > y_j``.

    Each pair costs ``w_i * softplus(s_j - s_i)`` (the better item's IPS weight); the mean is over
    pairs. Pairs are formed inside each ``[L, L]`` block of a list, so items of different
    entities never meet.
    """
    diff = scores[:, :, None] - scores[:, None, :]  # s_i - s_j
    valid = mask[:, :, None] & mask[:, None, :]
    pair = (labels[:, :, None] > labels[:, None, :]) & valid
    wp = weights[:, :, None] * pair
    return (F.softplus(-diff) * wp).sum() / pair.sum().clamp_min(1)


LOSSES = {"listwise": listwise_loss, "pairwise": pairwise_loss}


# --- metric -------------------------------------------------------------------------------------
def ndcg_lists(scores: np.ndarray, labels: np.ndarray, offsets: np.ndarray, k: int = EVAL_K) -> float:
    """Mean NDCG@k over lists with at least one positive (binary gain ``label > 0``).

    Ties in ``scores`` are broken by row order (stable sort), so an all-equal score is "logged
    order", not an optimistic pick.
    """
    vals: list[float] = []
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    for a, b in zip(offsets[:-1], offsets[1:], strict=True):
        rel = labels[a:b] > 0
        n_rel = int(rel.sum())
        if n_rel == 0:
            continue
        order = np.argsort(-scores[a:b], kind="stable")[:k]
        dcg = float((rel[order] * disc[: len(order)]).sum())
        idcg = float(disc[: min(n_rel, k)].sum())
        vals.append(dcg / idcg)
    return float(np.mean(vals)) if vals else float("nan")


# --- fitting ------------------------------------------------------------------------------------
@dataclass
class FitResult:
    model: RankerMLP  # final weights
    best_state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    metrics: dict[str, Any]


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


def feature_baselines(d: ListData, k: int = EVAL_K) -> dict[str, float]:
    """NDCG@k of ordering each list by one raw feature (retrieval scores, popularity)."""
    out: dict[str, float] = {}
    for j, name in enumerate(d.names):
        if (name in ranking_features.RETRIEVERS or name == "pop_log") and np.ptp(d.X[:, j]) > 0:
            out[name] = ndcg_lists(d.X[:, j], d.y, d.offsets, k)
    return out


def fit(data: ListData, cfg: RankerTrainConfig, *, progress: bool = False) -> FitResult:
    """Train a :class:`RankerMLP` on ``data``'s lists (holdout by entity); CPU, seeded.

    Raises :class:`DataError` when no list has both a positive and a negative, and
    :class:`ModelFitError` on a non-finite loss.
    """
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
    mean = tr.X.mean(0) if len(tr.X) else np.zeros(tr.X.shape[1])
    std = tr.X.std(0) if len(tr.X) else np.ones(tr.X.shape[1])
    std = np.where(std < 1e-6, 1.0, std)
    model = RankerMLP(tr.X.shape[1], cfg.hidden, cfg.dropout, mean.tolist(), std.tolist())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = LOSSES[cfg.loss]
    Xt, yt, wt = (torch.from_numpy(a) for a in (tr.X, tr.y, tr.w))
    has_ho = ho.n_lists > 0 and (ho.y > 0).any()

    def evaluate(d: ListData) -> float:
        model.eval()
        with torch.no_grad():
            s = model(torch.from_numpy(d.X)).numpy()
        model.train()
        return ndcg_lists(s, d.y, d.offsets)

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
        metrics["holdout_baselines_ndcg@10"] = feature_baselines(ho)
    return FitResult(model, best_state, history, metrics)


# --- stage-1 inputs -----------------------------------------------------------------------------
TIME_KEYS = ("fit_until", "until", "data_until", "train_until", "cutoff")
WINDOW_KEYS = ("fit_on", "fit_window")
STAGE1_WINDOWS = ("train",)


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _leaks(obj: Any, val_start: pd.Timestamp, path: str = "") -> str | None:
    """First recorded fit window in a (nested) config that reaches past ``val_start``, described."""
    if isinstance(obj, dict):
        for key, val in obj.items():
            here = f"{path}.{key}" if path else str(key)
            if key in TIME_KEYS and isinstance(val, str) and val:
                try:
                    ts = _utc(val)
                except (ValueError, TypeError):
                    continue
                if ts > val_start:
                    return f"{here} = {ts.isoformat()}"
            elif key in WINDOW_KEYS and isinstance(val, str) and val not in STAGE1_WINDOWS:
                return f"{here} = {val!r}"
            elif isinstance(val, dict | list):
                found = _leaks(val, val_start, here)
                if found:
                    return found
    elif isinstance(obj, list):
        for i, val in enumerate(obj):
            found = _leaks(val, val_start, f"{path}[{i}]")
            if found:
                return found
    return None


def check_fit_window(data: ServingData, val_start: Any, retrievers_dir: str | None = None) -> None:
    """Refuse retrieval inputs that saw the validation window the ranker learns from.

    ``data.until`` (the serving data's fit-window end) must be ``<= val_start`` (``None``, "all
    events", is refused). In ``retrievers_dir``, every JSON config (and ``serving/``) that records
    a fit window must record one inside the train window: a time under any of :data:`TIME_KEYS`
    ``<= val_start``, a window name under :data:`WINDOW_KEYS` equal to ``train`` (the two-tower
    writes ``fit_on``, the ALS dataset ``fit_window``/``cutoff``). Raises :class:`DataError`.
    """
    val_start = _utc(val_start)
    if data.until is None or data.until > val_start:
        raise DataError(
            f"ranker features would leak: the stage-1 serving data runs until {data.until}, past the "
            f"validation start {val_start.isoformat()}; use retrievers fit on the train window"
        )
    if retrievers_dir is None or not storage.exists(retrievers_dir):
        return
    for rel in storage.walk_files(retrievers_dir):
        if not rel.endswith(".json") or ("/" in rel and not rel.startswith(f"{artifacts.SERVING_DIR}/")):
            continue
        if rel.rsplit("/", 1)[-1].startswith(artifacts.RANKER):
            continue  # our own output from an earlier run
        try:
            obj = storage.read_json(storage.join(retrievers_dir, rel))
        except Exception:  # noqa: BLE001 - a JSON that does not parse records no window
            continue
        found = _leaks(obj, val_start)
        if found:
            raise DataError(
                f"ranker features would leak: {rel} records {found}, beyond the validation start "
                f"{val_start.isoformat()}; the ranker needs stage-1 retrievers fit on the train window"
            )
        _check_cf_ids(rel, obj, data)


def _check_cf_ids(rel: str, obj: Any, data: ServingData) -> None:
    """A collaborative model's id mappings (ALS ``*_user_mapping.json`` / ``*_item_mapping.json``)
    hold only ids with events in its fit window, so an id without any event before ``data.until``
    means the model saw later events (its config may not record its window). Feature-based models
    (the two-tower encodes every profile) are not checked this way."""
    name = rel.rsplit("/", 1)[-1]
    if not (name.startswith(artifacts.ALS) and isinstance(obj, dict)):
        return
    if name.endswith(artifacts.USER_MAPPING_SUFFIX):
        later = [e for e in obj if str(e) not in data.entity_counts]
        side = "entities"
    elif name.endswith(artifacts.ITEM_MAPPING_SUFFIX):
        active = set(data.candidate_ids[data.popularity > 0].tolist())
        later = [c for c in obj if str(c) not in active]
        side = "candidates"
    else:
        return
    if later:
        raise DataError(
            f"ranker features would leak: {rel} knows {len(later)} {side} without any event before "
            f"{data.until.isoformat() if data.until is not None else '?'} (e.g. {later[0]!r}); it was fit past "
            "the validation start"
        )


def _sidecar(data_uri: str) -> dict[str, Any]:
    """The dataset's ``X_meta.json`` merged over ``X_propensity.json`` (``{}`` when absent)."""
    stem = data_uri.rsplit(".", 1)[0]
    out: dict[str, Any] = {}
    for side in (f"{stem}_{artifacts.PROPENSITY_SIDECAR}", f"{stem}_{artifacts.META_SIDECAR}"):
        if storage.exists(side):
            obj = storage.read_json(side)
            if isinstance(obj, dict):
                out.update(obj)
    return out


def _split_at(rows: pd.DataFrame, data_uri: str) -> pd.Timestamp:
    """End of the validation window: the recorded split, else the first test row's time."""
    split = _sidecar(data_uri).get("split")
    if isinstance(split, dict) and split.get("split_at"):
        return _utc(split["split_at"])
    test = pd.to_datetime(rows.loc[rows["split"] == "test", "ts"], utc=True)
    return test.min() if len(test) else pd.Timestamp.max.tz_localize("UTC")


def val_positive_events(snapshot: str | None, use_case: str, val_start: pd.Timestamp,
                        split_at: pd.Timestamp) -> pd.DataFrame | None:
    """``entity_id, candidate_id`` of the use case's positive events in ``[val_start, split_at)``
    (:func:`startup_recs.data.snapshot.positive_events`, the ranker dataset's and the evaluation's
    definition), or ``None`` without a snapshot. These are *labels* of the window the ranker learns from, never features."""
    from startup_recs.data.snapshot import load_snapshot, positive_events

    if not snapshot or not storage.exists(snapshot):
        log.warning("ranker: snapshot %r not reachable; learning from the dataset's positives only "
                    "(pass --snapshot)", snapshot)
        return None
    snap = load_snapshot(snapshot)
    ev = snap.events(use_case)
    ts = pd.to_datetime(ev["ts"], utc=True)
    kinds = positive_events(use_case, ev["event"].astype(str).unique(), snap.source == "events")
    mask = (ts >= val_start) & (ts < split_at) & ev["event"].astype(str).isin(kinds)
    out = ev.loc[mask, ["entity_id", "candidate_id"]].astype(str).drop_duplicates()
    log.info("ranker: %d validation-window positive pairs from %s", len(out), snapshot)
    return out


def _val_start(rows: pd.DataFrame, data_uri: str) -> pd.Timestamp:
    """The validation start: the dataset's recorded split, else the earliest val row's time."""
    split = _sidecar(data_uri).get("split")
    if isinstance(split, dict) and split.get("val_start"):
        return _utc(split["val_start"])
    return pd.to_datetime(rows.loc[rows["split"] == "val", "ts"], utc=True).min()


def _pool(retrievers: Mapping[str, Any], data: ServingData, entity_ids: Sequence[str], k: int,
          chunk: int = 256) -> dict[str, np.ndarray]:
    """What serving would re-rank: per entity up to ``k`` candidates, the round-robin merge of the
    top-``k`` lists of every loaded retriever that knows it (seen candidates excluded)."""
    names = [n for n in ("two_tower", "als", "item2item", "content") if n in retrievers]
    out: dict[str, np.ndarray] = {}
    for lo in range(0, len(entity_ids), chunk):
        ids = list(entity_ids[lo:lo + chunk])
        tops = {}
        for n in names:
            idx, sc = retrievers[n].top(ids, k)
            tops[n] = np.where(np.isfinite(sc), idx, -1)
        for j, e in enumerate(ids):
            own = [tops[n][j] for n in names if retrievers[n].knows(e)]
            merged: dict[int, None] = {}
            for r in range(k):
                for arr in own:
                    if r < len(arr) and arr[r] >= 0:
                        merged.setdefault(int(arr[r]), None)
                if len(merged) >= k:
                    break
            out[e] = np.fromiter(merged, dtype=np.int64, count=len(merged))[:k]
    return out


def routed_pool(retrievers: Mapping[str, Any], data: ServingData, entity_ids: Sequence[str], k: int,
                routing: Any = None) -> dict[str, np.ndarray]:
    """Exactly what serving re-ranks: each entity's routed top-``k`` (cold/warm/hot chain of
    :class:`~startup_recs.serving.router.Routing`, seen candidates excluded), best first."""
    from startup_recs.serving.recommender import Recommender

    rec = Recommender(data, dict(retrievers), routing, None)
    out: dict[str, np.ndarray] = {}
    for lo in range(0, len(entity_ids), 256):
        ids = list(entity_ids[lo:lo + 256])
        idx, _, _ = rec.top_routed(ids, k)
        for j, e in enumerate(ids):
            out[e] = idx[j][idx[j] >= 0]
    return out


def make_lists(rows: pd.DataFrame, data: ServingData, retrievers: Mapping[str, Any],
               cfg: RankerTrainConfig, extra_positives: pd.DataFrame | None = None,
               routing: Any = None) -> ListData:
    """Ranker rows (one window) -> :class:`ListData` with stage-1 features.

    ``lists="pool"`` (default, what serving sees): one list per entity = its routed top-
    ``retrieve_k`` under the stage-1 retrievers (:func:`routed_pool`), labelled by the entity's
    positives (dataset rows and ``extra_positives``; IPS weight where the dataset has one, else
    1). Positives the router did not retrieve are dropped: serving could not rank them, and
    keeping them next to retrieved negatives teaches "a low retrieval score means a positive".
    Features are built over the whole pool (label-independent lists); ``extra_negatives > 0``
    then keeps that many negatives per list for the loss.

    ``lists="session"`` keeps each logged session a list; ``"entity"`` merges an entity's rows
    (label = max over its sessions, weight = the positive's largest IPS weight), adds
    ``extra_positives`` (``entity_id, candidate_id``: positive events of the same window that no
    logged session explains, e.g. organic applications; weight 1), drops candidates the entity
    already interacted with in the fit window (serving never shows them), and with
    ``extra_negatives`` adds retrieved-but-not-acted candidates. Candidates outside the serving
    data's candidate space are dropped (counted in the log).
    """
    rows = rows.copy()
    if extra_positives is not None and len(extra_positives) and cfg.lists != "session":
        add = extra_positives[["entity_id", "candidate_id"]].astype(str).drop_duplicates()
        rows = pd.concat([rows, add.assign(label=1, weight=1.0)], ignore_index=True)
    rows["entity_id"] = rows["entity_id"].astype(str)
    rows["candidate_id"] = rows["candidate_id"].astype(str)
    rows["cidx"] = data.candidate_positions(rows["candidate_id"].tolist())
    unknown = int((rows["cidx"] < 0).sum())
    if unknown:
        log.info("ranker: %d rows name candidates outside the stage-1 candidate space; dropped", unknown)
    rows = rows[rows["cidx"] >= 0]
    rows["label"] = rows["label"].astype(np.float32)
    rows["weight"] = rows["weight"].astype(np.float32)
    if cfg.lists == "session" and "session_id" in rows and rows["session_id"].notna().all():
        rows = rows.sort_values(["session_id", "position"] if "position" in rows else ["session_id"], kind="stable")
        key = rows["session_id"].astype(str).to_numpy()
        frame = rows[["entity_id", "cidx", "label", "weight"]]
    else:
        frame = (rows.assign(wpos=np.where(rows["label"] > 0, rows["weight"], 0.0))
                 .groupby(["entity_id", "cidx"], sort=True)
                 .agg(label=("label", "max"), wpos=("wpos", "max")).reset_index())
        frame["weight"] = np.where(frame["label"] > 0, frame["wpos"], 1.0).astype(np.float32)
        frame = frame[["entity_id", "cidx", "label", "weight"]]
        ents = frame["entity_id"].unique()
        seen = pd.DataFrame({
            "entity_id": np.repeat(ents, [len(data.seen_of(e)) for e in ents]),
            "cidx": np.concatenate([data.seen_of(e) for e in ents] + [np.zeros(0, np.int64)]).astype(np.int64),
            "_seen": True})
        frame = frame.merge(seen, on=["entity_id", "cidx"], how="left")
        frame = frame[frame["_seen"].isna()].drop(columns="_seen").reset_index(drop=True)
        if cfg.lists == "pool":
            frame = _pool_frame(frame, data, retrievers, cfg, routing)
        elif cfg.extra_negatives > 0 and retrievers:
            frame = _add_retrieved_negatives(frame, data, retrievers, cfg)
        key = frame["entity_id"].to_numpy()
    # contiguous lists in first-appearance order; rows inside a list in a seeded random order, so
    # nothing (metric ties, a model) can profit from logged rows coming before added negatives
    codes, uniq = pd.factorize(pd.Series(key), sort=False)
    shuffle = np.random.default_rng(cfg.seed + 2).permutation(len(codes))
    order = shuffle[np.argsort(codes[shuffle], kind="stable")]
    frame = frame.iloc[order].reset_index(drop=True)
    sizes = np.bincount(codes, minlength=len(uniq))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    list_entity = frame["entity_id"].to_numpy()[offsets[:-1]].astype(str)
    cand = frame["cidx"].to_numpy(np.int64)
    scores = ranking_features.gather_scores_batch(retrievers, list(list_entity), offsets, cand, cfg.retrievers)
    X, names = ranking_features.build_batch(cfg.use_case, list(list_entity), offsets, cand, scores, data,
                                            cfg.retrievers)
    out = ListData(X, frame["label"].to_numpy(np.float32), frame["weight"].to_numpy(np.float32),
                   offsets, list_entity, names, cand)
    if cfg.lists == "pool" and cfg.extra_negatives > 0:
        out = _sample_negatives(out, cfg.extra_negatives, cfg.seed + 3)
    return out


def _pool_frame(frame: pd.DataFrame, data: ServingData, retrievers: Mapping[str, Any],
                cfg: RankerTrainConfig, routing: Any) -> pd.DataFrame:
    """Replace each entity's rows by its routed pool, labelled from ``frame``'s positives."""
    ents = frame["entity_id"].unique().tolist()
    pool = routed_pool(retrievers, data, ents, cfg.retrieve_k, routing)
    sizes = [len(pool[e]) for e in ents]
    pdf = pd.DataFrame({"entity_id": np.repeat(np.asarray(ents, dtype=object), sizes),
                        "cidx": np.concatenate([pool[e] for e in ents] + [np.zeros(0, np.int64)]).astype(np.int64)})
    pos = frame[frame["label"] > 0]
    out = pdf.merge(pos, on=["entity_id", "cidx"], how="left")
    out["label"] = out["label"].fillna(0.0).astype(np.float32)
    out["weight"] = out["weight"].fillna(1.0).astype(np.float32)
    kept = int((out["label"] > 0).sum())
    log.info("ranker: routed pools of %d entities (%d rows); %d of %d positives retrieved (%.0f%%), "
             "the others are out of the ranker's reach", len(ents), len(out), kept, len(pos),
             100.0 * kept / max(len(pos), 1))
    return out


def _sample_negatives(d: ListData, n: int, seed: int) -> ListData:
    """Keep every positive and up to ``n`` random negatives per list (rows only; features were
    computed on the full lists, so they do not depend on which rows are kept)."""
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(d.y), dtype=bool)
    new_sizes = []
    for i in range(d.n_lists):
        a, b = int(d.offsets[i]), int(d.offsets[i + 1])
        y = d.y[a:b]
        pos = np.flatnonzero(y > 0)
        neg = np.flatnonzero(y <= 0)
        if len(neg) > n:
            neg = np.sort(rng.choice(neg, size=n, replace=False))
        sel = np.sort(np.concatenate([pos, neg])) + a
        keep[sel] = True
        new_sizes.append(len(sel))
    offsets = np.concatenate([[0], np.cumsum(new_sizes)]).astype(np.int64)
    return ListData(d.X[keep], d.y[keep], d.w[keep], offsets, d.entity, d.names,
                    None if d.cand is None else d.cand[keep])


def _add_retrieved_negatives(frame: pd.DataFrame, data: ServingData, retrievers: Mapping[str, Any],
                             cfg: RankerTrainConfig) -> pd.DataFrame:
    """Per entity, ``extra_negatives`` random picks from its stage-1 top-``retrieve_k`` that are not
    already in its rows (acted on or logged) nor seen in the fit window; label 0, weight 1."""
    rng = np.random.default_rng(cfg.seed + 1)
    ents = frame["entity_id"].unique().tolist()
    pool = _pool(retrievers, data, ents, cfg.retrieve_k)
    have = frame.groupby("entity_id")["cidx"].agg(lambda s: set(s.tolist()))
    add_e: list[str] = []
    add_c: list[int] = []
    for e in ents:
        cands = [c for c in pool.get(e, np.zeros(0, np.int64)).tolist() if c not in have[e]]
        if not cands:
            continue
        pick = rng.choice(len(cands), size=min(cfg.extra_negatives, len(cands)), replace=False)
        add_e += [e] * len(pick)
        add_c += [cands[i] for i in pick]
    extra = pd.DataFrame({"entity_id": add_e, "cidx": np.asarray(add_c, np.int64),
                          "label": np.zeros(len(add_c), np.float32), "weight": np.ones(len(add_c), np.float32)})
    log.info("ranker: +%d retrieved-but-not-acted negatives for %d entities", len(extra), len(ents))
    return pd.concat([frame, extra], ignore_index=True)


# --- the step -----------------------------------------------------------------------------------
def load_stage1(retrievers_dir: str, use_case: str, *, serving_data: str | None = None,
                snapshot: str | None = None, until: pd.Timestamp | None = None) -> ServingData:
    """Stage-1 serving data: ``serving_data`` folder, else ``<retrievers_dir>/serving``, else
    built from ``snapshot`` up to ``until`` (the validation start)."""
    for uri in (serving_data, storage.join(retrievers_dir, artifacts.SERVING_DIR)):
        if uri and storage.exists(storage.join(uri, artifacts.SERVING_META)):
            data = ServingData.load(uri)
            if data.use_case != use_case:
                from startup_recs.core.errors import ModelMismatchError

                raise ModelMismatchError(f"serving data {uri} is for {data.use_case!r}, not {use_case!r}")
            return data
    if snapshot:
        log.info("ranker: stage-1 serving data from %s, events before %s", snapshot, until)
        return ServingData.from_snapshot(snapshot, use_case, until)
    raise ConfigError(
        f"no stage-1 serving data: none at {retrievers_dir}/serving, and no snapshot recorded in the "
        "dataset's meta; pass --serving-data DIR or --snapshot DIR"
    )


def _validation_routing(retrievers_dir: str, use_case: str, snapshot: str | None, val_start: pd.Timestamp,
                        split_at: pd.Timestamp) -> Any:
    """The routing serving will use: each segment's retriever chosen on validation with these
    stage-1 models (``evaluate.choose_routing``, deterministic, so the evaluation picks the same),
    so the ranker trains on the very pools it will re-rank. Falls back to ``routing.json`` in
    ``retrievers_dir`` (or the defaults) without a readable snapshot."""
    from startup_recs.serving.router import Routing

    saved = Routing.load(retrievers_dir)
    if saved.chosen_on == "validation" or not snapshot or not storage.exists(snapshot):
        return saved
    from startup_recs.data.snapshot import load_snapshot
    from startup_recs.data.split import TimeSplit
    from startup_recs.evaluation.protocol import DEFAULT_K, choose_routing

    snap = load_snapshot(snapshot)
    try:
        routing, _ = choose_routing(snap.events(use_case), snap, use_case, TimeSplit(val_start, split_at),
                                    retrievers_dir, list(DEFAULT_K))
    except DataError as exc:
        log.warning("ranker: routing not chosen on validation (%s); default chains", exc)
        return saved
    return routing


def training_lists(cfg: RankerTrainConfig, data_uri: str, retrievers_dir: str, *,
                   serving_data: str | None = None, snapshot: str | None = None) -> tuple[ListData, dict[str, Any]]:
    """Everything before the fit (shared by :func:`train` and the tuner): read the dataset's
    validation rows, load and leak-check the stage-1 serving data and retrievers, and build the
    lists. Returns ``(lists, provenance)``."""
    from startup_recs.serving.retrievers import load_retrievers

    rows = storage.read_table(data_uri).to_pandas()
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing:
        raise DataError(f"{data_uri}: not a ranker dataset (missing column(s) {missing})")
    val = rows[rows["split"] == "val"]
    if val.empty:
        raise DataError(f"{data_uri}: empty validation set (the ranker learns from split == 'val' rows)")
    val_start = _val_start(rows, data_uri)
    snapshot = snapshot or _sidecar(data_uri).get("snapshot")
    data = load_stage1(retrievers_dir, cfg.use_case, serving_data=serving_data, snapshot=snapshot, until=val_start)
    check_fit_window(data, val_start, retrievers_dir)
    retrievers = load_retrievers(retrievers_dir, data)
    used = [n for n in cfg.retrievers if n in retrievers]
    log.info("ranker: %d val rows, %d entities; stage-1 retrievers %s (fit until %s)", len(val),
             val["entity_id"].nunique(), used or "none", data.until)
    extra = None
    if cfg.positives == "both":
        extra = val_positive_events(snapshot, cfg.use_case, val_start, _split_at(rows, data_uri))
    routing = _validation_routing(retrievers_dir, cfg.use_case, snapshot, val_start, _split_at(rows, data_uri))
    lists = make_lists(val, data, retrievers, cfg, extra, routing)
    info = {"data": data_uri, "retrievers_dir": retrievers_dir, "retrievers_used": used,
            "val_start": pd.Timestamp(val_start).isoformat(),
            "features_fit_until": data.until.isoformat() if data.until is not None else None}
    return lists, info


def train(cfg: RankerTrainConfig, data_uri: str, retrievers_dir: str, output_dir: str, *,
          serving_data: str | None = None, snapshot: str | None = None) -> dict[str, Any]:
    """The whole step: read the dataset, build stage-1 features, fit, write the three artifacts.

    Returns the config JSON written (with ``train`` metrics and history).
    """
    lists, info = training_lists(cfg, data_uri, retrievers_dir, serving_data=serving_data, snapshot=snapshot)
    result = fit(lists, cfg)
    rcfg = RankerConfig(
        use_case=cfg.use_case, features=lists.names, hidden=list(cfg.hidden),
        mean=result.model.mean.tolist(), std=result.model.std.tolist(), dropout=cfg.dropout,
        weights="best",
        train={**{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
               **info, "metrics": result.metrics, "history": result.history},
    )
    uris = save(result.model, rcfg, output_dir, best_state=result.best_state)
    log.info("ranker written: %s (holdout ndcg@10 %s, baselines %s)", uris["config"],
             result.metrics.get("holdout_ndcg@10"), result.metrics.get("holdout_baselines_ndcg@10"))
    return rcfg.to_json()


def _use_case_of(data_uri: str, given: str | None) -> str:
    """``--use-case``, checked against the dataset's recorded one (or taken from it)."""
    recorded = _sidecar(data_uri).get("use_case")
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
        patience=getattr(args, "patience", 5),
    )
    retrievers_dir = getattr(args, "retrievers", None) or args.output_dir
    out = train(cfg, args.data, retrievers_dir, args.output_dir,
                serving_data=getattr(args, "serving_data", None), snapshot=getattr(args, "snapshot", None))
    m = out["train"]["metrics"]
    print(f"ranker: holdout ndcg@10 {m.get('holdout_ndcg@10')} (best epoch {m['best_epoch']}); "
          f"single-feature baselines {m.get('holdout_baselines_ndcg@10')}")
    return 0
