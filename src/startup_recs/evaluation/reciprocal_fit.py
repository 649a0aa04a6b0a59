"""Fitting the reciprocal scorer on validation, and its ranking for the ``reciprocal`` model row.

What: :func:`fit` takes the stage-1 models of a reverse use case and of its forward twin (both
fitted before ``val_start``), builds each validation entity's reverse pool (routed, re-ranked top
:data:`~startup_recs.serving.reciprocal.POOL`), and fits on the pool pairs of the validation
window ``[val_start, split_at)``:

- the reverse calibration: Platt scaling of the pool z-score on "the startup acted positively"
  (the use case's positive events);
- the forward calibration: Platt scaling of ``logit`` forward percentile on "the candidate acted
  on the startup" (the twin's ``acts``: apply, contact, reply);
- the learned fusion: a logistic regression of "both acted" (mutual) on ``logit p, logit q``;

then picks the fusion (``harmonic``, ``product``, ``learned``) with the best validation
``mutual_ndcg@10`` (ties: the first in that order), and per entity segment (cold / warm / hot)
the best of those and the one-sided order (``reverse_only``; ties keep the one-sided order), so
a segment where the forward side does not help is answered as before. :func:`ranking` is the
same fused ordering for any entities with the final models: evaluation scores it on test as
``reciprocal``.

Shapes: ``b`` entities x ``P`` pool slots; every pool pair of a batch gets its forward percentile in
one :func:`~startup_recs.serving.reciprocal.forward_percentiles` call (users grouped by route).

Why here and not in serving: fitting is evaluation's job (validation window, labels); serving only
reads the fitted numbers (``reciprocal.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from startup_recs.core.usecases import get_use_case, twin_of
from startup_recs.evaluation.metrics import summarize
from startup_recs.evaluation.mutual import mutual_pairs, target_of_pairs
from startup_recs.serving.reciprocal import (
    METHODS,
    POOL,
    REVERSE_ONLY,
    Calibration,
    ReciprocalScorer,
    forward_percentiles,
    fuse,
    logit,
)

log = logging.getLogger(__name__)


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 30) -> np.ndarray:
    """Logistic regression by Newton steps (IRLS): ``w`` ``[d + 1]`` (intercept first) maximising
    the L2-penalised log-likelihood of ``y`` (0/1 ``[n]``) given ``X`` ``[n, d]``."""
    X = np.column_stack([np.ones(len(X)), np.asarray(X, dtype=np.float64)])
    y = np.asarray(y, dtype=np.float64)
    w = np.zeros(X.shape[1])
    if len(y) == 0 or y.min() == y.max():  # one class only: the intercept alone, nothing to learn
        rate = np.clip(y.mean() if len(y) else 0.5, 1e-4, 1 - 1e-4)
        w[0] = np.log(rate / (1 - rate))
        return w
    reg = l2 * np.eye(X.shape[1])
    reg[0, 0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) + reg @ w
        hess = (X * (p * (1 - p))[:, None]).T @ X + reg + 1e-9 * np.eye(X.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def pools(rec: Any, ids: Sequence[str], pool: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Each entity's reverse pool as a served answer of ``limit`` sees it: the best ``pool`` of
    the routed list, re-ranked when the bundle has a ranker (the ranker's hybrid pool is built for
    a request of ``limit``, as :meth:`Recommender.recommend` builds it, then read ``pool`` deep),
    ``idx int64 [b, pool]``, ``scores [b, pool]``; ``-1`` / ``-inf`` pad."""
    idx, sc, _ = rec.top_routed(list(ids), pool, rerank=rec.reranker is not None, limit=limit)
    return idx, sc


