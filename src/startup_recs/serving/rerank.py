"""Serving side of the re-ranker: re-order one entity's candidate pool.

``Reranker.load(models_dir, use_case)`` reads ``ranker{sfx}_v1_config.json`` and the weights it
names: the MLP's state_dict (``torch.load(weights_only=True)``, kept as a numpy copy of the same
network for per-request scoring) or the LightGBM booster's text model
(:mod:`startup_recs.models.ranker_lgbm`). Both score the same feature matrix, built by
:func:`startup_recs.serving.ranking_features.build`, the code the trainer used, over the pool of
:mod:`startup_recs.serving.pool` (its spec is in the config: the pool the ranker was trained on).
A serving data whose feature columns differ from the config's (another use case, a bundle
without feature tables for a ranker trained with them, a config of an older feature set)
raises :class:`ModelMismatchError` at load, not a wrong answer later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from startup_recs.core.errors import DataError, ModelMismatchError
from startup_recs.models.ranker import RankerConfig, load_scorer
from startup_recs.serving import ranking_features
from startup_recs.serving.data import ServingData
from startup_recs.serving.pool import Pool, PoolSpec


class Reranker:
    """A loaded ranker: ``score(entity_id, cand_idx, retrieval_scores, data, listed) -> float32 [m]``.

    ``scorer``: prepared features ``float32 [m, f]`` -> scores ``[m]`` (either learner).
    """

    def __init__(self, scorer: Callable[[np.ndarray], np.ndarray], config: RankerConfig, model: object = None) -> None:
        self.config = config
        self.use_case = config.use_case
        self.learner = config.learner
        self.features = list(config.features)
        # Retrievers whose columns the config holds, in column order (what the caller must score).
        self.retrievers = ranking_features.retrievers_of(self.features)
        self.pool_spec = PoolSpec.from_dict(config.pool)
        self._score_X = scorer
        self.model = model
        self._checked: set[int] = set()

    @classmethod
    def load(cls, models_dir: str, use_case: str, *, which: str | None = None) -> Reranker:
        """Load from a models folder or bundle; :class:`ModelMismatchError` for another use case."""
        scorer, cfg = load_scorer(models_dir, use_case, which=which)
        return cls(scorer, cfg)

    def check(self, data: ServingData) -> None:
        """Raise :class:`ModelMismatchError` unless ``data`` gives exactly the config's features."""
        if data.use_case != self.use_case:
            raise ModelMismatchError(f"ranker is for use case {self.use_case!r}, the data is {data.use_case!r}")
        names = ranking_features.feature_names(data, self.retrievers)
        if names != self.features:
            extra = sorted(set(names) - set(self.features))
            lack = sorted(set(self.features) - set(names))
            raise ModelMismatchError(
                f"ranker feature mismatch: data gives {len(names)} features, the model expects "
                f"{len(self.features)} (missing {lack[:5]}, unexpected {extra[:5]})"
            )
        self._checked.add(id(data))

    def score(self, entity_id: str, cand_idx: np.ndarray, retrieval_scores: Mapping[str, np.ndarray],
              data: ServingData, listed: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Scores ``float32 [m]`` of ``cand_idx`` (higher = better) for ``entity_id``.

        ``retrieval_scores``: ``{name: float32 [m]}`` for each retriever in :attr:`retrievers`
        that knows the entity; leave a name out (or pass NaN) where it does not. ``listed``:
        ``{name: int [m]}`` position of each candidate in that retriever's own top-N (-1 = not
        listed). :meth:`score_pool` passes both from a :class:`Pool`.
        """
        if id(data) not in self._checked:
            self.check(data)
        cand_idx = np.asarray(cand_idx, dtype=np.int64)
        if cand_idx.ndim != 1:
            raise DataError("ranker: cand_idx must be one-dimensional")
        if len(cand_idx) == 0:
            return np.zeros(0, np.float32)
        X, _ = ranking_features.build(self.use_case, entity_id, cand_idx, retrieval_scores, data,
                                      self.retrievers, listed)
        return self.score_features(X)

    def score_pool(self, pool: Pool, data: ServingData) -> np.ndarray:
        """Scores ``float32 [len(pool)]`` of one :class:`Pool` (its scores and list positions)."""
        return self.score(pool.entity_id, pool.cand, pool.scores, data, pool.listed)

    def score_features(self, X: np.ndarray) -> np.ndarray:
        """Scores of prepared features ``[m, f]`` (tests, benchmarks, batch tools)."""
        return np.asarray(self._score_X(np.asarray(X, np.float32)), dtype=np.float32)
