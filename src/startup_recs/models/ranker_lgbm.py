"""The LightGBM LambdaRank re-ranker: a gradient-boosted tree ensemble over the ranking features.

Same bundle contract as the MLP (:mod:`startup_recs.models.ranker`): ``ranker{sfx}_v1_config.json``
names the learner (``"learner": "lightgbm"``), the feature list and the weights file, here
``ranker{sfx}_v1_booster.txt``: LightGBM's own text model format (``Booster.model_to_string`` /
``Booster(model_str=...)``), never a pickle, readable and diffable. The booster stores only the
best iteration (early stopping on the entity holdout), so loading needs no iteration count.

Scoring: ``BoosterScorer(X float32 [m, f]) -> float32 [m]`` with one thread (per request the
whole pool is one small matrix; threads cost more than they save at a few hundred rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from startup_recs.core.errors import ModelMismatchError

LEARNER = "lightgbm"


def booster_to_text(booster: Any, num_iteration: int | None = None) -> str:
    """LightGBM text model of ``booster`` up to ``num_iteration`` (default: its best, else all)."""
    best = getattr(booster, "best_iteration", 0) or None
    return booster.model_to_string(num_iteration=num_iteration or best)


def booster_from_text(text: str) -> Any:
    """A :class:`lightgbm.Booster` from its text model; :class:`ModelMismatchError` if unreadable."""
    import lightgbm as lgb

    try:
        return lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise ModelMismatchError(f"not a LightGBM text model: {str(exc).splitlines()[0]}") from None


@dataclass
class BoosterScorer:
    """A loaded booster as a scoring function over prepared features ``[m, f] -> [m]``."""

    booster: Any
    n_features: int

    @classmethod
    def from_text(cls, text: str, n_features: int) -> BoosterScorer:
        booster = booster_from_text(text)
        if booster.num_feature() != n_features:
            raise ModelMismatchError(
                f"LightGBM ranker has {booster.num_feature()} features, its config lists {n_features}")
        return cls(booster, n_features)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ModelMismatchError(f"LightGBM ranker expects [m, {self.n_features}] features, got {x.shape}")
        if len(x) == 0:
            return np.zeros(0, np.float32)
        return np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float32)
