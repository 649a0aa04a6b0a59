"""``--log-sessions`` into PostgreSQL, through a TCP proxy on loopback that the test stops and
starts (the shared server itself is never touched): N answers -> N sessions with their
impressions; while the database is unreachable every answer still succeeds, sessions wait up to
``--session-queue`` and then count as dropped (``recs_sessions_dropped_total``), with one log line
for the outage; once the proxy is back, logging resumes. Fails instead of skipping under
``RECS_REQUIRE_SERVICES=1`` (the ``pg_url`` fixture)."""

from __future__ import annotations

import re
import time

import httpx
import sqlalchemy as sa

from startup_recs.serving.data import ServingData
from tests.integration.predictor_support import Server, build_models_dir, publish
from tests.integration.tcp_proxy import TcpProxy

SD = "startup_developer"
LEGACY = "/api/recommendations/developers/for-startup/"
QUEUE = 8  # sessions that may wait (--session-queue)


def _metric(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M))


def _wait(fn, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_logging_survives_a_database_outage(pg_url: str, tiny_snapshot: str, tmp_path) -> None:
    url = sa.engine.make_url(pg_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432)).start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    models = build_models_dir(tiny_snapshot, SD, tmp_path / "work", two_tower=False)
    publish(models, str(tmp_path / "published"), SD)
    entities = sorted(ServingData.load(str(models / "serving")).entity_counts)[:40]
    srv = Server.recs_serve([str(tmp_path / "published")], tmp_path / "serve.log", "--reload-interval", "0",
                            "--log-sessions", proxied, "--session-queue", str(QUEUE))
    engine = sa.create_engine(pg_url)  # direct, not through the proxy

    def logged() -> int:
        if not sa.inspect(engine).has_table("recommendation_sessions"):  # the sink creates it on its first write
            return 0
        with engine.connect() as conn:
            return int(conn.execute(sa.text("select count(*) from recommendation_sessions")).scalar())

    try:
        srv.wait_ready("startup-developer")
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            def ask(ent: str, limit: int = 3) -> str:
                r = c.get(LEGACY + ent, params={"limit": limit})
                assert r.status_code == 200, r.text
                return r.json()["session_id"]

            first = [ask(e) for e in entities[:6]]  # fewer than the queue holds
            _wait(lambda: logged() == 6, "the first sessions were not written")
            with engine.connect() as conn:
                rows = conn.execute(sa.text("select session_id, count(*), min(position), max(position), "
                                            "min(model_version) from impressions group by session_id")).all()
            assert sorted(r[0] for r in rows) == sorted(first)
            assert all(r[1] == 3 and r[2] == 0 and r[3] == 2 and r[4] == "v1" for r in rows)

            proxy.stop()  # the database is gone for the predictor
            during = [ask(e) for e in entities[6:26]]  # answers keep succeeding
            assert len(set(during)) == 20
            _wait(lambda: _metric(c.get("/metrics").text, "recs_sessions_dropped_total") >= 20 - QUEUE,
                  "the drop counter did not move")
            _wait(lambda: "session log: writing to" in srv.log(), "the writer did not try the sink")
            dropped = _metric(c.get("/metrics").text, "recs_sessions_dropped_total")
            assert dropped == 20 - QUEUE  # the queue held QUEUE sessions, the rest were dropped at once
            assert logged() == 6

            proxy.start()  # back: the sessions that waited are written, then new ones
            _wait(lambda: logged() == 6 + QUEUE, "the waiting sessions were not written")
            after = [ask(e) for e in entities[26:31]]
            _wait(lambda: logged() == 6 + QUEUE + 5, "logging did not resume")
            with engine.connect() as conn:
                ids = {r[0] for r in conn.execute(sa.text("select session_id from recommendation_sessions"))}
            assert set(first) | set(after) <= ids
            assert len(ids & set(during)) == QUEUE  # the ones that waited in the queue
            text = c.get("/metrics").text
            assert _metric(text, "recs_sessions_logged_total") == len(ids)
    finally:
        srv.stop()
        proxy.stop()
        engine.dispose()
    log = srv.log_path.read_text(errors="replace")
    assert log.count("session log: writing to") == 1, log  # one line per outage, not per request
    assert "reachable again" in log


def test_postgres_sink_copies_a_batch_and_refuses_only_a_reused_id(pg_url: str) -> None:
    import datetime as dt

    from startup_recs.serving.session_sinks import SqlSink
    from startup_recs.serving.sessions import Session

    t = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    batch = [Session(f"k{i}", "s000001", "startup_developer", t, "v2", ("u1", "u2")) for i in range(50)]
    sink = SqlSink(pg_url)
    assert sink.write(batch) == []  # one COPY per table
    again = sink.write([batch[3], Session("k99", "s000002", "startup_developer", t, "v2", ("u3",))])
    assert [s.session_id for s in again] == ["k3"]  # the batch falls back to one session at a time
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from recommendation_sessions")).scalar() == 51
        rows = conn.execute(sa.text("select position, candidate_id, model_version from impressions "
                                    "where session_id = 'k7' order by position")).all()
        ts = conn.execute(sa.text("select ts from recommendation_sessions where session_id = 'k0'")).scalar()
    engine.dispose()
    sink.close()
    assert rows == [(0, "u1", "v2"), (1, "u2", "v2")] and ts == t
