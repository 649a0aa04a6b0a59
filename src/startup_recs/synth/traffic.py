"""``recs simulate-traffic``: the planted world answers the slates a predictor (or a baseline) shows.

What: the world of ``--size/--seed`` is rebuilt (:func:`~startup_recs.synth.affinity.build_world`;
the database's ``synth_meta`` must name the same world). ``--sessions K`` sessions are drawn from
the use case's entities, weighted by the activity ``synth`` gives them
(:func:`~startup_recs.synth.sessions.session_activity`), at times spread over ``--days`` of a
*virtual calendar* that continues the data: it starts one hour after the database's newest event
(interactions and sessions), so a second run continues after the first. Each session asks a slate
of ``--limit`` (default 10) candidates from

* a running predictor (``--url``): V1 ``:predict`` batches of distinct entities; the predictor logs
  the session and its impressions itself (``recs serve --log-sessions``) and returns its
  session id (``session_id`` in each answer); or
* a baseline (``--policy random|popularity``): uniformly random candidates that exist at that time,
  or the most popular ones (summed event weights per candidate in the use case's log, the
  popularity retriever's definition); the simulator logs these sessions and impressions itself,
  ``model_version`` = the policy name.

The world's response is :func:`~startup_recs.synth.sessions.respond`, the sessions' own model:
examination ``1 / (1 + pos) ** EXAM_POWER``, then the event cascade (view, click, contact /
apply_received) on the true affinity. The events are written to the app database with the slate's
session id (``startup_interactions`` / ``user_interactions``, as ``synth`` writes them).

Time: events are stamped on the virtual calendar (seconds to minutes after their session). The
predictor stamps the sessions it logs with its wall clock, which can sit months away from the
synthetic data (and would leave the pipeline's validation window empty); the simulator moves
those session rows onto the virtual calendar once the predictor has written them.

Determinism: the draws come from ``numpy.random.default_rng([seed, traffic_seed, use case,
calendar start])``, in separate streams for the traffic, the policy and the response: the same
database, arguments and answers give the same rows (a predictor's own session ids aside).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

from startup_recs.core.config import event_weights
from startup_recs.core.errors import ConfigError, RecsError
from startup_recs.core.usecases import USE_CASES, UseCase, get_use_case
from startup_recs.data.appdb import db_url, insert_rows, mask_url
from startup_recs.data.schema import TS
from startup_recs.synth.affinity import World, build_world
from startup_recs.synth.meta import check_meta
from startup_recs.synth.sessions import candidates, respond, session_activity
from startup_recs.synth.world import DAY_US, REVERSE, SLATE

log = logging.getLogger(__name__)

POLICIES = ("random", "popularity")
HOUR_US = 3_600 * 1_000_000


@dataclass
class Slate:
    """One served answer: the session it was logged as, the candidates shown (best first), the
    bundle (or policy) that chose them and the experiment arm, when one ran."""

    session_id: str
    entity_id: str
    candidates: list[str]
    model_version: str
    experiment: dict[str, Any] | None = None


class SlateSource(Protocol):
    """Who chooses the slates. ``logs_sessions``: the source writes the sessions and impressions
    itself (a predictor with ``--log-sessions``); otherwise the simulator writes them."""

    name: str
    logs_sessions: bool

    def serve(self, entity_ids: Sequence[str], times_us: np.ndarray, limit: int) -> list[Slate | None]: ...


@dataclass
class Context:
    """What a run knows about the world and the database (built by :func:`prepare`)."""

    url: str
    world: World
    use_case: UseCase
    start_us: int
    seed: int
    traffic_seed: int
    entity_index: dict[str, int] = field(default_factory=dict)
    candidate_index: dict[str, int] = field(default_factory=dict)

    def rng(self, stream: int) -> np.random.Generator:
        uc = list(USE_CASES).index(self.use_case.name)
        return np.random.default_rng([self.seed, self.traffic_seed, uc, self.start_us // 1_000_000, stream])

    def run_token(self) -> str:
        """8 hex digits naming this run (session ids of the baselines)."""
        key = f"{self.seed}:{self.traffic_seed}:{self.use_case.name}:{self.start_us}"
        return hashlib.sha256(key.encode()).hexdigest()[:8]


# --- the database ---------------------------------------------------------------------------------
def _engine(url: str) -> Any:
    import sqlalchemy as sa

    return sa.create_engine(db_url(url))


def _to_us(value: Any) -> int | None:
    if value is None:
        return None
    import pandas as pd

    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000)


def last_event_us(url: str) -> int:
    """The newest ``ts`` of the interaction tables and the sessions (microseconds, UTC)."""
    import sqlalchemy as sa

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            values = [conn.execute(sa.text(f"SELECT max(ts) FROM {t}")).scalar()  # noqa: S608 - fixed names
                      for t in ("startup_interactions", "user_interactions", "recommendation_sessions")]
    finally:
        engine.dispose()
    found = [v for v in (_to_us(x) for x in values) if v is not None]
    if not found:
        raise ConfigError(f"{mask_url(db_url(url))} holds no events")
    return max(found)


def prepare(url: str, size: str, seed: int, use_case: str, *, traffic_seed: int = 0) -> Context:
    """Check ``synth_meta`` against ``(size, seed)``, rebuild the world and find where the
    calendar continues."""
    url = db_url(url)
    check_meta(url, size, seed)
    uc = get_use_case(use_case)
    w, _ = build_world(size, seed)
    start = last_event_us(url) + HOUR_US
    start -= start % 1_000_000
    ctx = Context(url=url, world=w, use_case=uc, start_us=start, seed=seed, traffic_seed=traffic_seed)
    ent_ids, cand_ids = (w.S.ids, w.U.ids) if uc.name in REVERSE else (w.U.ids, w.S.ids)
    ctx.entity_index = {str(e): i for i, e in enumerate(ent_ids)}
    ctx.candidate_index = {str(c): i for i, c in enumerate(cand_ids)}
    return ctx


def draw_sessions(ctx: Context, n: int, days: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sessions: entity row indices (activity-weighted) and times (us, sorted) in
    ``[start, start + days)`` of the virtual calendar."""
    if n < 1:
        raise ConfigError(f"--sessions must be >= 1, got {n}")
    if days <= 0:
        raise ConfigError(f"--days must be > 0, got {days}")
    rng = ctx.rng(0)
    ents, rate = session_activity(ctx.world, ctx.use_case.name)
    p = np.asarray(rate, dtype=np.float64)
    p /= p.sum()
    pick = ents[rng.choice(len(ents), size=n, p=p)]
    times = ctx.start_us + np.sort((rng.random(n) * days * DAY_US).astype(np.int64))
    return pick, times


