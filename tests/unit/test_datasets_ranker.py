"""Ranker pairs: session linking, hard negatives, the position-bias model and IPS weights."""

import json

import numpy as np
import pandas as pd
import pytest

from startup_recs.core import storage
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.data.split import TimeSplit
from startup_recs.datasets.ranker import build_ranker, position_bias, propensity_of
from tests.unit.dataset_helpers import day, db_snapshot, events_snapshot, random_db_snapshot, write

SPLIT = dict(split_at=day(50), val_days=10)


def test_known_rows_on_hand_snapshot(tmp_path):
    out = str(tmp_path / "rk.parquet")
    stats = build_ranker(db_snapshot(tmp_path / "snap"), "startup_developer", out, **SPLIT)
    df = pd.read_parquet(out)
    assert list(df.columns) == ["session_id", "entity_id", "candidate_id", "position", "label", "propensity",
                                "weight", "ts", "split"]
    got = sorted(zip(df.session_id, df.candidate_id, df.label.astype(int), df.split, strict=True))
    assert got == sorted([
        ("A1", "d1", 1, "train"), ("A1", "d5", 0, "train"), ("A1", "d6", 0, "train"),  # contact named A1
        ("B1", "d5", 1, "train"), ("B1", "d7", 0, "train"),  # apply_received 2 days after B1, no session id
        ("C1", "d3", 1, "train"), ("C1", "d7", 0, "train"), ("C1", "d6", 0, "train"),
        ("A2", "d6", 1, "val"), ("A2", "d7", 0, "val"),  # d3 only clicked: neither positive nor negative
    ])
    assert (df.ts[df.session_id == "A2"] == day(42)).all()
    assert stats["by_split"]["test"]["sessions"] == 0 and stats["positives"] == 4
    curve = json.loads((tmp_path / "rk_propensity.json").read_text())
    assert curve["impressions"] == [4, 4, 4] and curve["clicks"] == [3, 3, 0]  # train+val sessions
    assert curve["propensity"] == [1.0, 1.0, 1.0]  # < 20 impressions per slot: no evidence to discount


def test_position_bias_known_curve():
    # CTR 0.5, 0.25, 0.30, 0.05 at positions 0..3 (100 impressions each)
    pos = np.repeat(np.arange(4), 100)
    clicked = np.concatenate([np.arange(100) < k for k in (50, 25, 30, 5)])
    curve = position_bias(pos, clicked, clip=0.2)
    assert curve["ctr"] == [0.5, 0.25, 0.3, 0.05]
    # relative to position 0, made non-increasing (0.6 -> 0.5), clipped below at 0.2 (0.1 -> 0.2)
    assert curve["propensity"] == [1.0, 0.5, 0.5, 0.2] and curve["estimated"]
    w = 1.0 / propensity_of(curve, np.array([0, 1, 2, 3, 9, -1]))
    np.testing.assert_allclose(w, [1, 2, 2, 5, 5, 1])  # deeper -> larger weight; past the end: last
    assert np.all(np.diff(w[:4]) >= 0)


def test_position_bias_sparse_slots_and_no_clicks():
    pos = np.concatenate([np.repeat([0, 1], 100), [2] * 5])
    clicked = np.concatenate([np.arange(100) < 40, np.arange(100) < 20, [True] * 5])
    assert position_bias(pos, clicked)["propensity"] == [1.0, 0.5, 0.5]  # slot 2: 5 impressions, borrows slot 1
    flat = position_bias(np.arange(3), np.zeros(3, bool))
    assert flat["propensity"] == [1.0, 1.0, 1.0] and not flat["estimated"]
    with pytest.raises(ConfigError):
        position_bias(pos, clicked, clip=0)


def test_ips_weights_grow_with_position(tmp_path):
    out = str(tmp_path / "rk.parquet")
    build_ranker(random_db_snapshot(tmp_path / "snap", seed=2, n_sessions=600), "startup_developer", out, seed=0)
    df = pd.read_parquet(out)
    curve = json.loads((tmp_path / "rk_propensity.json").read_text())
    assert curve["estimated"] and curve["propensity"][0] == 1.0 and curve["propensity"][-1] < 0.5
    assert np.all(np.diff(curve["propensity"]) <= 0) and min(curve["propensity"]) >= 0.05
    pos = df[df.label == 1]
    np.testing.assert_allclose(pos.weight, 1.0 / pos.propensity, rtol=1e-6)
    assert (df.loc[df.label == 0, "weight"] == 1.0).all()
    by_pos = pos.groupby("position").weight.mean()
    assert by_pos.is_monotonic_increasing and by_pos.iloc[-1] > by_pos.iloc[0]
    # at most ceil(neg_ratio * positives) negatives per session, all from that session
    per = df.assign(label=df.label.astype(int)).groupby("session_id").label.agg(["sum", "size"])
    assert (per["sum"] >= 1).all() and ((per["size"] - per["sum"]) <= np.ceil(2 * per["sum"])).all()


