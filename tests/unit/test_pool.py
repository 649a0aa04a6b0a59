"""The hybrid pool is one code path: evaluation re-ranks exactly what serving re-ranks.

A LightGBM ranker is trained on the planted tiny world (``ranker_world``), saved and loaded as
a bundle would be; for every entity the pool ``Recommender.top_ranked`` (evaluation) builds, the
pool ``Recommender.recommend`` (one request) and ``recommend_batch`` build, and the pool the
trainer's lists hold, are the same candidates, and the answers the same order.
"""

from __future__ import annotations

import numpy as np
import pytest

from startup_recs.core.errors import ConfigError
from startup_recs.models.ranker import RankerConfig, save_booster
from startup_recs.serving.pool import PoolSpec, build_pools
from startup_recs.serving.recommender import Recommender
from startup_recs.serving.rerank import Reranker
from startup_recs.train import ranker as tr
from startup_recs.train import ranker_lists as rlists
from tests.unit.ranker_world import USE_CASE, make_world

SPEC = {"two_tower": 12, "als": 12, "popularity": 5}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data, retrievers, rows = make_world(seed=3, n_e=30, n_c=60)
    cfg = tr.RankerTrainConfig(use_case=USE_CASE, lists="pool", pool=SPEC, learner="lightgbm", extra_negatives=0,
                               lgb_min_data_in_leaf=5, lgb_rounds=30, threads=1)
    lists = rlists.make_lists(rows, data, retrievers, cfg)
    result = tr.fit(lists, cfg)
    out = tmp_path_factory.mktemp("ranker")
    save_booster(result.booster_text, RankerConfig(use_case=USE_CASE, features=lists.names, hidden=[], mean=[],
                                                   std=[], learner="lightgbm", pool=PoolSpec.of(SPEC).to_dict()),
                 str(out))
    rec = Recommender(data, retrievers, None, Reranker.load(str(out), USE_CASE))
    return rec, lists


def test_evaluation_and_serving_rank_the_same_pool(served):
    rec, lists = served
    ents = sorted(rec.data.entity_counts)[:20]
    top, scores, methods, pools = rec.top_ranked(ents, 10)
    batch = rec.recommend_batch(ents, 10)
    for i, e in enumerate(ents):
        one = rec.recommend(e, 10)
        route = one["method_used"].split(":", 1)[1]
        single = rec.pools([e], [route], 10)[0]
        assert single.cand.tolist() == pools[i].cand.tolist()
        ids = [c["id"] for c in one["candidates"]]
        assert ids == [rec.data.candidate_ids[c] for c in top[i][top[i] >= 0]]
        assert ids == [c["id"] for c in batch[i]["candidates"]]
        np.testing.assert_allclose([c["score"] for c in one["candidates"]], scores[i][: len(ids)], rtol=1e-6)
        assert one["reranked"] and methods[i] == one["method_used"]


def test_the_reciprocal_pool_is_the_served_ranked_list(served):
    """The reciprocal scorer re-orders the ranked list a request of ``limit`` gets; its fit and
    its evaluation read that same list, further down, not a pool built for a longer answer."""
    from startup_recs.evaluation.reciprocal_fit import pools as reciprocal_pools

    rec, _ = served
    ents = sorted(rec.data.entity_counts)[:20]
    idx, _ = reciprocal_pools(rec, ents, 200, 10)
    top, _, _, pools = rec.top_ranked(ents, 10)
    for i, e in enumerate(ents):
        ranked, _ = rec.rank_pool(pools[i])
        assert idx[i][idx[i] >= 0].tolist() == ranked.tolist()
        assert idx[i][:10].tolist() == top[i].tolist()
        assert [rec.data.candidate_ids[c] for c in idx[i][:10]] == [c["id"] for c in rec.recommend(e, 10)["candidates"]]
    wider, _ = reciprocal_pools(rec, ents, 200, 200)  # a request of 200 has a wider routed list
    assert any(len(wider[i][wider[i] >= 0]) > len(idx[i][idx[i] >= 0]) for i in range(len(ents)))


def test_training_lists_hold_the_serving_pool(served):
    rec, lists = served
    for i, e in enumerate(lists.entity[:10]):
        route = rec.router.route(str(e))[1]
        pool = rec.pools([str(e)], [route])[0]
        assert sorted(lists.cand[lists.offsets[i]:lists.offsets[i + 1]].tolist()) == sorted(pool.cand.tolist())


def test_pool_spec_round_trip_and_validation():
    spec = PoolSpec.of({"content": 200, "two_tower": 100})
    assert PoolSpec.from_dict(spec.to_dict()) == spec and spec.max_size == 300
    assert spec.names == ["content", "two_tower"]
    with pytest.raises(ConfigError):
        PoolSpec.of({"content": -1})


def test_unknown_retriever_names_contribute_nothing(served):
    rec, _ = served
    e = sorted(rec.data.entity_counts)[0]
    a = build_pools(rec.retrievers, rec.data, [e], {"two_tower": 5, "not_loaded": 50})[0]
    b = build_pools(rec.retrievers, rec.data, [e], {"two_tower": 5})[0]
    assert a.cand.tolist() == b.cand.tolist() and len(a) == 5
