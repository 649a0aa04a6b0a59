"""``recs serve --log-sessions`` into a SQLite app database: every legacy, V1 and V2 answer is one
``recommendation_sessions`` row with one ``impressions`` row per returned candidate; the session id
is in the answer (the client's own when it names one); rows are flushed on shutdown; extract
reads them back with the served model version, and the next dataset build takes the shown and
not-acted candidates as hard negatives. PostgreSQL and an outage: test_session_logging_pg.py."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time

import httpx
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from startup_recs.serving.data import ServingData
from tests.integration.predictor_support import Server, build_models_dir, publish

SD = "startup_developer"
LEGACY = "/api/recommendations/developers/for-startup/"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_db: str, tiny_snapshot: str) -> dict:
    root = tmp_path_factory.mktemp("sessions")
    db = root / "app.db"
    shutil.copy(tiny_db, db)  # the app database the predictor logs into (and extract reads)
    models = build_models_dir(tiny_snapshot, SD, root / "work", two_tower=False)
    publish(models, str(root / "published"), SD)
    data = ServingData.load(str(models / "serving"))
    ents = sorted(data.entity_counts, key=lambda e: (-data.entity_counts[e], e))
    return {"root": root, "db": db, "url": f"sqlite:///{db}", "published": root / "published", "entities": ents}


def _metric(text: str, name: str) -> float:
    values = [float(m.group(1)) for m in re.finditer(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M)]
    return sum(values)


def _rows(url: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            sess = pd.read_sql("select session_id, entity_id, use_case, ts from recommendation_sessions "
                               "where ts >= '2026-11-01'", conn)
            imp = pd.read_sql("select i.session_id, candidate_id, position, model_version from impressions i join "
                              "recommendation_sessions s on s.session_id = i.session_id where s.ts >= '2026-11-01'",
                              conn)
    finally:
        engine.dispose()
    return sess, imp


def test_every_answer_is_one_session_with_its_impressions(world: dict) -> None:
    e = world["entities"]
    srv = Server.recs_serve([str(world["published"])], world["root"] / "serve.log", "--reload-interval", "0",
                            "--log-sessions", world["url"])
    shown: dict[str, tuple[str, list[str]]] = {}  # session id -> (entity, candidates in order)
    try:
        srv.wait_ready("startup-developer")
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for ent in e[:3]:  # legacy
                body = c.get(LEGACY + ent, params={"limit": 5}).json()
                shown[body["session_id"]] = (ent, [x["id"] for x in body["candidates"]])
            body = c.get(LEGACY + e[3], params={"limit": 4, "session_id": "web-7f3a"}).json()  # the client's id
            assert body["session_id"] == "web-7f3a"
            shown["web-7f3a"] = (e[3], [x["id"] for x in body["candidates"]])
            preds = c.post("/v1/models/startup-developer:predict",
                           json={"instances": [{"startup_id": e[4], "limit": 3}, {"startup_id": e[5], "limit": 6}]}
                           ).json()["predictions"]
            assert len({p["session_id"] for p in preds}) == 2  # one session per instance
            shown.update({p["session_id"]: (p["entity_id"], [x["id"] for x in p["candidates"]]) for p in preds})
            one = c.post("/v1/models/startup-developer:predict", headers={"X-Session-Id": "app-0001"},
                         json={"instances": [{"startup_id": e[6], "limit": 2}]}).json()["predictions"][0]
            assert one["session_id"] == "app-0001"
            shown["app-0001"] = (e[6], [x["id"] for x in one["candidates"]])
            v2 = c.post("/v2/models/startup-developer/infer", json={"inputs": [
                {"name": "entity_id", "datatype": "BYTES", "shape": [2], "data": [e[7], e[8]]},
                {"name": "limit", "datatype": "INT32", "shape": [1], "data": [5]}]}).json()
            out = {o["name"]: o["data"] for o in v2["outputs"]}
            for i, sid in enumerate(out["session_id"]):
                shown[sid] = ([e[7], e[8]][i], out["candidate_ids"][i * 5:(i + 1) * 5])
            assert c.get("/v2/models/startup-developer").json()["outputs"][-1]["name"] == "session_id"
            # a client session id names one session: not for a batch; malformed ones are refused
            r = c.post("/v1/models/startup-developer:predict", params={"session_id": "x1"},
                       json={"instances": [{"startup_id": e[0]}, {"startup_id": e[1]}]})
            assert r.status_code == 400 and "one session" in r.json()["error"]
            assert c.get(LEGACY + e[0], params={"session_id": "not valid!"}).status_code == 400
            assert c.get(LEGACY + e[0], params={"session_id": "a1"}, headers={"X-Session-Id": "b2"}).status_code == 400
            deadline = time.monotonic() + 10  # the writer flushes within a second
            while _metric(c.get("/metrics").text, "recs_sessions_logged_total") < len(shown):
                assert time.monotonic() < deadline, "sessions were not written"
                time.sleep(0.2)
            assert _metric(c.get("/metrics").text, "recs_sessions_dropped_total") == 0
            for ent in e[:2]:  # answered just before shutdown: flushed by the shutdown, not the timer
                body = c.get(LEGACY + ent, params={"limit": 2}).json()
                shown[body["session_id"]] = (ent, [x["id"] for x in body["candidates"]])
    finally:
        srv.stop()
    assert len(shown) == 11
    sess, imp = _rows(world["url"])
    assert sorted(sess["session_id"]) == sorted(shown)  # N answers -> N sessions
    assert set(sess["use_case"]) == {SD}
    assert dict(zip(sess["session_id"], sess["entity_id"], strict=True)) == {k: v[0] for k, v in shown.items()}
    for sid, (_, cands) in shown.items():
        rows = imp[imp["session_id"] == sid].sort_values("position")
        assert rows["candidate_id"].tolist() == cands and rows["position"].tolist() == list(range(len(cands)))
    assert set(imp["model_version"]) == {"v1"}
    world["shown"] = shown


def test_extract_reads_the_logged_impressions_and_the_next_dataset_takes_them_as_hard_negatives(world: dict) -> None:
    from startup_recs.data import appdb
    from startup_recs.data.extract import extract_db
    from startup_recs.data.snapshot import load_snapshot
    from startup_recs.datasets.two_tower import build_two_tower

    shown = world.get("shown") or pytest.skip("needs the serving test's sessions")
    snap_dir = world["root"] / "snapshot"
    extract_db(world["url"], str(snap_dir))
    # after being shown, a startup acts on other candidates: its sessions' part has positives. It is
    # one that was shown candidates it never interacted with (a viewed one may be recommended again)
    snap = load_snapshot(str(snap_dir))
    ev = snap.events(SD)

    def fresh(item: tuple[str, list[str]]) -> int:
        return len(set(item[1]) - set(ev.loc[ev["entity_id"] == item[0], "candidate_id"]))

    ent, cands = max(shown.values(), key=fresh)
    assert fresh((ent, cands)) > 0
    acted = set(ev.loc[ev["entity_id"] == ent, "candidate_id"])
    others = [u for u in snap.known_ids(SD, "candidate") if u not in set(cands) | acted][:2]
    t = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    appdb.insert_rows(world["url"], {"startup_interactions": pa.table({
        "startup_id": [ent, ent], "user_id": others, "event": ["contact", "contact"], "ts": [t, t],
        "session_id": [None, None]})})
    stats = extract_db(world["url"], str(snap_dir))  # incremental: the new events only
    assert stats["runs"][-1]["appended"]["startup_interactions"] == 2
    snap = load_snapshot(str(snap_dir))
    imps = snap.table("impressions")
    logged = imps[imps["session_id"].isin(list(shown))]
    assert len(logged) == sum(len(c) for _, c in shown.values())
    assert set(logged["model_version"]) == {"v1"}  # the served bundle's version
    view = snap.impressions(SD)
    assert set(view.loc[view["entity_id"] == ent, "candidate_id"]) >= set(cands)
    out = world["root"] / "tt.parquet"
    build_two_tower(str(snap_dir), SD, str(out), split_at="2026-06-01", negative_samples=50)
    df = pd.read_parquet(out)
    hard = df[(df["entity_id"] == ent) & (df["neg_type"] == "hard") & (df["ts"] >= pd.Timestamp("2026-11-01", tz="UTC"))]
    shown_to_ent = {c for e2, cs in shown.values() if e2 == ent for c in cs} - acted
    assert len(hard) and set(hard["candidate_id"]) <= shown_to_ent  # hard negatives from the logged sessions
    assert set(hard["split"]) == {"test"}
