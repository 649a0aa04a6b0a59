"""The ranker's candidate lists: which candidates one list holds, their labels and features.

What: :class:`ListData` (rows grouped into lists: ``X`` float32 [N, f] features, ``y`` float32 [N]
graded labels, ``w`` float32 [N] loss weights, ``offsets`` int64 [L + 1], ``entity`` [L]) and
:func:`make_lists`, which turns ranker dataset rows of one window into lists with stage-1
features (:func:`startup_recs.serving.ranking_features.build_batch`). By default
(``lists="pool"``, :func:`pool_lists`) an entity's list IS its hybrid stage-1 pool (the union of
the retrievers' top-N lists, :func:`startup_recs.serving.pool.build_pools`: the code serving and
evaluation use), labelled by the grades of the entity's window events; ``"entity"`` (logged rows +
sampled retrieved negatives) and ``"session"`` (each logged session) remain for comparison.

Why pools: online the ranker re-orders the pool, not the logged impressions. Positives outside
the pool are dropped: next to retrieved negatives they would teach "a low retrieval score means a
positive" (measured on the small synthetic data with ALS-only routing: entity lists with all
window positives -35% NDCG@10 against routed, pool lists +99%).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from startup_recs.core.errors import DataError
from startup_recs.serving import ranking_features
from startup_recs.serving.data import ServingData

if TYPE_CHECKING:
    from startup_recs.train.ranker import RankerTrainConfig

log = logging.getLogger(__name__)


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
    relevant_from: float = 1.0  # labels >= this are positives (graded pool lists: positive_grade)

    @property
    def n_lists(self) -> int:
        return len(self.offsets) - 1

    def concat(self, other: ListData) -> ListData:
        """These lists followed by ``other``'s (another window's lists of the same features). An
        entity may have a list in both; the holdout split is by entity, so they stay together."""
        if list(other.names) != list(self.names):
            raise DataError(f"ranker: the windows' lists have different features ({len(self.names)} vs "
                            f"{len(other.names)}: {sorted(set(self.names) ^ set(other.names))})")
        cand = None if self.cand is None or other.cand is None else np.concatenate([self.cand, other.cand])
        return ListData(np.vstack([self.X, other.X]), np.concatenate([self.y, other.y]),
                        np.concatenate([self.w, other.w]),
                        np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]]).astype(np.int64),
                        np.concatenate([self.entity, other.entity]), self.names, cand, self.relevant_from)

    def subset(self, lists: np.ndarray) -> ListData:
        """The lists ``lists`` (indices), re-packed contiguously."""
        lists = np.asarray(lists, dtype=np.int64)
        sizes = np.diff(self.offsets)[lists]
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in lists]) \
            if len(lists) else np.zeros(0, np.int64)
        return ListData(self.X[rows], self.y[rows], self.w[rows],
                        np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), self.entity[lists], self.names,
                        None if self.cand is None else self.cand[rows], self.relevant_from)


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


def make_lists(rows: pd.DataFrame, data: ServingData, retrievers: Mapping[str, Any],
               cfg: RankerTrainConfig, extra_positives: pd.DataFrame | None = None,
               routing: Any = None) -> ListData:
    """Ranker rows (one window) -> :class:`ListData` with stage-1 features.

    ``lists="pool"`` (default, what serving sees): :func:`pool_lists` (``extra_positives`` may
    carry a ``grade`` column: every graded event of the window).

    ``lists="session"`` keeps each logged session a list; ``"entity"`` merges an entity's rows
    (label = max over its sessions, weight = the positive's largest IPS weight), adds
    ``extra_positives`` (``entity_id, candidate_id``: positive events of the same window that no
    logged session explains, e.g. organic applications; weight 1), drops candidates the entity
    already interacted with in the fit window (serving never shows them), and with
    ``extra_negatives`` adds retrieved-but-not-acted candidates. Candidates outside the serving
    data's candidate space are dropped (counted in the log). These two kinds carry no pool list
    positions (every candidate counts as unlisted).
    """
    if cfg.lists == "pool":
        return pool_lists(rows, data, retrievers, cfg, extra_positives, routing)
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
        # pairs the entity already contacted are never shown again (ServingData.excluded): no list holds them
        seen = pd.DataFrame({
            "entity_id": np.repeat(ents, [len(data.excluded_of(e)) for e in ents]),
            "cidx": np.concatenate([data.excluded_of(e) for e in ents] + [np.zeros(0, np.int64)]).astype(np.int64),
            "_seen": True})
        frame = frame.merge(seen, on=["entity_id", "cidx"], how="left")
        frame = frame[frame["_seen"].isna()].drop(columns="_seen").reset_index(drop=True)
        if cfg.extra_negatives > 0 and retrievers:
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
    return out


def _labels(rows: pd.DataFrame, extra: pd.DataFrame | None, data: ServingData,
            cfg: RankerTrainConfig) -> pd.DataFrame:
    """``entity_id, cidx, grade, weight``: one row per labelled (entity, candidate) of the window.

    A dataset positive (a session-linked positive event) is ``positive_grade`` with its IPS
    weight; ``extra`` (``entity_id, candidate_id, grade``: every graded event of the window,
    organic ones included) adds its grade with weight 1; the highest grade wins and keeps the
    largest IPS weight among its sources. Excluded candidates (already contacted in the fit window,
    ``ServingData.excluded``: never in a pool) are dropped.
    """
    parts = [pd.DataFrame({"entity_id": rows["entity_id"].astype(str).to_numpy(),
                           "candidate_id": rows["candidate_id"].astype(str).to_numpy(),
                           "grade": np.where(rows["label"].to_numpy() > 0, cfg.positive_grade, 0),
                           "weight": np.where(rows["label"].to_numpy() > 0, rows["weight"].to_numpy(np.float32), 1.0)})]
    if extra is not None and len(extra):
        g = extra["grade"].to_numpy() if "grade" in extra else np.full(len(extra), cfg.positive_grade)
        parts.append(pd.DataFrame({"entity_id": extra["entity_id"].astype(str).to_numpy(),
                                   "candidate_id": extra["candidate_id"].astype(str).to_numpy(),
                                   "grade": g, "weight": np.ones(len(extra), np.float32)}))
    lab = pd.concat(parts, ignore_index=True)
    lab["cidx"] = data.candidate_positions(lab["candidate_id"].tolist())
    lab = lab[(lab["cidx"] >= 0) & (lab["grade"] > 0)]
    lab = lab.sort_values(["entity_id", "cidx", "grade", "weight"], ascending=[True, True, False, False], kind="stable")
    lab = lab.drop_duplicates(["entity_id", "cidx"], keep="first")
    done = {e: set(data.excluded_of(e).tolist()) for e in lab["entity_id"].unique()}
    keep = np.fromiter((c not in done[e] for e, c in zip(lab["entity_id"], lab["cidx"], strict=True)), bool, len(lab))
    return lab.loc[keep, ["entity_id", "cidx", "grade", "weight"]].reset_index(drop=True)


def pool_lists(rows: pd.DataFrame, data: ServingData, retrievers: Mapping[str, Any], cfg: RankerTrainConfig,
               extra: pd.DataFrame | None = None, routing: Any = None) -> ListData:
    """One list per entity of the window = its hybrid pool under the stage-1 retrievers
    (:func:`startup_recs.serving.pool.build_pools`, the serving code, ``cfg.pool`` spec, routed
    retriever leading), features over the whole pool, graded labels from :func:`_labels`.

    The entities are every entity of ``rows`` and ``extra`` (not only those with positives: which
    lists exist must not follow the labels); positives outside the pool are out of the ranker's
    reach and dropped (logged). Rows inside a list are shuffled (seeded) so no tie can profit
    from pool order; ``extra_negatives > 0`` then keeps that many negatives per list.
    """
    from startup_recs.serving.pool import PoolSpec, build_pools
    from startup_recs.serving.router import Router

    ents = sorted(set(rows["entity_id"].astype(str)) | (set(extra["entity_id"].astype(str))
                                                         if extra is not None and len(extra) else set()))
    router = Router(retrievers, data, routing)
    routes = [router.route(e)[1] for e in ents]
    pools = build_pools(retrievers, data, ents, PoolSpec.of(cfg.pool), routes=routes, score_names=cfg.retrievers)
    pools = [p for p in pools if len(p)]
    list_entity, offsets, cand, scores, listed = ranking_features.pools_to_batch(pools, cfg.retrievers)
    # seeded shuffle inside each list (features are per pool, so row order changes nothing else)
    rng = np.random.default_rng(cfg.seed + 2)
    group = np.repeat(np.arange(len(pools)), np.diff(offsets))
    order = np.lexsort((rng.random(len(cand)), group))
    cand = cand[order]
    scores = {k: v[order] for k, v in scores.items()}
    listed = {k: v[order] for k, v in listed.items()}
    X, names = ranking_features.build_batch(cfg.use_case, list_entity, offsets, cand, scores, data,
                                            cfg.retrievers, listed)
    lab = _labels(rows, extra, data, cfg).set_index(["entity_id", "cidx"])
    key = pd.MultiIndex.from_arrays([np.repeat(np.asarray(list_entity, dtype=object), np.diff(offsets)), cand])
    y = lab["grade"].reindex(key).fillna(0).to_numpy(np.float32)
    w = lab["weight"].reindex(key).fillna(1.0).to_numpy(np.float32)
    n_pos = int((lab["grade"] >= cfg.positive_grade).sum())
    kept = int((y >= cfg.positive_grade).sum())
    log.info("ranker: hybrid pools %s of %d entities (%d rows, %.0f per list); %d of %d positives in a pool "
             "(%.0f%%), the others are out of the ranker's reach", dict(cfg.pool), len(pools), len(cand),
             len(cand) / max(len(pools), 1), kept, n_pos, 100.0 * kept / max(n_pos, 1))
    out = ListData(X, y, w, offsets, np.asarray(list_entity, dtype=str), names, cand, float(cfg.positive_grade))
    if cfg.extra_negatives > 0:
        out = sample_negatives(out, cfg.extra_negatives, negatives_seed(cfg))
    return out


def negatives_seed(cfg: RankerTrainConfig) -> int:
    """The seed of the negatives :func:`pool_lists` keeps (another one is another draw)."""
    return cfg.seed + 3


def sample_negatives(d: ListData, n: int, seed: int) -> ListData:
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
                    None if d.cand is None else d.cand[keep], d.relevant_from)


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