# --- slate sources ---------------------------------------------------------------------------------
class PolicySource:
    """A baseline without a predictor: ``random`` or ``popularity`` slates (``model_version`` = name)."""

    logs_sessions = False

    def __init__(self, ctx: Context, policy: str) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"unknown --policy {policy!r}; expected one of: {', '.join(POLICIES)}")
        self.ctx, self.name = ctx, policy
        self._rng = ctx.rng(2)
        cand, _, created = candidates(ctx.world, ctx.use_case.name)
        self._cand, self._created = np.asarray(cand), np.asarray(created)
        self._ids = ctx.world.U.ids if ctx.use_case.name in REVERSE else ctx.world.S.ids
        self._popular = self._popularity() if policy == "popularity" else None
        self._n = 0

    def _popularity(self) -> np.ndarray:
        """Candidate rows (of ``self._cand``) by summed event weight in the use case's log, best first."""
        import sqlalchemy as sa

        uc = self.ctx.use_case
        side = "user_id" if uc.entity_is_startup else "startup_id"
        weights = event_weights()
        engine = _engine(self.ctx.url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.text(
                    f"SELECT {side}, event, count(*) FROM {uc.interactions_table} GROUP BY {side}, event"  # noqa: S608
                )).all()
        finally:
            engine.dispose()
        score: Counter[str] = Counter()
        for cid, event, count in rows:
            score[str(cid)] += weights.get(str(event), 0.0) * int(count)
        pos = {str(self._ids[c]): i for i, c in enumerate(self._cand)}
        value = np.zeros(len(self._cand))
        for cid, s in score.items():
            if cid in pos:
                value[pos[cid]] = s
        return np.argsort(-value, kind="stable")

    def serve(self, entity_ids: Sequence[str], times_us: np.ndarray, limit: int) -> list[Slate | None]:
        out: list[Slate | None] = []
        token = self.ctx.run_token()
        for entity, t in zip(entity_ids, times_us, strict=True):
            alive = self._created <= t
            if self._popular is not None:
                rows = [r for r in self._popular[: limit * 4] if alive[r]][:limit]
            else:
                live = np.flatnonzero(alive)
                rows = self._rng.choice(live, size=min(limit, len(live)), replace=False).tolist()
            sid = f"{self.name[:3]}-{token}-{self._n:08d}"
            self._n += 1
            out.append(Slate(sid, entity, [str(self._ids[self._cand[r]]) for r in rows], self.name))
        return out


