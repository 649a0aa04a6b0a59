"""Serving side of the neural re-ranker: re-order one entity's retrieved candidates.

``Reranker.load(models_dir, use_case)`` reads ``ranker{sfx}_v1_config.json`` and the weights it
names (``torch.load(weights_only=True)``), and keeps a numpy copy of the same MLP
(:meth:`RankerMLP.export_numpy`) for per-request scoring. Features come from
:func:`startup_recs.serving.ranking_features.build`, the code the trainer used; a serving data whose
feature columns differ from the config's (another use case, a bundle without feature tables for a
ranker trained with them) raises :class:`ModelMismatchError` at load, not a wrong answer later.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from startup_recs.core.errors import DataError, ModelMismatchError
from startup_recs.models.ranker import RankerConfig, RankerMLP, from_dir
from startup_recs.serving import ranking_features
from startup_recs.serving.data import ServingData


class Reranker:
    """A loaded ranker: ``score(entity_id, cand_idx, retrieval_scores, data) -> float32 [m]``."""

    def __init__(self, model: RankerMLP, config: RankerConfig) -> None:
        self.model = model.eval()
        self.config = config
        self.use_case = config.use_case
        self.features = list(config.features)
        # Retrievers whose columns the config holds, in column order (what the caller must score).
        self.retrievers = [f[: -len("_missing")] for f in self.features if f.endswith("_missing")]
        self._mlp = model.export_numpy()
        self._checked: set[int] = set()

    @classmethod
    def load(cls, models_dir: str, use_case: str, *, which: str | None = None) -> Reranker:
        """Load from a models folder or bundle; :class:`ModelMismatchError` for another use case."""
        model, cfg = from_dir(models_dir, use_case, which=which)
        return cls(model, cfg)

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
              data: ServingData) -> np.ndarray:
        """Scores ``float32 [m]`` of ``cand_idx`` (higher = better) for ``entity_id``.

        ``retrieval_scores``: ``{name: float32 [m]}`` for each retriever in :attr:`retrievers`
        that knows the entity; leave a name out (or pass NaN) where it does not
        (:func:`ranking_features.gather_scores` does exactly that).
        """
        if id(data) not in self._checked:
            self.check(data)
        cand_idx = np.asarray(cand_idx, dtype=np.int64)
        if cand_idx.ndim != 1:
            raise DataError("ranker: cand_idx must be one-dimensional")
        if len(cand_idx) == 0:
            return np.zeros(0, np.float32)
        X, _ = ranking_features.build(self.use_case, entity_id, cand_idx, retrieval_scores, data, self.retrievers)
        return self._mlp(X)

    def score_torch(self, X: np.ndarray) -> np.ndarray:
        """The torch forward of the same weights on prepared features (tests, batch tools)."""
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(np.asarray(X, np.float32))).numpy()
