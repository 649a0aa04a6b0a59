"""Ranker: losses stay within lists, IPS weights count, it learns a planted signal, round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from startup_recs.core.errors import ConfigError, DataError, ModelMismatchError
from startup_recs.evaluation import metrics
from startup_recs.models.ranker import RankerMLP, from_dir
from startup_recs.serving import ranking_features
from startup_recs.serving.rerank import Reranker
from startup_recs.train import ranker as tr
from startup_recs.train import ranker_lists as rlists
from startup_recs.train import ranker_losses as rl
from tests.unit.ranker_world import USE_CASE, make_world

torch.set_num_threads(1)


# --- losses -------------------------------------------------------------------------------------
def _batch(lists: list[list[tuple[float, float, float]]]):
    """[(score, label, weight), ...] per list -> padded tensors (scores require grad)."""
    width = max(len(x) for x in lists)
    s = torch.zeros(len(lists), width)
    y = torch.zeros(len(lists), width)
    w = torch.ones(len(lists), width)
    m = torch.zeros(len(lists), width, dtype=torch.bool)
    for i, items in enumerate(lists):
        for j, (si, yi, wi) in enumerate(items):
            s[i, j], y[i, j], w[i, j], m[i, j] = si, yi, wi, True
    return s.requires_grad_(True), y, w, m


@pytest.mark.parametrize("loss", ["listwise", "pairwise"])
def test_cross_entity_pairs_contribute_nothing(loss):
    fn = rl.LOSSES[loss]
    # entity A: one positive, one negative; entity B: one negative with a huge score.
    a = [(0.5, 1.0, 1.0), (0.2, 0.0, 1.0)]
    s, y, w, m = _batch([a, [(9.0, 0.0, 1.0)]])
    fn(s, y, w, m).backward()
    grad_a = s.grad[0].clone()
    # B's score does not touch A's gradient, and B alone (no positive) gives no loss at all
    s2, y2, w2, m2 = _batch([a, [(-9.0, 0.0, 1.0)]])
    fn(s2, y2, w2, m2).backward()
    assert torch.allclose(grad_a, s2.grad[0])
    assert float(s.grad[1, 0]) == 0.0
    # the positive only in A and the negative only in B: a cross-entity pair would give a loss
    s3, y3, w3, m3 = _batch([[(0.0, 1.0, 1.0)], [(5.0, 0.0, 1.0)]])
    out = fn(s3, y3, w3, m3)
    assert out.item() == pytest.approx(0.0, abs=1e-7)
    # the same as A on its own (the batch normaliser counts A's positives only)
    s4, y4, w4, m4 = _batch([a])
    assert fn(s4, y4, w4, m4).item() == pytest.approx(fn(*_batch([a, [(9.0, 0.0, 1.0)]])).item(), rel=1e-6)


def test_padding_never_enters_a_list():
    s, y, w, m = _batch([[(1.0, 1.0, 1.0), (0.0, 0.0, 1.0)], [(0.3, 1.0, 1.0), (0.1, 0.0, 1.0), (2.0, 0.0, 1.0)]])
    base = rl.listwise_loss(s, y, w, m).item()
    s2 = s.detach().clone()
    s2[0, 2] = 50.0  # a padded cell
    assert rl.listwise_loss(s2, y, w, m).item() == pytest.approx(base)
    assert rl.pairwise_loss(s2, y, w, m).item() == pytest.approx(rl.pairwise_loss(s, y, w, m).item())


def test_ips_weights_hand_case():
    # one list: positives with IPS weights 1 and 3, one negative; scores 0, 1, 2
    s, y, w, m = _batch([[(0.0, 1.0, 1.0), (1.0, 1.0, 3.0), (2.0, 0.0, 1.0)]])
    lse = math.log(math.exp(0) + math.exp(1) + math.exp(2))
    want = -(1 * (0 - lse) + 3 * (1 - lse)) / 2  # divided by the 2 positives
    assert rl.listwise_loss(s, y, w, m).item() == pytest.approx(want, rel=1e-6)
    # pairwise: pairs (0,2) weight 1 and (1,2) weight 3, mean over 2 pairs
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert rl.pairwise_loss(s, y, w, m).item() == pytest.approx((1 * sp(2 - 0) + 3 * sp(2 - 1)) / 2, rel=1e-6)
    # and the weights steer learning: the heavier positive gets the larger gradient push
    rl.listwise_loss(s, y, w, m).backward()
    assert s.grad[0, 1] < s.grad[0, 0] < 0


def test_pad_lists_layout():
    offsets = np.array([0, 2, 5, 6])
    idx, mask = rl.pad_lists(offsets, np.array([1, 2]))
    assert idx.tolist() == [[2, 3, 4], [5, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]


def test_ndcg_lists_hand_case():
    # list 1: relevant at rank 2 of 3 -> 1/log2(3); list 2 has no positive -> skipped
    scores = np.array([3.0, 2.0, 1.0, 5.0, 4.0])
    labels = np.array([0, 1, 0, 0, 0])
    assert metrics.ndcg_lists(scores, labels, np.array([0, 3, 5])) == pytest.approx(1 / math.log2(3))


# --- learning -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world():
    return make_world(seed=0)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    data, retrievers, rows = world
    cfg = tr.RankerTrainConfig(use_case=USE_CASE, epochs=40, batch_size=16, lr=3e-3, seed=0, lists="entity",
                               extra_negatives=0, patience=10, learner="mlp")
    lists = rlists.make_lists(rows, data, retrievers, cfg)
    result = tr.fit(lists, cfg)
    return cfg, lists, result


def test_learns_planted_signal(trained):
    _, lists, result = trained
    m = result.metrics
    base = m["holdout_baselines_ndcg@10"]
    assert set(base) >= {"two_tower", "als", "pop_log"}
    best_single = max(base.values())
    # each retriever sees half the truth; the ranker adds them up (and the popularity prior)
    assert m["holdout_ndcg@10"] > best_single + 0.08, (m["holdout_ndcg@10"], base)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_fit_is_deterministic(world):
    data, retrievers, rows = world
    cfg = tr.RankerTrainConfig(use_case=USE_CASE, epochs=3, batch_size=16, seed=5, extra_negatives=5, learner="mlp")
    lists = rlists.make_lists(rows, data, retrievers, cfg)
    a, b = tr.fit(lists, cfg), tr.fit(lists, cfg)
    for k, v in a.best_state.items():
        assert torch.equal(v, b.best_state[k])


def test_extra_negatives_come_from_retrieval_and_exclude_labelled(world):
    data, retrievers, rows = world
    cfg = tr.RankerTrainConfig(use_case=USE_CASE, lists="entity", extra_negatives=5, retrieve_k=20)
    lists = rlists.make_lists(rows, data, retrievers, cfg)
    base = rlists.make_lists(rows, data, retrievers,
                         tr.RankerTrainConfig(use_case=USE_CASE, lists="entity", extra_negatives=0))
    assert len(lists.y) == len(base.y) + 5 * base.n_lists
    assert lists.y.sum() == base.y.sum()  # only negatives added
    # no candidate twice in a list; added ones are neither logged for the entity nor already contacted
    for i in range(lists.n_lists):
        e = lists.entity[i]
        c = lists.cand[lists.offsets[i]:lists.offsets[i + 1]]
        assert len(c) == len(np.unique(c))
        logged = set(data.candidate_positions(rows.loc[rows["entity_id"] == e, "candidate_id"].tolist()))
        added = set(c.tolist()) - logged
        assert len(added) == 5
        assert not added & set(data.excluded_of(e).tolist())


def test_pool_lists_are_what_serving_reranks(world):
    """Pool lists = each entity's hybrid pool as serving builds it (``serving.pool.build_pools``
    with the config's spec), labelled by its positives at ``positive_grade``; positives outside
    the pool are dropped, those inside keep their IPS weights."""
    data, retrievers, rows = world
    from startup_recs.serving.pool import PoolSpec, build_pools
    from startup_recs.serving.router import Router

    spec = {"two_tower": 15, "als": 15}
    cfg = tr.RankerTrainConfig(use_case=USE_CASE, lists="pool", pool=spec, extra_negatives=0)
    lists = rlists.make_lists(rows, data, retrievers, cfg)
    ents = list(lists.entity)
    assert sorted(ents) == sorted(rows["entity_id"].unique())
    router = Router(retrievers, data, None)
    pools = build_pools(retrievers, data, ents, PoolSpec.of(spec), routes=[router.route(e)[1] for e in ents])
    pos = rows[rows["label"] == 1]
    for i, (e, pool) in enumerate(zip(ents, pools, strict=True)):
        a, b = lists.offsets[i], lists.offsets[i + 1]
        assert sorted(lists.cand[a:b].tolist()) == sorted(pool.cand.tolist())
        assert 15 <= len(pool) <= 30
        mine = pos[pos["entity_id"] == e]
        in_pool = set(data.candidate_positions(mine["candidate_id"].tolist()).tolist()) & set(pool.cand.tolist())
        got = {int(c) for c, y in zip(lists.cand[a:b], lists.y[a:b], strict=True) if y >= cfg.positive_grade}
        assert got == in_pool
        for c, w in zip(lists.cand[a:b], lists.w[a:b], strict=True):
            if int(c) in got:
                cid = data.candidate_ids[c]
                assert w == pytest.approx(mine.loc[mine["candidate_id"] == cid, "weight"].max())
    # negatives sampled for the loss after the features: the kept rows' features are unchanged
    sampled = rlists.make_lists(rows, data, retrievers, tr.RankerTrainConfig(
        use_case=USE_CASE, lists="pool", pool=spec, extra_negatives=4))
    assert sampled.y.sum() == lists.y.sum()
    npos = np.add.reduceat(lists.y > 0, lists.offsets[:-1])
    assert np.all(np.diff(sampled.offsets) == np.minimum(np.diff(lists.offsets), npos + 4))
    full = {(e, int(c)): x for e, c, x in zip(np.repeat(lists.entity, np.diff(lists.offsets)), lists.cand, lists.X,
                                              strict=True)}
    for e, c, x in zip(np.repeat(sampled.entity, np.diff(sampled.offsets)), sampled.cand, sampled.X, strict=True):
        np.testing.assert_array_equal(x, full[(e, int(c))])


def test_empty_validation_set_is_an_error(tmp_path, world):
    _, _, rows = world
    from startup_recs.core import storage

    uri = str(tmp_path / "ranker.parquet")
    import pyarrow as pa

    storage.write_table(pa.Table.from_pandas(rows.assign(split="train"), preserve_index=False), uri)
    cfg = tr.RankerTrainConfig(use_case=USE_CASE)
    with pytest.raises(DataError, match="empty validation set"):
        tr.train(cfg, uri, str(tmp_path), str(tmp_path))


def test_config_validation():
    with pytest.raises(ConfigError):
        tr.RankerTrainConfig(use_case=USE_CASE, loss="pointwise")
    with pytest.raises(ConfigError):
        tr.RankerTrainConfig(use_case="nope")


# --- save / load / serve --------------------------------------------------------------------------
def test_save_load_identical_scores(trained, world, tmp_path):
    cfg, lists, result = trained
    data, retrievers, rows = world
    from startup_recs.models.ranker import RankerConfig, save

    rc = RankerConfig(use_case=USE_CASE, features=lists.names, hidden=list(cfg.hidden),
                      mean=result.model.mean.tolist(), std=result.model.std.tolist())
    save(result.model, rc, str(tmp_path), best_state=result.best_state)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ranker_reverse_v1.pth", "ranker_reverse_v1_best.pth", "ranker_reverse_v1_config.json"]
    model, _ = from_dir(str(tmp_path), USE_CASE, which="final")
    with torch.no_grad():
        assert torch.equal(model(torch.from_numpy(lists.X)), result.model(torch.from_numpy(lists.X)))

    rr = Reranker.load(str(tmp_path), USE_CASE)  # serves the best checkpoint
    best = RankerMLP(len(lists.names), cfg.hidden)
    best.load_state_dict(result.best_state)
    best.eval()
    # the serving path: features rebuilt from retrievers for one entity, numpy MLP
    e = lists.entity[0]
    a, b = lists.offsets[0], lists.offsets[1]
    cidx = lists.cand[a:b]
    scores = ranking_features.gather_scores(retrievers, e, cidx, rr.retrievers)
    got = rr.score(e, cidx, scores, data)
    X, names = ranking_features.build(USE_CASE, e, cidx, scores, data)
    assert names == lists.names
    with torch.no_grad():
        want = best(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rr.score_features(X), want, rtol=1e-5, atol=1e-5)
    # the training rows of that list had the same features (score_at vs whole-row scoring may
    # differ in the last float bit)
    np.testing.assert_allclose(X, lists.X[a:b], rtol=1e-5, atol=1e-6)


def test_use_case_mismatch(trained, world, tmp_path):
    cfg, lists, result = trained
    data, _, _ = world
    from startup_recs.models.ranker import RankerConfig, save

    rc = RankerConfig(use_case=USE_CASE, features=lists.names, hidden=list(cfg.hidden),
                      mean=result.model.mean.tolist(), std=result.model.std.tolist())
    save(result.model, rc, str(tmp_path))
    # startup_investor shares the ranker_reverse_v1 file names: the config's use case decides
    with pytest.raises(ModelMismatchError, match="use case"):
        Reranker.load(str(tmp_path), "startup_investor")
    rr = Reranker.load(str(tmp_path), USE_CASE)
    other = type(data)(use_case="startup_investor", until=data.until, candidate_ids=data.candidate_ids,
                       popularity=data.popularity, recency_days=data.recency_days,
                       entity_counts=data.entity_counts, seen=data.seen)
    with pytest.raises(ModelMismatchError, match="use case"):
        rr.score("s0", np.array([0, 1]), {}, other)
    # a config whose feature list the data cannot give (a ranker trained with feature tables)
    rc2 = RankerConfig(use_case=USE_CASE, features=[*lists.names, "match_skills"], hidden=[4],
                       mean=[0.0] * (len(lists.names) + 1), std=[1.0] * (len(lists.names) + 1))
    save(RankerMLP(len(lists.names) + 1, [4]), rc2, str(tmp_path / "b"))
    with pytest.raises(ModelMismatchError, match="feature mismatch"):
        Reranker.load(str(tmp_path / "b"), USE_CASE).check(data)
    # weights that do not fit the config (the legacy "feature dimension mismatch")
    save(RankerMLP(3, [4]), rc2, str(tmp_path / "c"))
    with pytest.raises(ModelMismatchError, match="do not fit"):
        from_dir(str(tmp_path / "c"), USE_CASE)


# --- LightGBM LambdaRank ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def boosted(world):
    data, retrievers, rows = world
    cfg = tr.RankerTrainConfig(use_case=USE_CASE, lists="pool", pool={"two_tower": 20, "als": 20},
                               learner="lightgbm", extra_negatives=0, lgb_min_data_in_leaf=5, lgb_rounds=60,
                               threads=1)
    lists = rlists.make_lists(rows, data, retrievers, cfg)
    return cfg, lists, tr.fit(lists, cfg)


def test_lightgbm_learns_within_lists(boosted):
    _, lists, result = boosted
    m = result.metrics
    assert result.learner == "lightgbm" and result.booster_text.startswith("tree")
    assert 1 <= m["best_iteration"] <= m["rounds_run"] <= 60
    # one query group per list: the booster beats ordering by either half of the truth alone
    assert m["holdout_ndcg@10"] > max(m["holdout_baselines_ndcg@10"].values()), m


def test_lightgbm_save_load_identical_scores(boosted, world, tmp_path):
    """Booster -> LightGBM text model -> Booster(model_str=...) scores bit-identically, and the
    serving path (Reranker over a pool built by the serving code) gives the same numbers."""
    cfg, lists, result = boosted
    data, retrievers, _ = world
    from startup_recs.models.ranker import RankerConfig, load_scorer, save_booster
    from startup_recs.models.ranker_lgbm import booster_from_text
    from startup_recs.serving.pool import build_pool

    rc = RankerConfig(use_case=USE_CASE, features=lists.names, hidden=[], mean=[], std=[], weights="booster",
                      learner="lightgbm", pool={"sizes": cfg.pool})
    save_booster(result.booster_text, rc, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranker_reverse_v1_booster.txt",
                                                           "ranker_reverse_v1_config.json"]
    assert b"pickle" not in (tmp_path / "ranker_reverse_v1_booster.txt").read_bytes()
    scorer, loaded = load_scorer(str(tmp_path), USE_CASE)
    assert loaded.learner == "lightgbm" and loaded.features == lists.names
    want = booster_from_text(result.booster_text).predict(lists.X)
    np.testing.assert_array_equal(scorer(lists.X), want.astype(np.float32))
    rr = Reranker.load(str(tmp_path), USE_CASE)
    assert dict(rr.pool_spec.sizes) == cfg.pool
    e = lists.entity[0]
    pool = build_pool(retrievers, data, e, rr.pool_spec, route="two_tower", score_names=rr.retrievers)
    got = rr.score_pool(pool, data)
    X, _ = ranking_features.build(USE_CASE, e, pool.cand, pool.scores, data, rr.retrievers, pool.listed)
    np.testing.assert_array_equal(got, scorer(X))
    with pytest.raises(ModelMismatchError):
        booster_from_text("not a model")


def test_learner_search_keeps_or_beats_the_defaults(boosted):
    cfg, lists, _ = boosted
    from dataclasses import replace

    from startup_recs.train.ranker_search import search_learner

    best, summary = search_learner(lists, replace(cfg, tune_trials=3, epochs=3))
    assert summary["trials"][0]["params"]["learner"] == "lightgbm"  # trial 0 = the config as given
    assert summary["best_value"] >= summary["default_value"]
    assert best.tune_trials == 0 and best.learner in ("lightgbm", "mlp")


def test_auto_learner_keeps_the_better_holdout(boosted):
    cfg, lists, lgb_result = boosted
    from dataclasses import replace

    auto = tr.fit(lists, replace(cfg, learner="auto", epochs=5))
    choice = auto.metrics["learner_choice"]
    assert auto.learner == choice["chosen"]
    assert choice["holdout_ndcg@10"][choice["chosen"]] == max(choice["holdout_ndcg@10"].values())
    assert choice["holdout_ndcg@10"]["lightgbm"] == pytest.approx(lgb_result.metrics["holdout_ndcg@10"])
