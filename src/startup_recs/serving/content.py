"""Content-based cold start: score candidates by how well their profile matches the entity's.

The match features come from :func:`startup_recs.features.match_features` (skills <-> skills
needed, sectors and stages <-> an investor's thesis, location): the same code that gives the
ranker its match features and the API its ``match_reasons``. The score is their weighted sum plus
a small popularity prior that breaks ties between equally matching candidates. Without feature
tables (an id-only imported log) or for an entity without a profile, the score is popularity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from startup_recs.serving.data import ServingData
from startup_recs.serving.retrievers import Retriever, register_retriever

# Weight of the popularity prior relative to one fully matching feature. Small: it orders
# candidates inside a tie of match scores, it does not override a better match.
POPULARITY_PRIOR = 0.05


class ContentRetriever(Retriever):
    """Feature-match scorer; ``knows`` every entity (popularity stands in for missing profiles)."""

    name = "content"

    def __init__(self, data: ServingData, weights: dict[str, float] | None = None,
                 popularity_prior: float = POPULARITY_PRIOR) -> None:
        super().__init__(data)
        self.weights = weights or {}
        pop = np.log1p(np.maximum(data.popularity, 0)).astype(np.float32)
        self._prior = (pop / pop.max()).astype(np.float32) if pop.size and pop.max() > 0 else pop
        self.popularity_prior = float(popularity_prior)

    def knows(self, entity_id: str) -> bool:
        return True

    def uses_features(self, entity_id: str) -> bool:
        """True when the entity's score comes from feature matches (not the popularity fallback)."""
        return self.data.candidate_features is not None and self.data.entity_row(entity_id) is not None

    def match_matrix(self, entity_id: str, cand_idx: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
        """Match features of the entity against candidates (all, or ``cand_idx``): ``[m, k]``."""
        from startup_recs.features import match_features

        cands = self.data.candidate_features
        if cand_idx is not None:
            cands = cands.iloc[np.asarray(cand_idx, dtype=np.int64)]
        feats, names = match_features(self.data.use_case, self.data.entity_row(entity_id), cands)
        return np.nan_to_num(np.asarray(feats, dtype=np.float32)), list(names)

    def _combine(self, feats: np.ndarray, names: list[str], prior: np.ndarray) -> np.ndarray:
        w = np.asarray([self.weights.get(n, 1.0) for n in names], dtype=np.float32)
        return feats @ w + self.popularity_prior * prior

    def score(self, entity_ids: Sequence[str]) -> np.ndarray:
        out = np.empty((len(entity_ids), self.data.n_candidates), dtype=np.float32)
        for r, e in enumerate(entity_ids):
            if self.uses_features(e):
                feats, names = self.match_matrix(e)
                out[r] = self._combine(feats, names, self._prior)
            else:
                out[r] = self._prior
        return out

    def score_at(self, entity_id: str, cand_idx: np.ndarray) -> np.ndarray:
        cand_idx = np.asarray(cand_idx, dtype=np.int64)
        if not self.uses_features(entity_id):
            return self._prior[cand_idx]
        feats, names = self.match_matrix(entity_id, cand_idx)
        return self._combine(feats, names, self._prior[cand_idx])


@register_retriever("content")
def load_content(models_dir: str, data: ServingData) -> Retriever:
    return ContentRetriever(data)
