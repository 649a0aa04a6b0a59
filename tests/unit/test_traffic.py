"""recs simulate-traffic (startup_recs.synth.traffic): the world check, determinism for a seed,
the virtual calendar after the data, baseline sessions and events linked to them."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import sqlalchemy as sa

from startup_recs.cli import main as recs
from startup_recs.core.errors import ConfigError
from startup_recs.synth import examination, read_meta, traffic
from startup_recs.synth.world import EXAM_POWER


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("traffic") / "tiny.db"
    assert recs(["synth", "--db", str(path), "--size", "tiny", "--seed", "0"]) == 0
    return path


def copy(tiny_db, tmp_path, name: str) -> str:
    dst = tmp_path / name
    shutil.copy(tiny_db, dst)
    return f"sqlite:///{dst}"


def read(url: str, sql: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return pd.read_sql(sa.text(sql), conn)
    finally:
        engine.dispose()


NEW_EVENTS = ("SELECT startup_id, user_id, event, ts, session_id FROM startup_interactions "
              "WHERE ts > '2026-06-30' ORDER BY id")


def test_synth_records_its_world_and_the_simulator_checks_it(tiny_db, tmp_path):
    meta = read_meta(f"sqlite:///{tiny_db}")
    assert (meta["size"], meta["seed"]) == ("tiny", 0)
    url = copy(tiny_db, tmp_path, "a.db")
    with pytest.raises(ConfigError, match="--size tiny --seed 0, not --size tiny --seed 1"):
        traffic.prepare(url, "tiny", 1, "startup_developer")
    assert examination([0, 1, 3]).tolist() == pytest.approx([1.0, 2 ** -EXAM_POWER, 4 ** -EXAM_POWER])


def test_same_seed_same_rows_other_seed_differs(tiny_db, tmp_path):
    runs = {}
    for name, tseed in (("a", 0), ("b", 0), ("c", 1)):
        url = copy(tiny_db, tmp_path, f"{name}.db")
        ctx = traffic.prepare(url, "tiny", 0, "startup_developer", traffic_seed=tseed)
        summary = traffic.run(ctx, traffic.PolicySource(ctx, "random"), 300, days=3)
        runs[name] = (summary, read(url, NEW_EVENTS),
                      read(url, "SELECT * FROM impressions WHERE model_version = 'random' ORDER BY session_id, position"))
    (sa_, ev_a, im_a), (sb, ev_b, im_b), (_, ev_c, im_c) = runs["a"], runs["b"], runs["c"]
    sa_.pop("serve_seconds"), sb.pop("serve_seconds")
    assert sa_ == sb and ev_a.equals(ev_b) and im_a.equals(im_b)
    assert not im_a["candidate_id"].equals(im_c["candidate_id"]) and not ev_a.equals(ev_c)
    assert sa_["sessions"] == 300 and sa_["impressions"] == 3000 and len(im_a) == 3000
    assert sa_["events"]["view"] > sa_["events"]["click"] > sa_["events"].get("contact", 0) > 0


def test_calendar_continues_after_the_data_and_events_link_to_their_sessions(tiny_db, tmp_path):
    url = copy(tiny_db, tmp_path, "cal.db")
    last = traffic.last_event_us(url)
    ctx = traffic.prepare(url, "tiny", 0, "startup_developer")
    traffic.run(ctx, traffic.PolicySource(ctx, "popularity"), 200, days=2)
    sessions = read(url, "SELECT session_id, entity_id, ts FROM recommendation_sessions WHERE session_id LIKE 'pop-%'")
    ts = pd.to_datetime(sessions["ts"], utc=True, format="mixed")
    assert len(sessions) == 200 and ts.min().value // 1000 > last
    assert (ts.max() - ts.min()) <= pd.Timedelta(days=2)
    ev = read(url, NEW_EVENTS)
    assert len(ev) and ev["session_id"].isin(sessions["session_id"]).all()
    assert pd.to_datetime(ev["ts"], utc=True, format="mixed").min().value // 1000 > last
    joined = ev.merge(sessions, on="session_id")
    assert (joined["startup_id"] == joined["entity_id"]).all()
    # popularity shows the same (most popular) candidates to everyone
    imp = read(url, "SELECT candidate_id, position FROM impressions WHERE model_version = 'popularity'")
    assert imp.groupby("position")["candidate_id"].nunique().max() <= 2
    # a second run continues after the first
    ctx2 = traffic.prepare(url, "tiny", 0, "startup_developer")
    assert ctx2.start_us > ts.max().value // 1000


def test_predictor_source_reads_v1_answers(tiny_db, tmp_path, monkeypatch):
    """The HTTP source on canned answers: sessions, versions, arms; unknown entities skipped."""
    url = copy(tiny_db, tmp_path, "p.db")
    ctx = traffic.prepare(url, "tiny", 0, "startup_developer")
    src = traffic.PredictorSource("http://127.0.0.1:1", ctx.use_case)
    users = [str(u) for u in ctx.world.U.ids[ctx.world.dev[:10]]]

    def fake_post(body):
        import json

        inst = json.loads(body)["instances"]
        preds = [{"entity_id": i["entity_id"], "error": "unknown"} if i["entity_id"] == "s000001" else
                 {"recommendation_session_id": f"r{i['entity_id']}", "model_version": "v2",
                  "experiment": {"name": "x", "arm": "treatment"}, "candidates": [{"id": u} for u in users]}
                 for i in inst]
        return 200, {}, json.dumps({"predictions": preds}).encode()

    monkeypatch.setattr(src, "_post", fake_post)
    out = src.serve(["s000000", "s000001"], [0, 0], 10)
    assert out[1] is None and src.unknown == 1
    assert out[0].session_id == "rs000000" and out[0].model_version == "v2" and out[0].candidates == users
    assert out[0].experiment == {"name": "x", "arm": "treatment"}
    assert traffic._batches(["a", "b", "a", "c", "d"], 3) == [(0, 2), (2, 5)]
