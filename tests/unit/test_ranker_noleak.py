"""The ranker's features cannot see its labels (the legacy ``model_score`` bug), nor the future.

The core check, :func:`assert_label_free`: build the training features, then scramble everything
a feature must not read (labels, IPS weights, propensities, positions, row times) and build
again; the feature matrices must be bit-identical. A deliberately leaky builder (the legacy
``model_score`` column) must fail the same check, so the check is known to bite.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from startup_recs.core.errors import DataError
from startup_recs.serving import ranking_features
from startup_recs.serving.data import ServingData
from startup_recs.train import ranker as tr
from startup_recs.train import ranker_inputs as rin
from startup_recs.train import ranker_lists as rlists
from tests.unit.ranker_world import USE_CASE, VAL_START, make_world

FORBIDDEN = ("label", "weight", "propensity", "position", "ts")


def scramble(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Same (session, entity, candidate) rows; labels, weights, positions and times reshuffled."""
    rng = np.random.default_rng(seed)
    out = rows.copy()
    for col in ("label", "weight", "propensity"):
        out[col] = rng.permutation(out[col].to_numpy())
    out["position"] = rng.integers(0, 50, len(out))
    out["ts"] = out["ts"] + pd.to_timedelta(rng.uniform(0, 400, len(out)), unit="D")  # even past the split
    return out


def _by_pair(d: rlists.ListData) -> dict[tuple[str, int], np.ndarray]:
    """Feature row per (entity, candidate): row order and list order cannot hide a difference."""
    ent = np.repeat(d.entity, np.diff(d.offsets))
    out = {(str(e), int(c)): x for e, c, x in zip(ent, d.cand, d.X, strict=True)}
    assert len(out) == len(d.X)  # one row per pair
    return out


def assert_label_free(build, rows: pd.DataFrame, trials: int = 3, same_rows: bool = True) -> None:
    """``build(rows) -> ListData``: features must not move when forbidden columns do.

    ``same_rows=False`` for negative sampling *after* the features (pool lists with
    ``extra_negatives``): which rows the loss keeps may follow the labels, their features may not.
    """
    base = _by_pair(build(rows))
    for t in range(trials):
        again = _by_pair(build(scramble(rows, seed=100 + t)))
        if same_rows:
            assert again.keys() == base.keys()
        common = again.keys() & base.keys()
        assert len(common) >= 0.5 * len(base)
        for k in common:
            assert np.array_equal(again[k], base[k]), "a ranking feature depends on label/weight/position/time"


@pytest.fixture(scope="module")
def world():
    return make_world(seed=1, n_e=40, n_c=50)


@pytest.mark.parametrize("lists,extra", [("pool", 0), ("pool", 5), ("entity", 0), ("entity", 8), ("session", 0)])
def test_features_ignore_labels_positions_and_times(world, lists, extra):
    data, retrievers, rows = world
    cfg = tr.RankerTrainConfig(use_case=USE_CASE, lists=lists, extra_negatives=extra, retrieve_k=30,
                               pool={"two_tower": 12, "als": 12})
    assert_label_free(lambda r: rlists.make_lists(r, data, retrievers, cfg), rows,
                      same_rows=not (lists == "pool" and extra > 0))


def test_graded_window_events_move_labels_never_features(world):
    """Pool lists with graded labels from every window event (clicks, saves, positives): scrambling
    which pair got which grade (and when) changes labels only; every feature column, the pool
    ones (``*_listed``, ``*_unlisted``, ``pool_*``) and the entity ones included, stays put."""
    data, retrievers, rows = world
    cfg = tr.RankerTrainConfig(use_case=USE_CASE, lists="pool", extra_negatives=0, pool={"two_tower": 12, "als": 12})
    rng = np.random.default_rng(7)
    pairs = rows[["entity_id", "candidate_id"]].drop_duplicates().sample(frac=0.5, random_state=1)
    extra = pairs.assign(grade=rng.integers(1, 4, len(pairs)))
    base = rlists.make_lists(rows, data, retrievers, cfg, extra)
    assert {"two_tower_listed", "als_unlisted", "pool_n_lists", "entity_log_seen"} <= set(base.names)
    assert base.names == ranking_features.feature_names(data, cfg.retrievers)  # every column is checked
    for t in range(3):
        shuffled = extra.assign(grade=np.random.default_rng(t).permutation(extra["grade"].to_numpy()))
        again = rlists.make_lists(scramble(rows, 200 + t), data, retrievers, cfg, shuffled)
        assert np.array_equal(again.cand, base.cand)  # same pools, same (seeded) row order
        assert np.array_equal(again.X, base.X), "a ranking feature depends on the window's events"
    assert not np.array_equal(again.y, base.y)