def _with_extra_test_clicks(src: str, dst, split: TimeSplit) -> str:
    """Copy of a snapshot whose test window gains a click on every shown candidate."""
    import shutil

    shutil.copytree(src, dst)
    si = storage.read_table(f"{src}/startup_interactions").to_pandas()
    sess = storage.read_table(f"{src}/recommendation_sessions").to_pandas()
    imp = storage.read_table(f"{src}/impressions").to_pandas().merge(sess, on="session_id")
    test = imp[imp.ts >= split.split_at]
    extra = pd.DataFrame({"startup_id": test.entity_id, "user_id": test.candidate_id, "event": "contact",
                          "ts": test.ts + pd.Timedelta(minutes=1), "session_id": test.session_id})
    shutil.rmtree(f"{dst}/startup_interactions")
    write(dst, "startup_interactions", pd.concat([si, extra], ignore_index=True))
    return str(dst)


def test_future_events_change_nothing_before_the_split(tmp_path):
    from startup_recs.datasets.two_tower import build_two_tower

    a = random_db_snapshot(tmp_path / "a", seed=4)
    split = TimeSplit(val_start=day(35), split_at=day(45))
    b = _with_extra_test_clicks(a, tmp_path / "b", split)
    ra = build_ranker(a, "startup_developer", str(tmp_path / "ra.parquet"), split=split)
    rb = build_ranker(b, "startup_developer", str(tmp_path / "rb.parquet"), split=split)
    assert rb["by_split"]["test"]["positives"] > ra["by_split"]["test"]["positives"]
    ca = json.loads((tmp_path / "ra_propensity.json").read_text())
    cb = json.loads((tmp_path / "rb_propensity.json").read_text())
    assert ca["propensity"] == cb["propensity"]  # the position model never sees the test window
    fa, fb = pd.read_parquet(tmp_path / "ra.parquet"), pd.read_parquet(tmp_path / "rb.parquet")
    pd.testing.assert_frame_equal(fa[fa.split != "test"].reset_index(drop=True),
                                  fb[fb.split != "test"].reset_index(drop=True))
    ta = build_two_tower(a, "startup_developer", str(tmp_path / "ta.parquet"), split=split)
    tb = build_two_tower(b, "startup_developer", str(tmp_path / "tb.parquet"), split=split)
    assert ta["by_split"]["train"] == tb["by_split"]["train"]
    fa, fb = pd.read_parquet(tmp_path / "ta.parquet"), pd.read_parquet(tmp_path / "tb.parquet")
    pd.testing.assert_frame_equal(fa[fa.split != "test"].reset_index(drop=True),
                                  fb[fb.split != "test"].reset_index(drop=True))
    assert (tmp_path / "ta_vocab.json").read_text() == (tmp_path / "tb_vocab.json").read_text()


def test_investor_use_case_and_no_positive_sessions(tmp_path):
    uri = db_snapshot(tmp_path / "snap")
    build_ranker(uri, "startup_investor", str(tmp_path / "i.parquet"), **SPLIT)
    df = pd.read_parquet(tmp_path / "i.parquet")
    assert sorted(zip(df.candidate_id, df.label.astype(int), strict=True)) == [("i1", 1), ("i2", 0)]  # I1: i1 contact day 3
    # only views and clicks after the sessions: nothing to learn a contact from
    import shutil

    shutil.rmtree(tmp_path / "snap" / "startup_interactions")
    write(tmp_path / "snap", "startup_interactions", [
        dict(startup_id="s1", user_id="i1", event="click", ts=day(3), session_id="I1"),
        dict(startup_id="s2", user_id="i2", event="view", ts=day(41), session_id=None),
        dict(startup_id="s3", user_id="i1", event="view", ts=day(52), session_id=None)])
    with pytest.raises(DataError, match="no session"):
        build_ranker(uri, "startup_investor", str(tmp_path / "x.parquet"), **SPLIT)
    assert not (tmp_path / "x.parquet").exists()


def test_id_only_import_gets_pseudo_sessions(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"u{rng.integers(6)}", f"c{rng.integers(40)}", float(d), "interaction", 1.0) for d in rng.uniform(0, 60, 120)]
    out = str(tmp_path / "rk.parquet")
    stats = build_ranker(events_snapshot(tmp_path / "ev", rows), "startup_developer", out, neg_ratio=2, **SPLIT)
    df = pd.read_parquet(out)
    assert (df.position == -1).all() and (df.propensity == 1).all() and (df.weight == 1).all()
    assert df.session_id.str.startswith("pseudo:").all()
    assert set(df.split) == {"train", "val", "test"} and stats["negatives"] > 0
    # negatives unseen by the entity up to the end of their part
    ev = pd.DataFrame(rows, columns=["e", "c", "d", "ev", "w"])
    part = np.where(ev.d < 40, 0, np.where(ev.d < 50, 1, 2))
    first = ev.assign(p=part).groupby(["e", "c"]).p.min()
    neg = df[df.label == 0]
    code = neg.split.map({"train": 0, "val": 1, "test": 2}).to_numpy()
    fp = first.reindex(pd.MultiIndex.from_arrays([neg.entity_id, neg.candidate_id])).to_numpy()
    assert np.all(np.isnan(fp) | (fp > code))


def test_bad_parameters(tmp_path):
    uri = db_snapshot(tmp_path / "snap")
    with pytest.raises(ConfigError):
        build_ranker(uri, "startup_developer", str(tmp_path / "x.parquet"), neg_ratio=-1)
    with pytest.raises(ConfigError):
        build_ranker(uri, "startup_developer", str(tmp_path / "x.parquet"), propensity_clip=1.5)
    with pytest.raises(ConfigError, match="unknown use case"):
        build_ranker(uri, "bogus", str(tmp_path / "x.parquet"))
