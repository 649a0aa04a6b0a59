"""Session logging core: the bounded queue and its writer thread (a scripted sink), the SQLite and
Parquet sinks, session id rules. The real predictor and PostgreSQL: tests/integration/test_session_logging.py."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from startup_recs.serving.api import InvalidRequest
from startup_recs.serving.session_sinks import ParquetSink, SqlSink, open_sink
from startup_recs.serving.sessions import Session, SessionLog, check_session_id, new_session_id

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def _session(i: int, n: int = 3) -> Session:
    return Session(f"s{i:05d}", f"e{i % 7}", "startup_developer", T0 + dt.timedelta(seconds=i), "v3",
                   tuple(f"c{i}_{p}" for p in range(n)))


class ScriptedSink:
    """Fails while ``down`` is set; records what it was given."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.batches: list[list[Session]] = []
        self.calls = 0

    def write(self, sessions):
        self.calls += 1
        if self.down.is_set():
            raise ConnectionError("connection refused")
        self.batches.append(list(sessions))
        return []

    def describe(self) -> str:
        return "scripted"

    def close(self) -> None:
        pass


def _wait(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_sessions_are_written_in_batches_off_the_calling_thread() -> None:
    sink = ScriptedSink()
    logged: list[int] = []
    slog = SessionLog(sink, batch_size=4, flush_interval_s=0.05, on_logged=lambda b: logged.append(len(b))).start()
    for i in range(10):
        assert slog.record(_session(i))
    _wait(lambda: slog.logged == 10)
    assert [s.session_id for b in sink.batches for s in b] == [f"s{i:05d}" for i in range(10)]  # order kept
    assert max(len(b) for b in sink.batches) <= 4 and sum(logged) == 10
    slog.close()
    assert slog.dropped == 0


def test_an_outage_keeps_rows_up_to_the_bound_drops_the_rest_and_logs_once(caplog) -> None:
    sink = ScriptedSink()
    dropped: list[int] = []
    slog = SessionLog(sink, max_pending=5, batch_size=2, flush_interval_s=0.02, retry_s=0.02, max_retry_s=0.05,
                      on_dropped=lambda b: dropped.append(len(b))).start()
    sink.down.set()
    with caplog.at_level(logging.WARNING, logger="startup_recs.serving.sessions"):
        accepted = [slog.record(_session(i)) for i in range(12)]
        _wait(lambda: sink.calls >= 4)  # several failed attempts ...
        assert accepted == [True] * 5 + [False] * 7  # ... the bound holds 5, the rest is dropped at once
        assert slog.dropped == 7 and sum(dropped) == 7 and slog.pending == 5
        sink.down.clear()
        _wait(lambda: slog.logged == 5)
    outage = [r for r in caplog.records if "failed" in r.getMessage()]
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(outage) == 1 and len(back) == 1  # one line per outage, not per attempt or request
    assert "7 sessions dropped" in back[0].getMessage()
    assert slog.record(_session(99))  # writing resumed
    _wait(lambda: slog.logged == 6)
    slog.close()


def test_close_flushes_what_is_queued_and_counts_what_cannot_be_written() -> None:
    sink = ScriptedSink()
    slog = SessionLog(sink, batch_size=100, flush_interval_s=30.0).start()  # would wait 30 s
    for i in range(7):
        slog.record(_session(i))
    slog.close(timeout_s=5)
    assert slog.logged == 7 and sum(len(b) for b in sink.batches) == 7
    assert not slog.record(_session(8))  # closed: dropped, never queued

    down = ScriptedSink()
    down.down.set()
    slog = SessionLog(down, batch_size=100, flush_interval_s=30.0).start()
    for i in range(3):
        slog.record(_session(i))
    slog.close(timeout_s=5)
    assert slog.logged == 0 and slog.dropped == 3


def test_sqlite_sink_writes_sessions_and_impressions_in_one_transaction(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    sink = open_sink(url)
    assert isinstance(sink, SqlSink)
    assert sink.write([_session(i, n=i) for i in range(4)]) == []  # creates the two tables on first use
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        sessions = conn.execute(sa.text("select session_id, entity_id, use_case, ts from recommendation_sessions "
                                        "order by session_id")).all()
        imps = conn.execute(sa.text("select session_id, candidate_id, position, model_version from impressions "
                                    "order by session_id, position")).all()
    assert [r[0] for r in sessions] == ["s00000", "s00001", "s00002", "s00003"]
    assert sessions[1][3].startswith("2026-06-01 12:00:01")  # UTC text, as the app database stores it
    assert imps == [("s00001", "c1_0", 0, "v3"), ("s00002", "c2_0", 0, "v3"), ("s00002", "c2_1", 1, "v3"),
                    ("s00003", "c3_0", 0, "v3"), ("s00003", "c3_1", 1, "v3"), ("s00003", "c3_2", 2, "v3")]
    # a reused session id: that session is refused, the rest of its batch is written
    assert [s.session_id for s in sink.write([_session(1), _session(10)])] == ["s00001"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from recommendation_sessions")).scalar() == 5
    engine.dispose()
    sink.close()


def test_parquet_sink_writes_contract_parts(tmp_path: Path) -> None:
    sink = open_sink(str(tmp_path / "sessions"))
    assert isinstance(sink, ParquetSink)
    sink.write([_session(i) for i in range(3)])
    sess = pq.read_table(tmp_path / "sessions" / "recommendation_sessions")
    imp = pq.read_table(tmp_path / "sessions" / "impressions")
    assert sess.num_rows == 3 and imp.num_rows == 9
    assert sess.schema.field("ts").type.tz == "UTC" and set(imp.column("model_version").to_pylist()) == {"v3"}


def test_session_ids() -> None:
    sid = new_session_id()
    assert len(sid) == 32 and check_session_id(sid) == sid
    assert check_session_id("web-42:a.b_c") == "web-42:a.b_c"
    for bad in ("", "x" * 33, "has space", "-leading", "123e4567-e89b-12d3-a456-426614174000", 7, None):
        with pytest.raises(InvalidRequest, match="session_id"):
            check_session_id(bad)


def test_extract_reads_parquet_session_parts_incrementally(tmp_path: Path, tiny_db: str) -> None:
    from startup_recs.data.extract import extract_db, import_events
    from startup_recs.data.snapshot import load_snapshot

    parts = str(tmp_path / "logged")
    sink = ParquetSink(parts)
    late = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    first = [Session(f"p{i}", "s000001", "startup_developer", late + dt.timedelta(minutes=i), "v2",
                     ("u0000001", "u0000002")) for i in range(3)]
    sink.write(first)
    snap = str(tmp_path / "snap")
    extract_db(tiny_db, snap, sessions_uri=parts)
    imp = load_snapshot(snap).table("impressions")
    assert set(imp.loc[imp["model_version"] == "v2", "session_id"]) == {"p0", "p1", "p2"}
    sink.write([Session("p9", "s000002", "startup_developer", late + dt.timedelta(hours=1), "v3", ("u0000003",))])
    stats = extract_db(tiny_db, snap, sessions_uri=parts)  # only the new part's rows
    assert stats["runs"][-1]["appended"]["recommendation_sessions"] == 1
    assert stats["runs"][-1]["appended"]["impressions"] == 1
    s = load_snapshot(snap)
    assert not s.table("recommendation_sessions")["session_id"].duplicated().any()
    view = s.impressions("startup_developer")
    assert view.loc[view["session_id"] == "p9", "candidate_id"].tolist() == ["u0000003"]

    # an imported log: the parts become its sessions and impressions
    import pyarrow as pa

    log = tmp_path / "log.parquet"
    pq.write_table(pa.table({"entity_id": ["s000001", "s000002"], "candidate_id": ["u0000009", "u0000008"],
                             "ts": [late, late], "event": ["contact", "view"]}), log)
    imported = str(tmp_path / "imported")
    import_events(str(log), imported, "startup_developer", sessions_uri=parts)
    view = load_snapshot(imported).impressions("startup_developer")
    assert set(view["session_id"]) == {"p0", "p1", "p2", "p9"}