def test_the_check_catches_the_legacy_model_score_leak(world):
    """The legacy ranker fed ``model_score`` (in effect the label) to the MLP: caught here."""
    data, retrievers, rows = world
    cfg = tr.RankerTrainConfig(use_case=USE_CASE, lists="entity", extra_negatives=0)

    def legacy(r: pd.DataFrame) -> rlists.ListData:
        d = rlists.make_lists(r, data, retrievers, cfg)
        model_score = d.y + 0.1 * d.X[:, 0]  # "a retrieval score", written after the outcome
        return rlists.ListData(np.column_stack([d.X, model_score]), d.y, d.w, d.offsets, d.entity, d.names, d.cand)

    with pytest.raises(AssertionError, match="depends on label"):
        assert_label_free(legacy, rows)


def test_no_feature_column_tracks_the_label_on_its_own(world):
    """A second guard: no single column separates positives from negatives perfectly."""
    data, retrievers, rows = world
    d = rlists.make_lists(rows, data, retrievers, tr.RankerTrainConfig(use_case=USE_CASE, lists="entity",
                                                                   extra_negatives=0))
    pos, neg = d.X[d.y > 0], d.X[d.y == 0]
    for j, name in enumerate(d.names):
        separates = pos[:, j].min() > neg[:, j].max() or pos[:, j].max() < neg[:, j].min()
        assert not separates, f"feature {name} alone separates the labels"


def test_events_after_the_fit_window_change_nothing(world):
    """Serving data (popularity, recency, counts, seen) is cut at ``until``: later events, even
    ones that repeat every positive of the validation rows many times, leave features unchanged."""
    data, retrievers, rows = world
    cfg = tr.RankerTrainConfig(use_case=USE_CASE, lists="entity", extra_negatives=0)
    base = rlists.make_lists(rows, data, retrievers, cfg).X
    pos = rows[rows["label"] == 1]
    train_events = pd.DataFrame({
        "entity_id": list(data.seen), "candidate_id": [data.candidate_ids[c[0]] for c in data.seen.values()],
        "ts": VAL_START - pd.Timedelta(days=3), "weight": 1.0})
    future = pd.DataFrame({"entity_id": pos["entity_id"], "candidate_id": pos["candidate_id"],
                           "ts": pos["ts"], "weight": 50.0})
    a = ServingData.from_events(train_events, USE_CASE, until=VAL_START,
                                candidate_features=pd.DataFrame(index=pd.Index(data.candidate_ids.tolist())))
    b = ServingData.from_events(pd.concat([train_events, future]), USE_CASE, until=VAL_START,
                                candidate_features=pd.DataFrame(index=pd.Index(data.candidate_ids.tolist())))
    for d in (a, b):
        d.candidate_features = None
    xa = rlists.make_lists(rows, a, retrievers, cfg).X
    xb = rlists.make_lists(rows, b, retrievers, cfg).X
    assert np.array_equal(xa, xb)
    assert len(xa) > 0.8 * len(base)


