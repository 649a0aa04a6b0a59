"""No train/serve skew in the ranker's retrieval features.

The ranker learns on stage-1 retrievers (fit on the train window) and serves on their final
refit (train + validation). Two fits of one model put their scores on different scales (more
epochs sharpen a two-tower's cosines; another ALS regularisation shrinks its factors), so a raw
score column would mean one thing in training and another in serving. The features only see a
retriever through per-pool ranks, z-scores and list positions: invariant to any increasing
affine change of its scores, and distributed alike for two fits of different quality.
"""

from __future__ import annotations

import numpy as np
import pytest

from startup_recs.serving import ranking_features
from startup_recs.serving.pool import build_pools
from startup_recs.serving.retrievers import EmbeddingRetriever
from tests.unit.ranker_world import make_world

SPEC = {"two_tower": 15, "als": 15}


def _features(data, retrievers, ents):
    pools = build_pools(retrievers, data, ents, SPEC, score_names=list(SPEC))
    e, off, cand, scores, listed = ranking_features.pools_to_batch(pools, ranking_features.RETRIEVERS)
    X, names = ranking_features.build_batch(data.use_case, e, off, cand, scores, data, ranking_features.RETRIEVERS,
                                            listed)
    return X, names


def _refit(r: EmbeddingRetriever, scale: float, noise: float, seed: int) -> EmbeddingRetriever:
    """Another fit of the same retriever: vectors rescaled and perturbed."""
    rng = np.random.default_rng(seed)
    ids = sorted(r.entity_index, key=r.entity_index.get)
    ent = scale * r.entity_vectors + noise * rng.normal(size=r.entity_vectors.shape).astype(np.float32)
    cand = r.index.vectors if hasattr(r.index, "vectors") else None
    assert cand is not None
    return EmbeddingRetriever(r.name, r.data, ids, ent.astype(np.float32), np.asarray(cand, np.float32))


@pytest.fixture(scope="module")
def world():
    return make_world(seed=2, n_e=60, n_c=80)


def test_features_ignore_the_scale_of_a_refit(world):
    data, rets, _ = world
    ents = sorted(data.entity_counts)
    X0, names = _features(data, rets, ents)
    scaled = {**rets, "two_tower": _refit(rets["two_tower"], 7.5, 0.0, 0), "als": _refit(rets["als"], 0.02, 0.0, 0)}
    X1, _ = _features(data, scaled, ents)
    cols = [j for j, n in enumerate(names) if n.startswith(("two_tower", "als"))]
    np.testing.assert_allclose(X1[:, cols], X0[:, cols], rtol=1e-4, atol=1e-4)
    assert not any(n in ("two_tower", "als") for n in names)  # no raw score column at all


def test_stage1_and_final_feature_distributions_match(world):
    """A noisier, differently scaled "stage-1" fit vs the "final" one: each retrieval column's
    mean and quartiles agree (rank fractions and z-scores are standardised per pool), although
    the raw scores differ by orders of magnitude."""
    data, rets, _ = world
    ents = sorted(data.entity_counts)
    final, names = _features(data, rets, ents)
    stage1_rets = {**rets, "two_tower": _refit(rets["two_tower"], 0.1, 0.05, 1), "als": _refit(rets["als"], 30.0, 5.0, 2)}
    stage1, _ = _features(data, stage1_rets, ents)
    raw_final = rets["two_tower"].score(ents).ravel()
    raw_stage1 = stage1_rets["two_tower"].score(ents).ravel()
    assert raw_final.std() > 5 * raw_stage1.std()  # the raw scales are far apart
    for j, n in enumerate(names):
        if not n.startswith(("two_tower", "als")) or n.endswith("_missing"):
            continue
        a, b = stage1[:, j], final[:, j]
        assert abs(a.mean() - b.mean()) < 0.1 * max(1.0, abs(b).mean()), n
        qa, qb = np.quantile(a, [0.25, 0.5, 0.75]), np.quantile(b, [0.25, 0.5, 0.75])
        np.testing.assert_allclose(qa, qb, atol=0.5, err_msg=n)  # listed: at most one slot (log 3 - log 2)
