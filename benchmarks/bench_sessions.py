"""Session logging cost (``recs serve --log-sessions``): what it adds to one answer, and how fast
the background writer empties the queue.

1. Request path: ``predictors.session_log.stamp`` (session id, answer copy, ``SessionLog.record``)
   on a ``Recommender``-shaped answer of ``--limit`` candidates, timed per call; with the writer
   thread idle and while it flushes into SQLite (the GIL is shared), beside the time of a 100k x 64
   exact retrieval (the work of one answer at 100k candidates) for scale.
2. Writer: sessions per second into a SQLite file (and ``--pg URL``), batches of 500.

    .venv/bin/python benchmarks/bench_sessions.py [--calls 20000] [--limit 10] [--pg postgresql+psycopg://...]

Prints one JSON line and a table; the target is <= 0.3 ms added at p50 per answer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]


class _NullSink:
    def write(self, sessions):  # noqa: ANN001, ANN201 - the protocol's signature
        return []

    def describe(self) -> str:
        return "null"

    def close(self) -> None:
        return None


def _answer(limit: int) -> dict:
    return {"entity_id": "s000001", "model_version": "v3", "method_used": "hot:two_tower", "segment": "hot",
            "reranked": True, "interaction_count": 30, "total": limit,
            "candidates": [{"id": f"u{i:07d}", "score": 1.0 - i / 100, "rank": i + 1, "match_reasons": ["skills: py"]}
                           for i in range(limit)]}


def stamp_us(slog, answer: dict, calls: int) -> list[float]:
    from predictors.session_log import stamp

    out = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        stamp(slog, "startup_developer", [answer], None, "v3")
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def writer_rate(sink, n: int, limit: int) -> float:
    from startup_recs.serving.sessions import Session

    now = dt.datetime.now(dt.UTC)
    sessions = [Session(f"b{i:08d}", f"s{i % 500:06d}", "startup_developer", now, "v3",
                        tuple(f"u{j:07d}" for j in range(limit))) for i in range(n)]
    t = time.perf_counter()
    for lo in range(0, n, 500):
        sink.write(sessions[lo:lo + 500])
    return n / (time.perf_counter() - t)


def pg_rate(url: str, n: int, limit: int) -> float:
    """:func:`writer_rate` into a schema of its own on ``url``, dropped afterwards."""
    import sqlalchemy as sa

    from startup_recs.serving.session_sinks import SqlSink

    engine = sa.create_engine(url)
    name = f"bench_sessions_{os.getpid()}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'create schema "{name}"'))
    try:
        sink = SqlSink(engine.url.update_query_dict({"options": f"-csearch_path={name}"})
                       .render_as_string(hide_password=False))
        rate = writer_rate(sink, n, limit)
        sink.close()
        return rate
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop schema "{name}" cascade'))
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--sessions", type=int, default=10_000, help="sessions the writer benchmark writes")
    ap.add_argument("--pg", default=None, help="also time the writer into this PostgreSQL database")
    args = ap.parse_args()

    import numpy as np

    from startup_recs.serving.session_sinks import SqlSink
    from startup_recs.serving.sessions import SessionLog

    answer = _answer(args.limit)
    idle = SessionLog(_NullSink(), max_pending=args.calls + 1, flush_interval_s=3600).start()
    quiet = stamp_us(idle, answer, args.calls)
    idle.close()
    work = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    busy = SessionLog(SqlSink(f"sqlite:///{work / 'app.db'}"), max_pending=args.calls + 1, batch_size=500,
                      flush_interval_s=0.05).start()
    loaded = stamp_us(busy, answer, args.calls)  # the writer flushes into SQLite meanwhile
    busy.close(timeout_s=60)
    rng = np.random.default_rng(0)
    cand = rng.normal(size=(100_000, 64)).astype(np.float32)
    vec = rng.normal(size=64).astype(np.float32)
    t = []
    for _ in range(50):
        t0 = time.perf_counter_ns()
        s = cand @ vec
        np.argpartition(-s, 200)[:200]
        t.append((time.perf_counter_ns() - t0) / 1000)
    rates = {"sqlite": writer_rate(SqlSink(f"sqlite:///{work / 'rate.db'}"), args.sessions, args.limit)}
    if args.pg:
        rates["postgresql"] = pg_rate(args.pg, args.sessions, args.limit)
    row = {"limit": args.limit, "calls": args.calls,
           "stamp_p50_us": statistics.median(quiet), "stamp_p99_us": float(np.percentile(quiet, 99)),
           "stamp_p50_us_writer_busy": statistics.median(loaded),
           "stamp_p99_us_writer_busy": float(np.percentile(loaded, 99)),
           "retrieval_100k_p50_us": statistics.median(t), "writer_sessions_per_s": rates,
           "logged": busy.logged, "dropped": busy.dropped, "loadavg": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(row))
    print(f"| {'added per answer':<34} | {'p50 µs':>8} | {'p99 µs':>8} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|")
    print(f"| {'stamp + queue, writer idle':<34} | {row['stamp_p50_us']:>8.1f} | {row['stamp_p99_us']:>8.1f} |")
    print(f"| {'stamp + queue, writer into SQLite':<34} | {row['stamp_p50_us_writer_busy']:>8.1f} | "
          f"{row['stamp_p99_us_writer_busy']:>8.1f} |")
    print(f"| {'(one 100k x 64 retrieval, for scale)':<34} | {row['retrieval_100k_p50_us']:>8.1f} | {'':>8} |")
    print("writer: " + ", ".join(f"{k} {v:,.0f} sessions/s ({args.limit} impressions each)" for k, v in rates.items()))
    print("target: <= 300 µs added at p50")


if __name__ == "__main__":
    main()