def features(rec: Any, forward: Any, ids: Sequence[str], idx: np.ndarray,
             sc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, x_r, x_f)`` of every filled pool slot: entity row, pool z-score, logit forward
    percentile (NaN: the forward bundle does not know the startup)."""
    rows, cols = np.nonzero(idx >= 0)
    vals = sc[rows, cols].astype(np.float64)
    n = np.bincount(rows, minlength=len(ids)).astype(np.float64)
    mean = np.bincount(rows, vals, len(ids)) / np.maximum(n, 1.0)
    sd = np.sqrt(np.maximum(np.bincount(rows, vals * vals, len(ids)) / np.maximum(n, 1.0) - mean * mean, 0.0))
    ok = (n[rows] > 1) & (sd[rows] > 1e-12)
    x_r = np.where(ok, (vals - mean[rows]) / np.where(ok, sd[rows], 1.0), 0.0)  # pool_z, every pool at once
    users = rec.data.candidate_ids[idx[rows, cols]].tolist()
    startups = [ids[i] for i in rows.tolist()]
    pct = forward_percentiles(forward, users, startups)
    x_f = np.where(np.isnan(pct), np.nan, logit(pct))
    return rows, x_r, x_f


def _labels(pairs: pd.DataFrame | None, ids: Sequence[str], users: np.ndarray, rows: np.ndarray) -> np.ndarray:
    if pairs is None or not len(pairs):
        return np.zeros(len(rows), bool)
    keys = set(zip(pairs["entity_id"].astype(str), pairs["candidate_id"].astype(str), strict=True))
    return np.array([(ids[r], u) in keys for r, u in zip(rows.tolist(), users.tolist(), strict=True)], bool)


def _acted(events: pd.DataFrame, names: Sequence[str], start: pd.Timestamp, end: pd.Timestamp,
           swap: bool = False) -> pd.DataFrame:
    ts = pd.to_datetime(events["ts"], utc=True)
    w = events.loc[(ts >= start) & (ts < end) & events["event"].astype(str).isin(list(names))]
    a, b = ("candidate_id", "entity_id") if swap else ("entity_id", "candidate_id")
    return pd.DataFrame({"entity_id": w[a].astype(str).to_numpy(), "candidate_id": w[b].astype(str).to_numpy()})


def _ranked(idx: np.ndarray, rows: np.ndarray, score: np.ndarray, b: int, n: int) -> np.ndarray:
    """Each entity's pool slots reordered by ``score`` (desc), cut to ``n`` (``-1`` pads)."""
    cols = np.nonzero(idx >= 0)[1]
    out = np.full((b, n), -1, np.int64)
    order = np.lexsort((-score, rows))
    r_sorted, c_sorted = rows[order], cols[order]
    starts = np.searchsorted(r_sorted, np.arange(b))
    ends = np.searchsorted(r_sorted, np.arange(b), side="right")
    for i in range(b):
        take = c_sorted[starts[i]:min(ends[i], starts[i] + n)]
        out[i, :len(take)] = idx[i, take]
    return out


def stage1(snapshot: Any, use_case: str, split: Any, val_models: str, routing: Any) -> Any:
    """The reverse stage-1 :class:`~startup_recs.serving.recommender.Recommender` (models fitted
    before ``val_start``, serving data until then, the validation-chosen ``routing``)."""
    from startup_recs.serving.data import ServingData
    from startup_recs.serving.recommender import Recommender, load_reranker
    from startup_recs.serving.retrievers import load_retrievers

    data = ServingData.from_snapshot(snapshot, use_case, split.val_start)
    return Recommender(data, load_retrievers(val_models, data), routing, load_reranker(val_models, use_case))


