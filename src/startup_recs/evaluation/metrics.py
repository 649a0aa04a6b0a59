"""The ranking metrics of the platform: one Recall / NDCG / MAP / HitRate / coverage definition.

What (pure functions, tested on hand-computed cases):

- :func:`hits_matrix`: ``bool [n, K]``, whether each ranked slot holds a relevant candidate;
- :func:`metrics_from_hits`: per-entity ``recall@k = hits / |rel|``; ``ndcg@k`` with binary gain,
  discount ``1 / log2(rank + 1)`` and the ideal DCG over ``min(|rel|, k)`` positions;
  ``map@k`` = ``sum_{i <= k, hit} precision@i / min(|rel|, k)``; ``hitrate@k`` = at least one hit.
  Each is ``float64 [n]`` in ``[0, 1]``;
- :func:`catalog_coverage`: distinct candidates in the top ``k`` of all lists / catalogue size;
- :func:`summarize`: means over all entities and per segment (cold / warm / hot);
- :func:`ndcg_lists`: mean NDCG@k over ranked lists laid out as one flat score array plus
  offsets (the ranker's candidate lists), through :func:`metrics_from_hits`.

Why one module: the offline evaluation, the two-tower trainer's early stopping, the ranker's
checkpoint choice and the tuner all score with these functions, so a number means the same thing
wherever it is printed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from startup_recs.core.errors import DataError

SEGMENTS = ("all", "cold", "warm", "hot")


def hits_matrix(top: np.ndarray, relevant: Sequence[np.ndarray], n_candidates: int) -> np.ndarray:
    """``bool [n, K]``: whether ``top[i, j]`` (a candidate index, ``-1`` = empty slot) is in
    ``relevant[i]`` (candidate indices). Vectorised by binary search over ``entity * n_c + c`` keys."""
    top = np.asarray(top, dtype=np.int64)
    n = top.shape[0]
    lens = np.array([len(r) for r in relevant], dtype=np.int64)
    if n == 0 or lens.sum() == 0:
        return np.zeros(top.shape, dtype=bool)
    rows = np.repeat(np.arange(n, dtype=np.int64), lens)
    keys = np.sort(rows * (n_candidates + 1) + np.concatenate([np.asarray(r, np.int64) for r in relevant]))
    probe = np.arange(n, dtype=np.int64)[:, None] * (n_candidates + 1) + top
    at = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
    return (keys[at] == probe) & (top >= 0)


def metrics_from_hits(hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-entity ``recall@k, ndcg@k, map@k, hitrate@k`` (``float64 [n]`` each) from a hits matrix
    ``bool [n, >= max(ks)]`` (rank order) and the number of relevant items per entity (> 0)."""
    hits = np.asarray(hits, dtype=np.float64)
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    if np.any(n_rel <= 0):
        raise DataError("every evaluated entity needs at least one relevant item")
    kmax = max(ks)
    if hits.shape[1] < kmax:
        hits = np.pad(hits, ((0, 0), (0, kmax - hits.shape[1])))
    disc = 1.0 / np.log2(np.arange(2, kmax + 2))
    ideal = np.cumsum(disc)
    prec = np.cumsum(hits, axis=1) / np.arange(1, kmax + 1)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = hits[:, :k]
        n_hit = h.sum(axis=1)
        denom = np.minimum(n_rel, k)
        out[f"recall@{k}"] = n_hit / n_rel
        out[f"ndcg@{k}"] = (h * disc[:k]).sum(axis=1) / ideal[denom.astype(np.int64) - 1]
        out[f"map@{k}"] = (prec[:, :k] * h).sum(axis=1) / denom
        out[f"hitrate@{k}"] = (n_hit > 0).astype(np.float64)
    return out


def catalog_coverage(top: np.ndarray, k: int, n_candidates: int) -> float:
    """Distinct candidates in the top ``k`` of all lists / catalogue size."""
    t = np.asarray(top)[:, :k]
    return float(len(np.unique(t[t >= 0])) / n_candidates) if n_candidates else 0.0


def summarize(top: np.ndarray, relevant: Sequence[np.ndarray], n_candidates: int, ks: Sequence[int],
              segments: np.ndarray, n_relevant: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """``{segment: {metric: mean, "coverage@k": x, "users": n}}`` for ``all`` and each segment.

    ``n_relevant`` defaults to ``len(relevant[i])``; pass larger counts when some relevant items
    are outside the candidate space (they count as misses).
    """
    if n_relevant is None:
        n_relevant = np.array([len(r) for r in relevant], dtype=np.int64)
    hits = hits_matrix(np.asarray(top)[:, : max(ks)], relevant, n_candidates)
    per = metrics_from_hits(hits, n_relevant, ks)
    segments = np.asarray(segments, dtype=object)
    out: dict[str, dict[str, float]] = {}
    for seg in SEGMENTS:
        mask = np.ones(len(segments), bool) if seg == "all" else segments == seg
        if not mask.any():
            out[seg] = {"users": 0}
            continue
        row = {name: float(v[mask].mean()) for name, v in per.items()}
        for k in ks:
            row[f"coverage@{k}"] = catalog_coverage(np.asarray(top)[mask], k, n_candidates)
        row["users"] = int(mask.sum())
        out[seg] = row
    return out


def ndcg_lists(scores: np.ndarray, labels: np.ndarray, offsets: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over ranked lists with at least one positive (binary gain ``label > 0``).

    List ``i`` is rows ``offsets[i]:offsets[i + 1]`` of ``scores`` / ``labels`` (``[N]`` each,
    ``offsets`` int ``[L + 1]``); each list is ordered by descending score, ties broken by row
    order (stable sort: an all-equal score is "logged order", not an optimistic pick). NaN when
    no list has a positive.
    """
    hits: list[np.ndarray] = []
    n_rel: list[int] = []
    for a, b in zip(offsets[:-1], offsets[1:], strict=True):
        rel = labels[a:b] > 0
        n = int(rel.sum())
        if n == 0:
            continue
        order = np.argsort(-scores[a:b], kind="stable")[:k]
        row = np.zeros(k, dtype=bool)
        row[: len(order)] = rel[order]
        hits.append(row)
        n_rel.append(n)
    if not hits:
        return float("nan")
    return float(np.mean(metrics_from_hits(np.stack(hits), np.asarray(n_rel), [k])[f"ndcg@{k}"]))