class PredictorSource:
    """A running predictor: V1 ``POST /v1/models/<model>:predict`` with up to ``batch`` distinct
    entities per request; 503 (overloaded) is retried after its ``Retry-After``, in smaller batches."""

    logs_sessions = True

    def __init__(self, base_url: str, use_case: UseCase, *, timeout_s: float = 30.0, retries: int = 8) -> None:
        parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"bad --url {base_url!r}: expected http://HOST:PORT")
        self.name = base_url
        self._parts, self._timeout, self._retries = parts, timeout_s, retries
        self._path = f"{parts.path.rstrip('/')}/v1/models/{use_case.model_name}:predict"
        self._conn: http.client.HTTPConnection | None = None
        self.unknown = 0  # entities the predictor does not know (404 per instance)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._parts.hostname, self._parts.port, timeout=self._timeout)
        return self._conn

    def _post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):  # a kept-alive connection the server closed: reconnect once
            conn = self._connection()
            try:
                conn.request("POST", self._path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
            except (ConnectionError, http.client.HTTPException, TimeoutError) as exc:
                self._conn = None
                conn.close()
                if attempt:
                    raise ConfigError(f"predictor {self.name} unreachable: {exc}") from None
        raise AssertionError("unreachable")

    def serve(self, entity_ids: Sequence[str], times_us: np.ndarray, limit: int) -> list[Slate | None]:
        body = json.dumps({"instances": [{"entity_id": e, "limit": limit} for e in entity_ids]}).encode()
        for attempt in range(self._retries + 1):
            status, headers, data = self._post(body)
            if status == 503 and attempt < self._retries:
                if len(entity_ids) > 1:  # overloaded or past the deadline: halve the batch
                    half = len(entity_ids) // 2
                    return (self.serve(entity_ids[:half], times_us[:half], limit)
                            + self.serve(entity_ids[half:], times_us[half:], limit))
                time.sleep(min(float(headers.get("retry-after", "1") or 1), 5.0))
                continue
            break
        if status == 404 and len(entity_ids) == 1:  # a lone unknown entity answers 404
            self.unknown += 1
            return [None]
        if status != 200:
            raise ConfigError(f"predictor {self.name} answered {status}: {data[:300].decode(errors='replace')}")
        predictions = json.loads(data)["predictions"]
        out: list[Slate | None] = []
        for entity, p in zip(entity_ids, predictions, strict=True):
            if "error" in p:
                self.unknown += 1
                out.append(None)
                continue
            sid = p.get("recommendation_session_id") or p.get("session_id")
            if not sid:
                raise ConfigError(f"predictor {self.name} returned no recommendation_session_id: start it with "
                                  "--log-sessions URL of this database")
            out.append(Slate(str(sid), entity, [str(c["id"]) for c in p["candidates"]],
                             str(p.get("model_version")), p.get("experiment")))
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


# --- the run ---------------------------------------------------------------------------------------
def _batches(entity_ids: Sequence[str], size: int) -> list[tuple[int, int]]:
    """Consecutive ``[lo, hi)`` ranges of at most ``size`` sessions with distinct entities (a
    repeated entity in one request would be answered, and logged, once)."""
    out, lo, seen = [], 0, set()
    for i, e in enumerate(entity_ids):
        if e in seen or i - lo >= size:
            out.append((lo, i))
            lo, seen = i, set()
        seen.add(e)
    if lo < len(entity_ids):
        out.append((lo, len(entity_ids)))
    return out


def _session_tables(ctx: Context, slates: list[Slate], times: np.ndarray) -> dict[str, pa.Table]:
    sessions = pa.table({
        "session_id": pa.array([s.session_id for s in slates], pa.string()),
        "entity_id": pa.array([s.entity_id for s in slates], pa.string()),
        "use_case": pa.array([ctx.use_case.name] * len(slates), pa.string()),
        "ts": pa.array(times, pa.int64()).cast(TS),
    })
    rows = [(s.session_id, c, p, s.model_version) for s in slates for p, c in enumerate(s.candidates)]
    impressions = pa.table({
        "session_id": pa.array([r[0] for r in rows], pa.string()),
        "candidate_id": pa.array([r[1] for r in rows], pa.string()),
        "position": pa.array([r[2] for r in rows], pa.int32()),
        "model_version": pa.array([r[3] for r in rows], pa.string()),
    })
    return {"recommendation_sessions": sessions, "impressions": impressions}


def _event_tables(ctx: Context, sim: dict[str, dict[str, np.ndarray]], session_ids: list[str]) -> dict[str, pa.Table]:
    """``respond``'s index arrays -> the app's interaction tables (ids, session id strings)."""
    w = ctx.world
    sid = np.asarray(session_ids + [None], dtype=object)  # index -1 -> None (no session)
    out = {}
    for key, name, first, second in (("rev", "startup_interactions", "startup_id", "user_id"),
                                     ("fwd", "user_interactions", "user_id", "startup_id")):
        ev = sim[key]
        if not len(ev["ts"]):
            continue
        s_ids, u_ids = w.S.ids[ev["s"]], w.U.ids[ev["u"]]
        cols = {"startup_id": s_ids, "user_id": u_ids}
        out[name] = pa.table({
            first: pa.array(cols[first], pa.string()),
            second: pa.array(cols[second], pa.string()),
            "event": pa.array(ev["event"], pa.string()),
            "ts": pa.array(ev["ts"], pa.int64()).cast(TS),
            "session_id": pa.array(sid[ev["session"]], pa.string()),
        })
    return out


def _retime_logged_sessions(ctx: Context, slates: list[Slate], times: np.ndarray, timeout_s: float) -> int:
    """Move the sessions the predictor logged onto the virtual calendar; waits (up to
    ``timeout_s``) until the predictor's session log has written every one of them."""
    import datetime as dt

    import sqlalchemy as sa

    from startup_recs.data.appdb import metadata

    t = metadata().tables["recommendation_sessions"]
    want = {s.session_id: int(u) for s, u in zip(slates, times, strict=True)}
    engine = _engine(ctx.url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            found: set[str] = set()
            ids = list(want)
            with engine.connect() as conn:
                for lo in range(0, len(ids), 500):
                    chunk = ids[lo:lo + 500]
                    found.update(r[0] for r in conn.execute(sa.select(t.c.session_id).where(t.c.session_id.in_(chunk))))
            missing = len(want) - len(found)
            if not missing:
                break
            if time.monotonic() > deadline:
                raise ConfigError(f"the predictor logged {len(found)} of {len(want)} sessions into "
                                  f"{mask_url(ctx.url)} within {timeout_s:.0f} s: is --log-sessions this database?")
            time.sleep(0.5)
        stmt = t.update().where(t.c.session_id == sa.bindparam("sid")).values(ts=sa.bindparam("when"))
        rows = [{"sid": k, "when": dt.datetime.fromtimestamp(v / 1e6, dt.UTC)} for k, v in want.items()]
        with engine.begin() as conn:
            for lo in range(0, len(rows), 1000):
                conn.execute(stmt, rows[lo:lo + 1000])
    finally:
        engine.dispose()
    return len(want)


def run(ctx: Context, source: SlateSource, sessions: int, *, days: float = 7.0, limit: int = SLATE,
        batch: int = 32, log_timeout_s: float = 60.0, write: bool = True) -> dict[str, Any]:
    """Drive ``source`` with ``sessions`` sessions and write the world's response. Returns a
    summary (sessions, impressions, events by type, per model version, the calendar span)."""
    ents, times = draw_sessions(ctx, sessions, days)
    ent_ids = ctx.world.S.ids if ctx.use_case.name in REVERSE else ctx.world.U.ids
    entity_ids = [str(e) for e in ent_ids[ents]]
    served: list[Slate] = []
    served_t: list[int] = []
    t0 = time.perf_counter()
    for lo, hi in _batches(entity_ids, max(1, batch)):
        for slate, t in zip(source.serve(entity_ids[lo:hi], times[lo:hi], limit), times[lo:hi], strict=True):
            if slate is not None:
                served.append(slate)
                served_t.append(int(t))
    serve_s = time.perf_counter() - t0
    # the world's response: one vectorised cascade over every impression
    e_idx, c_idx, pos, t_imp, s_idx = [], [], [], [], []
    unknown = set()
    for i, (s, t) in enumerate(zip(served, served_t, strict=True)):
        for p, c in enumerate(s.candidates):
            ci = ctx.candidate_index.get(c)
            if ci is None:
                unknown.add(c)
                continue
            e_idx.append(ctx.entity_index[s.entity_id])
            c_idx.append(ci)
            pos.append(p)
            t_imp.append(t)
            s_idx.append(i)
    if unknown:
        raise ConfigError(f"{source.name} showed {len(unknown)} candidate(s) this world does not have (e.g. "
                          f"{sorted(unknown)[0]!r}): it serves another marketplace than --size/--seed")
    sim = respond(ctx.rng(1), ctx.world, ctx.use_case.name, np.asarray(e_idx, np.int64), np.asarray(c_idx, np.int64),
                  np.asarray(pos, np.int64), np.asarray(t_imp, np.int64), np.asarray(s_idx, np.int64))
    tables = _event_tables(ctx, sim, [s.session_id for s in served])
    times_arr = np.asarray(served_t, dtype=np.int64)
    if write:
        if source.logs_sessions:
            _retime_logged_sessions(ctx, served, times_arr, log_timeout_s)
        else:
            insert_rows(ctx.url, _session_tables(ctx, served, times_arr))
        if tables:
            insert_rows(ctx.url, tables)
    events: Counter[str] = Counter()
    for tab in tables.values():
        events.update(tab.column("event").to_pylist())
    versions: Counter[str] = Counter(s.model_version for s in served)
    arms: Counter[str] = Counter((s.experiment or {}).get("arm", "-") for s in served)
    import pandas as pd

    return {
        "use_case": ctx.use_case.name, "source": source.name, "sessions": len(served),
        "asked": sessions, "impressions": int(sum(len(s.candidates) for s in served)),
        "events": dict(sorted(events.items())), "model_versions": dict(versions),
        "arms": dict(arms) if any(s.experiment for s in served) else {},
        "calendar": [pd.Timestamp(int(times[0]), unit="us", tz="UTC").isoformat(),
                     pd.Timestamp(int(times[-1]), unit="us", tz="UTC").isoformat()],
        "serve_seconds": round(serve_s, 2), "tables": {k: v.num_rows for k, v in tables.items()},
    }


def cli_simulate_traffic(args: argparse.Namespace) -> int:
    """``recs simulate-traffic --db URL --size S --seed N --use-case UC --sessions K (--url U | --policy P)``."""
    ctx = prepare(args.db, args.size, args.seed, args.use_case, traffic_seed=args.traffic_seed)
    source: Any = PredictorSource(args.url, ctx.use_case) if args.url else PolicySource(ctx, args.policy)
    try:
        summary = run(ctx, source, args.sessions, days=args.days, limit=args.limit, batch=args.batch)
    except RecsError:
        raise
    finally:
        if hasattr(source, "close"):
            source.close()
    if getattr(source, "unknown", 0):
        summary["unknown_entities"] = source.unknown
    print(f"simulated {summary['sessions']} sessions of {ctx.use_case.name} answered by {summary['source']} "
          f"({summary['calendar'][0]} .. {summary['calendar'][1]}) -> {mask_url(ctx.url)}")
    print(json.dumps(summary, sort_keys=True))
    return 0
