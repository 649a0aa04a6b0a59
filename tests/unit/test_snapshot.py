"""Snapshot views over both sources: role filtering, weights, features, impressions, bad input."""

import pandas as pd
import pytest

from startup_recs.core.errors import ConfigError, DataError
from startup_recs.data.snapshot import load_snapshot
from tests.unit.dataset_helpers import day, db_snapshot, events_snapshot, write


@pytest.fixture
def snap(tmp_path):
    return load_snapshot(db_snapshot(tmp_path / "snap"))


def test_reverse_events_keep_only_the_candidate_role(snap):
    dev = snap.events("startup_developer")
    inv = snap.events("startup_investor")
    assert list(dev.columns) == ["entity_id", "candidate_id", "event", "ts", "weight", "session_id"]
    assert set(dev["candidate_id"]) == {"d1", "d2", "d3", "d4", "d5", "d6"}
    assert len(dev) == 12 and len(inv) == 3
    assert set(inv["candidate_id"]) == {"i1", "i2"}
    assert dev["ts"].is_monotonic_increasing
    # configured weights: click 2, contact 5, view 1, apply_received 5
    first = dev.iloc[0]
    assert (first.entity_id, first.candidate_id, first.event, first.weight, first.session_id) == ("s1", "d1", "click", 2.0, "A1")
    assert dev.loc[dev.event == "view", "weight"].tolist() == [1.0]
    assert snap.events("startup_developer") is dev  # cached


def test_forward_events_keep_only_the_entity_role(snap):
    fwd = snap.events("developer_startup")
    assert set(fwd["entity_id"]) == {"d1", "d2", "d3"} and len(fwd) == 4
    assert fwd.loc[fwd.event == "save", "weight"].tolist() == [3.0]
    inv = snap.events("investor_startup")
    assert inv[["entity_id", "candidate_id"]].values.tolist() == [["i1", "s1"]]


def test_feature_views_by_kind(snap):
    ents = snap.entity_features("startup_developer")
    assert ents.index.name == "entity_id" and list(ents.index) == ["s1", "s2", "s3", "s4"]
    assert list(ents.columns) == ["sector", "stage", "location", "skills_needed", "funding_usd"]
    devs = snap.candidate_features("startup_developer")
    assert devs.index.name == "candidate_id" and len(devs) == 7
    assert list(devs.columns) == ["skills", "location", "experience_years"]
    invs = snap.entity_features("investor_startup")
    assert list(invs.index) == ["i1", "i2"] and "check_size_usd" in invs.columns
    assert list(snap.known_ids("startup_investor", "candidate")) == ["i1", "i2"]


def test_impressions_join_sessions_of_the_use_case(snap):
    imp = snap.impressions("startup_developer")
    assert list(imp.columns) == ["session_id", "entity_id", "candidate_id", "position", "ts"]
    assert len(imp) == 12 and set(imp.session_id) == {"A1", "B1", "C1", "A2"}
    a1 = imp[imp.session_id == "A1"]
    assert a1.candidate_id.tolist() == ["d1", "d5", "d6"] and a1.position.tolist() == [0, 1, 2]
    assert (a1.ts == day(1.0)).all() and (a1.entity_id == "s1").all()
    assert len(snap.impressions("startup_investor")) == 2
    assert snap.impressions("developer_startup") is None


def test_watermark_from_stats_or_last_event(tmp_path, snap):
    assert snap.watermark == day(56.0)
    path = tmp_path / "snap"
    (path / "extract_stats.json").write_text('{"source": "db", "watermark": "2026-03-01T00:00:00"}')
    assert load_snapshot(str(path)).watermark == pd.Timestamp("2026-03-01", tz="UTC")


def test_imported_events_weight_is_configured_times_imported(tmp_path):
    uri = events_snapshot(tmp_path / "ev", [("u1", "c1", 1.0, "purchase", 2.0), ("u1", "c2", 2.0, "interaction", 3.0),
                                            ("u2", "c1", 3.0, "click", 1.0)])
    snap = load_snapshot(uri)
    ev = snap.events("startup_developer")
    # purchase has weight 4 recorded in extract_stats.json; interaction 1 and click 2 are defaults
    assert ev.weight.tolist() == [8.0, 3.0, 2.0]
    assert ev.session_id.isna().all()
    assert snap.entity_features("startup_developer") is None and snap.impressions("startup_developer") is None
    with pytest.raises(ConfigError, match="imported for use case 'startup_developer'"):
        snap.events("startup_investor")


def test_imported_feature_tables_indexed_by_id(tmp_path):
    ef = pd.DataFrame({"entity_id": ["u1", "u2"], "city": ["x", "y"]})
    cf = pd.DataFrame({"item": ["c1"], "tags": [["a", "b"]]})  # id column not named: the first column
    uri = events_snapshot(tmp_path / "ev", [("u1", "c1", 1.0, "interaction", 1.0)], entity_features=ef,
                          candidate_features=cf)
    snap = load_snapshot(uri)
    assert snap.entity_features("startup_developer").loc["u2", "city"] == "y"
    cands = snap.candidate_features("startup_developer")
    assert cands.index.name == "candidate_id" and list(cands.loc["c1", "tags"]) == ["a", "b"]


def test_event_without_weight_override_via_env(tmp_path, monkeypatch):
    uri = events_snapshot(tmp_path / "ev", [("u1", "c1", 1.0, "click", 1.0)])
    monkeypatch.setenv("RECS_EVENT_WEIGHTS", '{"click": 7}')
    assert load_snapshot(uri).events("startup_developer").weight.tolist() == [7.0]
    assert load_snapshot(uri, event_weights={"click": 0.5}).events("startup_developer").weight.tolist() == [0.5]


def test_bad_snapshots(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_snapshot(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither app tables"):
        load_snapshot(str(tmp_path / "empty"))
    path = tmp_path / "nousers"
    write(path, "startups", [dict(startup_id="s1")])
    write(path, "users", [dict(user_id="u1", role="developer")])
    write(path, "user_interactions", [dict(user_id="u1", startup_id="s1", event="view", ts=day(1))])
    snap = load_snapshot(str(path))
    with pytest.raises(DataError, match="no 'startup_interactions' table"):
        snap.events("startup_developer")
    with pytest.raises(ConfigError, match="unknown use case"):
        snap.events("nope")


def test_positive_events_by_source():
    from startup_recs.data.snapshot import positive_events

    assert positive_events("startup_developer", ["view", "click", "contact", "apply_received"], False) == [
        "contact", "apply_received"]
    assert positive_events("startup_investor", ["view", "click"], False) == []  # app data: no fallback
    assert positive_events("startup_developer", ["view", "purchase", "interaction"], True) == ["interaction", "purchase"]
    assert positive_events("startup_developer", ["view"], True) == ["view"]
    assert positive_events("startup_developer", ["contact", "purchase"], True) == ["contact"]