def fit(snapshot: Any, use_case: str, split: Any, rev_val: Any, fwd_val: Any, ks: Sequence[int] = (10,),
        pool: int = POOL) -> ReciprocalScorer:
    """The fitted :class:`ReciprocalScorer` of ``use_case`` (see the module docstring).

    ``rev_val`` / ``fwd_val``: the stage-1 :class:`~startup_recs.serving.recommender.Recommender`
    of the reverse use case (serving data until ``val_start``) and of its forward twin."""
    uc = get_use_case(use_case)
    twin = get_use_case(twin_of(uc.name))
    start, end = split.val_start, split.split_at
    rev_ev = snapshot.events(uc.name)
    positive = _acted(rev_ev, uc.positive_events, start, end)
    theirs = _acted(snapshot.events(twin.name), twin.acts, start, end, swap=True)
    mutual = mutual_pairs(snapshot, uc.name, start, end)
    ids = sorted(set(positive["entity_id"]) | set(mutual["entity_id"] if mutual is not None else []))
    ids = [e for e in ids if rev_val.data.knows_entity(e) or e in rev_val.data.entity_counts]
    scorer = ReciprocalScorer(forward_use_case=twin.name)
    if not ids or mutual is None or not len(mutual):
        log.warning("reciprocal %s: no validation pairs to fit on; the defaults stay (harmonic)", uc.name)
        return scorer
    idx, sc = pools(rev_val, ids, pool, max(ks))
    rows, x_r, x_f = features(rev_val, fwd_val, ids, idx, sc)
    users = rev_val.data.candidate_ids[idx[rows, np.nonzero(idx >= 0)[1]]]
    y_rev, y_fwd, y_mut = (_labels(p, ids, users, rows) for p in (positive, theirs, mutual))
    a_r = fit_logistic(x_r[:, None], y_rev)
    known = np.isfinite(x_f)
    a_f = fit_logistic(x_f[known, None], y_fwd[known])
    prior = float(y_fwd[~known].mean()) if (~known).any() else float(y_fwd.mean())
    reverse, forward = Calibration(float(a_r[1]), float(a_r[0]), float(y_rev.mean())), \
        Calibration(float(a_f[1]), float(a_f[0]), prior)
    p, q = reverse(x_r), forward(x_f)
    w = fit_logistic(np.column_stack([logit(p), logit(q)]), y_mut)
    weights = (float(w[0]), float(w[1]), float(w[2]))
    target = target_of_pairs(mutual, rev_val.data)
    row_of = {e: i for i, e in enumerate(ids)}
    t_rows = np.array([row_of[e] for e in target.entity_ids if e in row_of], np.int64)
    keep = [e in row_of for e in target.entity_ids]
    rel = [r for r, k in zip(target.relevant, keep, strict=True) if k]
    n_rel, segs = target.n_relevant[np.array(keep)], target.segments[np.array(keep)]
    k0 = min(ks)
    scores_by: dict[str, float] = {}
    by_seg: dict[str, dict[str, float]] = {}
    candidates = {m: fuse(m, p, q, weights) for m in METHODS} | {REVERSE_ONLY: p, "forward_only": q}
    for name, score in candidates.items():
        top = _ranked(idx, rows, score, len(ids), max(ks))[t_rows]
        summary = summarize(top, rel, rev_val.data.n_candidates, ks, segs, n_rel)
        scores_by[name] = summary["all"][f"ndcg@{k0}"]
        for seg, vals in summary.items():
            if seg != "all" and f"ndcg@{k0}" in vals:
                by_seg.setdefault(seg, {})[name] = float(vals[f"ndcg@{k0}"])
    best = max(METHODS, key=lambda m: (scores_by[m], -METHODS.index(m)))
    choice = (REVERSE_ONLY, *METHODS)  # ties keep the one-sided order
    by_segment = {seg: max(choice, key=lambda m, v=v: (v.get(m, -1.0), -choice.index(m)))
                  for seg, v in sorted(by_seg.items())}
    scorer = ReciprocalScorer(best, reverse, forward, weights, twin.name, True, {
        "window": [start.isoformat(), end.isoformat()], "entities": len(ids), "mutual_entities": len(rel),
        "pairs": int(len(rows)), "positives": {"reverse": int(y_rev.sum()), "forward": int(y_fwd.sum()),
                                               "mutual": int(y_mut.sum())},
        f"mutual_ndcg@{k0}": {k: float(v) for k, v in scores_by.items()}, "chosen": best,
        f"mutual_ndcg@{k0}_by_segment": by_seg, "chosen_by_segment": by_segment}, by_segment)
    log.info("reciprocal %s: %s chosen on validation (mutual_ndcg@%d %s); by segment %s", uc.name, best, k0,
             ", ".join(f"{k} {v:.4f}" for k, v in scores_by.items()), by_segment)
    return scorer


def ranking(rec: Any, forward: Any, scorer: ReciprocalScorer, ids: Sequence[str], n: int, pool: int = POOL,
            batch: int = 512) -> np.ndarray:
    """The reciprocal top-``n`` (``int64 [b, n]``, ``-1`` pads) of ``ids``: each pool ordered by
    the fused score of ``scorer`` (batches of ``batch`` entities)."""
    out = np.full((len(ids), n), -1, np.int64)
    for lo in range(0, len(ids), batch):
        part = list(ids[lo:lo + batch])
        idx, sc = pools(rec, part, pool, n)
        rows, x_r, x_f = features(rec, forward, part, idx, sc)
        p, q = scorer.reverse(x_r), scorer.forward(x_f)
        method = np.array([scorer.method_for(rec.router.segment(e)) for e in part], dtype=object)[rows]
        score = np.empty(len(rows))
        for m in set(method.tolist()):  # each entity's segment's fusion
            at = method == m
            score[at] = fuse(m, p[at], q[at], scorer.weights)
        out[lo:lo + len(part)] = _ranked(idx, rows, score, len(part), n)
    return out
