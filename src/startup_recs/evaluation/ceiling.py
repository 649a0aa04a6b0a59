"""The ranker's ceiling on synthetic data: ``oracle@pool`` and ``ranking_efficiency``.

The oracle file (docs/contracts.md "Oracle") holds each entity's top-K candidates by the planted,
noise-free affinity. Re-ranking the *very pool the ranker re-ranked* by that affinity gives the
best NDCG any ranker could reach on that pool (``oracle@pool``); the routed-ranked NDCG divided
by it is the ranker's ``ranking_efficiency``. Two gaps then read apart:

- ``oracle`` - ``oracle@pool``: what retrieval loses (positives not in the pool, or a pool too
  small to hold the affinity top 10);
- ``oracle@pool`` - ``routed_ranked``: what the ranker loses on candidates it was given.

Candidates of a pool outside the entity's oracle top-K have an affinity below its K-th, unknown
by how much: they sort after every listed one, in pool order. With K = 200 >= 10 that only matters
for pools holding fewer than 10 of the entity's top 200 (then ``oracle@pool`` is a slight
under-estimate of the true ceiling, never an over-estimate of what the ranker could do).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from startup_recs.serving.data import ServingData

SEGMENTS = ("all", "cold", "warm", "hot")


def oracle_affinity(oracle: pd.DataFrame, data: ServingData) -> dict[str, dict[int, float]]:
    """``{entity_id: {candidate index: affinity}}`` of the oracle's top-K rows (unknown ids dropped).

    Without an ``affinity`` column the oracle's ``rank`` stands in (``-rank``: same order).
    """
    o = oracle
    cidx = data.candidate_positions(o["candidate_id"].astype(str).tolist())
    value = o["affinity"].to_numpy(np.float64) if "affinity" in o.columns else -o["rank"].to_numpy(np.float64)
    df = pd.DataFrame({"e": o["entity_id"].astype(str).to_numpy(), "c": cidx, "a": value})
    df = df[df["c"] >= 0]
    return {str(e): dict(zip(g["c"].tolist(), g["a"].tolist(), strict=True)) for e, g in df.groupby("e", sort=False)}


def rerank_by_affinity(pools: Sequence[np.ndarray], entity_ids: Sequence[str],
                       affinity: Mapping[str, Mapping[int, float]], n: int) -> np.ndarray:
    """Each pool sorted by planted affinity (unlisted candidates last, in pool order): the top
    ``n`` as ``int64 [len(pools), n]`` (``-1`` pads short pools)."""
    out = np.full((len(pools), n), -1, np.int64)
    for i, (e, pool) in enumerate(zip(entity_ids, pools, strict=True)):
        pool = np.asarray(pool, np.int64)
        aff = affinity.get(str(e), {})
        a = np.fromiter((aff.get(int(c), -np.inf) for c in pool), np.float64, len(pool))
        top = pool[np.argsort(-a, kind="stable")][:n]
        out[i, : len(top)] = top
    return out


def ranking_efficiency(models: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str = "ndcg@10",
                       ranked: str = "routed_ranked", ceiling: str = "oracle@pool") -> dict[str, float | None]:
    """``{segment: ranked / ceiling}`` of ``metric`` (``None`` where the ceiling is 0 or absent)."""
    out: dict[str, float | None] = {}
    for seg in SEGMENTS:
        r = (models.get(ranked) or {}).get(seg, {}).get(metric)
        c = (models.get(ceiling) or {}).get(seg, {}).get(metric)
        out[seg] = float(r) / float(c) if isinstance(r, int | float) and isinstance(c, int | float) and c > 0 else None
    return out
