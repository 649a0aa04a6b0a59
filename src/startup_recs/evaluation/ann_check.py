"""Exact vs approximate retrieval side by side on the test window: what the ANN index costs.

For each learned retriever (two-tower, ALS) :func:`compare` builds the faiss index the way the
publish step does (:func:`startup_recs.serving.ann.build`, tuned on a sample of the retriever's
own entity vectors) but always an approximate one, even where the catalogue is small enough for
publish to keep it exact, so the report shows what the index would cost; ``served`` says which
kind publish builds at this catalogue size. It then ranks the test entities both ways (seen
candidates and self excluded in both) and reports ``ann_recall@200`` (overlap of the two top-200
lists) and the NDCG@K of each with their difference. ``metrics.json["ann"]`` holds the result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from startup_recs.serving import ann
from startup_recs.serving.data import ServingData
from startup_recs.serving.index import top_k
from startup_recs.serving.retrievers import EmbeddingRetriever, Retriever

log = logging.getLogger(__name__)

LEARNED = ("two_tower", "als")
MIN_CANDIDATES = 1_000  # below this an IVF index has too few vectors per list to say anything


def _ranked(fn: Any, ids: Sequence[str], n: int, batch: int = 256) -> np.ndarray:
    out = np.full((len(ids), n), -1, np.int64)
    for lo in range(0, len(ids), batch):
        chunk = list(ids[lo:lo + batch])
        idx, sc = fn(chunk)
        idx = np.where(np.isfinite(sc), idx, -1)[:, :n]
        out[lo:lo + len(chunk), :idx.shape[1]] = idx
    return out


def compare(data: ServingData, retrievers: dict[str, Retriever], entity_ids: Sequence[str],
            summarize: Any, ks: Sequence[int], *, k: int = ann.RECALL_K, n_queries: int = 500,
            seed: int = 0) -> dict[str, Any]:
    """``{retriever: {"kind", "served", search breadth, "ann_recall@200", "ndcg@K": {"exact", "ann",
    "change"}}}`` for the learned retrievers in ``retrievers``.

    ``summarize(top int [n, K]) -> {"all": {"ndcg@K": x, ...}, ...}`` scores a ranking of
    ``entity_ids`` (the evaluation's own :func:`summarize_target`), so both rankings are judged by
    exactly the metrics of the report.
    """
    out: dict[str, Any] = {}
    kmax = max(max(ks), k)
    rng = np.random.default_rng(seed)
    for name in LEARNED:
        r = retrievers.get(name)
        if not isinstance(r, EmbeddingRetriever):
            continue
        n = r.index.size
        if n < MIN_CANDIDATES:
            out[name] = {"skipped": f"{n} candidates (< {MIN_CANDIDATES})"}
            continue
        ids = list(r.entity_index)
        pick = rng.choice(len(ids), min(n_queries, len(ids)), replace=False)
        queries = r.entity_vectors[pick]
        excl = data.exclusion_lists([ids[i] for i in pick])
        index, info = ann.build(r.index.vectors, queries, excl, kind="ivf_flat", exact_below=0, k=k,
                                seed=seed, retriever=name)
        exact_top = _ranked(lambda c, r=r: top_k(r.score(c), kmax, data.exclusion_lists(c)), entity_ids, kmax)
        ann_top = _ranked(lambda c, r=r, index=index: index.search(r.vectors(c), kmax, data.exclusion_lists(c)),
                          entity_ids, kmax)
        known = np.array([r.knows(e) for e in entity_ids], bool)
        recall = ann.recall_at(ann_top[known, :k], exact_top[known, :k]) if known.any() else None
        m_exact, m_ann = summarize(exact_top)["all"], summarize(ann_top)["all"]
        row: dict[str, Any] = {"kind": info.kind, "served": ann.choose_kind(n), **info.search,
                               f"tuning_recall@{k}": info.recall, f"ann_recall@{k}": recall}
        for kk in ks:
            key = f"ndcg@{kk}"
            if key in m_exact and key in m_ann:
                row[key] = {"exact": m_exact[key], "ann": m_ann[key], "change": m_ann[key] - m_exact[key]}
        out[name] = row
        log.info("ANN vs exact for %s: recall@%d %s, %s", name, k, recall,
                 {kk: row.get(f"ndcg@{kk}") for kk in ks[:1]})
    return out
