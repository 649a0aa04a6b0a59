"""Top-N search over candidate vectors, behind a small pluggable interface.

:class:`CandidateIndex` is what retrievers and the recommender call; :class:`ExactIndex` is the
default (one float32 matrix product + ``argpartition``; exact, and fast enough to ~1M candidates
at serving batch sizes). An approximate index (faiss, HNSW) implements :meth:`CandidateIndex._search`
over its own structure and inherits the exclusion handling; register it in :data:`INDEXES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np


def top_k(scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of each row of ``scores`` ``[n, n_c]``, best first.

    ``exclude[i]`` holds column indices never returned for row ``i`` (set to ``-inf`` on a copy).
    Returns ``(idx int64 [n, k'], scores float32 [n, k'])`` with ``k' = min(k, n_c)``; rows
    with fewer than ``k'`` eligible columns end with ``-inf`` scores (callers drop them).
    Cost: O(n * n_c) for the partition plus O(n * k log k) for the final sort.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim == 1:
        scores = scores[None, :]
    n, n_c = scores.shape
    k = min(int(k), n_c)
    if k <= 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
    if exclude is not None and any(len(e) for e in exclude):
        scores = scores.copy()
        for i, ex in enumerate(exclude):
            if len(ex):
                scores[i, ex] = -np.inf
    if k < n_c:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n_c), (n, n_c)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return idx, np.take_along_axis(part_scores, order, axis=1)


class CandidateIndex(ABC):
    """Maximum-inner-product search over a fixed candidate matrix ``[n_c, d]``."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    @property
    def size(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Exact scores of every candidate: ``queries [n, d] @ vectors.T -> float32 [n, n_c]``."""
        return np.asarray(queries, dtype=np.float32) @ self.vectors.T

    def scores_at(self, queries: np.ndarray, cand_idx: np.ndarray) -> np.ndarray:
        """Exact scores of chosen candidates: ``[n, d]`` x ``[m]`` indices -> ``float32 [n, m]``."""
        return np.asarray(queries, dtype=np.float32) @ self.vectors[np.asarray(cand_idx)].T

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` candidates per query, best first, never returning ``exclude[i]`` for query i.

        Returns ``(idx int64 [n, k'], scores float32 [n, k'])`` as :func:`top_k`.
        """
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        idx, sc = self._search(queries, min(k + extra, self.size))
        if exclude is None or extra == 0:
            return idx[:, :k], sc[:, :k]
        out_i = np.full((len(queries), min(k, self.size)), -1, np.int64)
        out_s = np.full(out_i.shape, -np.inf, np.float32)
        for r in range(len(queries)):
            keep = ~np.isin(idx[r], exclude[r])
            ii, ss = idx[r][keep][: out_i.shape[1]], sc[r][keep][: out_i.shape[1]]
            out_i[r, : len(ii)], out_s[r, : len(ss)] = ii, ss
        return out_i, out_s

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (approximate or exact) without exclusions, best first."""


class ExactIndex(CandidateIndex):
    """Brute force: one BLAS matrix product and ``argpartition`` (exact)."""

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k(self.scores(queries), k)

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None,
        allow: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`CandidateIndex.search`; ``allow`` (bool ``[n_c]``, the ANN index's filter
        argument too) keeps only those candidates (others score ``-inf``: dropped by callers)."""
        # Exact search masks the exclusions in the score matrix directly: no over-fetch needed.
        scores = self.scores(np.atleast_2d(queries))
        if allow is not None:
            scores = np.where(np.asarray(allow, dtype=bool), scores, np.float32(-np.inf))
        return top_k(scores, k, exclude)


# name -> factory(vectors) ; an ANN index registers itself here.
INDEXES: dict[str, Callable[[np.ndarray], CandidateIndex]] = {"exact": ExactIndex}


def build_index(vectors: np.ndarray, kind: str = "exact") -> CandidateIndex:
    try:
        return INDEXES[kind](vectors)
    except KeyError:
        from startup_recs.core.errors import ConfigError

        raise ConfigError(f"unknown index {kind!r}; expected one of: {', '.join(INDEXES)}") from None