def test_stage1_inputs_must_end_before_the_validation_start(world, tmp_path):
    data, _, _ = world
    rin.check_fit_window(data, VAL_START)  # until == val_start: fine
    late = ServingData(use_case=USE_CASE, until=VAL_START + pd.Timedelta(days=1), candidate_ids=data.candidate_ids,
                       popularity=data.popularity, recency_days=data.recency_days,
                       entity_counts=data.entity_counts, seen=data.seen)
    with pytest.raises(DataError, match="would leak"):
        rin.check_fit_window(late, VAL_START)
    unbounded = ServingData(use_case=USE_CASE, until=None, candidate_ids=data.candidate_ids,
                            popularity=data.popularity, recency_days=data.recency_days,
                            entity_counts=data.entity_counts, seen=data.seen)
    with pytest.raises(DataError, match="would leak"):
        rin.check_fit_window(unbounded, VAL_START)

    from startup_recs.core import storage

    ok = tmp_path / "ok"
    storage.write_json(str(ok / "two_tower_reverse_v1_config.json"), {"data": {"fit_on": "train"}})
    storage.write_json(str(ok / "als_reverse_meta.json"), {"fit_window": "train", "cutoff": VAL_START.isoformat()})
    rin.check_fit_window(data, VAL_START, str(ok))
    for name, cfg in [("two_tower_reverse_v1_config.json", {"data": {"fit_on": "trainval"}}),
                      ("als_reverse_meta.json", {"cutoff": (VAL_START + pd.Timedelta(days=14)).isoformat()}),
                      ("serving/serving_data.json", {"until": "2026-03-20T00:00:00+00:00"})]:
        bad = tmp_path / name.replace("/", "_")
        storage.write_json(str(bad / name), cfg)
        with pytest.raises(DataError, match="would leak"):
            rin.check_fit_window(data, VAL_START, str(bad))

    # ALS records no window in its config; its id mappings give it away: an entity or candidate
    # with no event before the validation start can only come from later events
    als = tmp_path / "als"
    known_e = sorted(data.entity_counts)[:3]
    storage.write_json(str(als / "als_reverse_v1_user_mapping.json"), {e: i for i, e in enumerate(known_e)})
    rin.check_fit_window(data, VAL_START, str(als))
    storage.write_json(str(als / "als_reverse_v1_user_mapping.json"),
                       {e: i for i, e in enumerate([*known_e, "s_new_in_validation"])})
    with pytest.raises(DataError, match="1 entities without any event"):
        rin.check_fit_window(data, VAL_START, str(als))


def test_real_feature_tables_are_label_free(tiny_snapshot, tmp_path):
    """On the synthetic marketplace with feature tables (match features), from B's ranker pairs."""
    from startup_recs.datasets.ranker import build_ranker
    from startup_recs.serving.retrievers import load_retrievers

    uc = "startup_developer"
    out = str(tmp_path / "ranker_reverse.parquet")
    build_ranker(tiny_snapshot, uc, out)
    rows = pd.read_parquet(out)
    val = rows[rows["split"] == "val"]
    assert len(val) and (val["label"] == 1).any()
    val_start = rin.dataset_val_start(rows, out)
    data = ServingData.from_snapshot(tiny_snapshot, uc, until=val_start)
    assert data.has_features
    retrievers = load_retrievers(str(tmp_path / "no_models"), data)  # content + popularity only
    cfg = tr.RankerTrainConfig(use_case=uc, extra_negatives=0, pool={"content": 50})
    d = rlists.make_lists(val, data, retrievers, cfg)
    assert any(n.startswith("match_") for n in d.names)
    assert d.X[:, d.names.index("entity_has_features")].max() == 1.0
    # the side attributes (numeric columns, stage ordinal) are there and vary
    for name in ("ent_funding_usd", "ent_stage_rank", "cand_experience_years", "match_skills_coverage"):
        assert name in d.names and np.ptp(d.X[:, d.names.index(name)]) > 0, name
    assert d.names == ranking_features.feature_names(data, cfg.retrievers)
    # a training list's rows are what serving builds for that entity's pool alone
    from startup_recs.serving.pool import build_pools

    ents = [str(e) for e in d.entity[:5]]
    for i, pool in enumerate(build_pools(retrievers, data, ents, cfg.pool, routes=["content"] * 5,
                                         score_names=cfg.retrievers)):
        X, _ = ranking_features.build(uc, pool.entity_id, pool.cand, pool.scores, data, cfg.retrievers, pool.listed)
        a, b = d.offsets[i], d.offsets[i + 1]
        mine = {int(c): x for c, x in zip(d.cand[a:b], d.X[a:b], strict=True)}
        np.testing.assert_allclose(np.stack([mine[int(c)] for c in pool.cand]), X, rtol=1e-5, atol=1e-5)
    assert_label_free(lambda r: rlists.make_lists(r, data, retrievers, cfg), val, trials=2)
