"""Session logging: what every answer showed, written off the request path.

One answered recommendation is one *session*: a ``recommendation_sessions`` row (``session_id,
entity_id, use_case, ts``) and one ``impressions`` row per returned candidate (``session_id,
candidate_id, position`` from 0, ``model_version``), the tables of
:func:`startup_recs.data.appdb.metadata` that extract reads back (the ranker's propensities and
the datasets' hard negatives come from them).

Flow::

    request thread --record()--> SessionLog (bounded deque) --batch--> background thread --> Sink.write

:meth:`SessionLog.record` only appends to an in-memory queue (a lock and a deque append, a few
microseconds), never touches the sink. The background thread writes batches of up to
``batch_size`` sessions every ``flush_interval_s`` (sooner once a batch is full). When the sink
fails, the batch stays queued and is retried with a back-off; sessions keep waiting until
``max_pending`` sessions are queued, then new ones are *dropped* (counted, never blocking an
answer). An outage logs one warning when it starts and one line when writing resumes (with how
many sessions were dropped meanwhile), never one per request. :meth:`SessionLog.close` flushes
what is queued (shutdown); what the sink cannot take by then counts as dropped.

The sinks (SQLAlchemy URL of the app database, or a storage URI of Parquet parts) live in
:mod:`startup_recs.serving.session_sinks`; :func:`open_sink` picks one for a ``--log-sessions``
value.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from startup_recs.serving.api import InvalidRequest

log = logging.getLogger(__name__)

# The request header (and, lower-cased, the query parameter name is ``session_id``) a client uses
# to name its own session.
SESSION_HEADER = "x-session-id"
SESSION_PARAM = "session_id"
# The app tables hold session ids as VARCHAR(32): a UUID in its 32-hex form fits, so do the
# client's own ids of at most 32 of these characters.
MAX_SESSION_ID_CHARS = 32
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}")


@dataclass(frozen=True)
class Session:
    """One answer as it will be logged.

    Attributes:
        session_id: at most 32 characters (generated: ``uuid4().hex``).
        entity_id: the entity the answer was for.
        use_case: ``startup_developer`` ...
        ts: when the answer was computed (aware UTC datetime).
        model_version: the bundle that answered (``v3``); every impression carries it.
        candidates: the returned candidate ids, best first (position = index).
    """

    session_id: str
    entity_id: str
    use_case: str
    ts: dt.datetime
    model_version: str
    candidates: tuple[str, ...]


def new_session_id() -> str:
    """A fresh session id: a random UUID in its 32-hex-digit form (fits the app's VARCHAR(32))."""
    return uuid.uuid4().hex


def check_session_id(value: object) -> str:
    """A client's own session id, validated: 1..32 characters of ``A-Z a-z 0-9 _ . : -``,
    starting with a letter or digit. Raises :class:`InvalidRequest` (HTTP 400) otherwise; a
    hyphenated 36-character UUID is refused with a hint (the app's tables hold 32)."""
    text = value if isinstance(value, str) else ""
    if _SESSION_ID.fullmatch(text):
        return text
    shown = repr(text[:40]) if isinstance(value, str) else type(value).__name__
    raise InvalidRequest(f"session_id must be 1..{MAX_SESSION_ID_CHARS} characters of A-Z a-z 0-9 _ . : - "
                         f"(a UUID without hyphens), got {shown}")


class Sink(Protocol):
    """Where sessions go. ``write`` raises on any failure (the whole batch is then retried) and
    returns the sessions the target refused for good (e.g. a reused session id: dropped, not
    retried); ``describe`` names the target without secrets."""

    def write(self, sessions: Sequence[Session]) -> Sequence[Session]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


Callback = Callable[[Sequence[Session]], None]


class SessionLog:
    """A bounded queue of sessions written in batches by one background thread.

    Args:
        sink: where batches go (:class:`Sink`).
        max_pending: sessions that may wait while the sink is slow or down; more are dropped.
        batch_size: sessions per ``sink.write`` call.
        flush_interval_s: longest time a session waits in a healthy queue (seconds).
        retry_s: first back-off after a failed write (doubles up to ``max_retry_s``).
        on_logged / on_dropped: called with the sessions written / dropped (metrics); they run on
            the writer thread (logged) or the caller's (dropped) and must be cheap.
    """

    def __init__(self, sink: Sink, *, max_pending: int = 10_000, batch_size: int = 500,
                 flush_interval_s: float = 1.0, retry_s: float = 0.5, max_retry_s: float = 5.0,
                 on_logged: Callback | None = None, on_dropped: Callback | None = None) -> None:
        if max_pending < 1 or batch_size < 1 or flush_interval_s <= 0:
            raise ValueError("max_pending and batch_size must be >= 1, flush_interval_s > 0")
        self.sink = sink
        self.max_pending, self.batch_size = int(max_pending), int(batch_size)
        self.flush_interval_s, self.retry_s, self.max_retry_s = flush_interval_s, retry_s, max_retry_s
        self._on_logged, self._on_dropped = on_logged, on_dropped
        self._pending: deque[Session] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.logged = 0  # sessions written
        self.dropped = 0  # sessions given up on (queue full, or not written by shutdown)
        self.down_since: float | None = None  # monotonic time of the first failure of an outage
        self._dropped_in_outage = 0  # since the last successful write

    # --- the request side -------------------------------------------------------------------
    def record(self, session: Session) -> bool:
        """Queue ``session`` (never blocks, never raises); False when it was dropped."""
        with self._lock:
            if self._closing or len(self._pending) >= self.max_pending:
                self.dropped += 1
                self._dropped_in_outage += 1
                full = True
            else:
                self._pending.append(session)
                full = False
                if len(self._pending) == self.batch_size:
                    self._wake.set()
        if full and self._on_dropped is not None:
            self._on_dropped((session,))
        return not full

    @property
    def pending(self) -> int:
        return len(self._pending)

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> SessionLog:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="session-log", daemon=True)
            self._thread.start()
            log.info("logging sessions to %s (queue %d sessions, batches of %d)", self.sink.describe(),
                     self.max_pending, self.batch_size)
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (within ``timeout_s``), stop the thread, close the sink; the
        sessions left unwritten are counted as dropped, with one log line."""
        with self._lock:
            self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._lock:
            left = list(self._pending)
            self._pending.clear()
        if left:
            self.dropped += len(left)
            log.warning("session log: %d sessions not written at shutdown (%s unreachable)", len(left),
                        self.sink.describe())
            if self._on_dropped is not None:
                self._on_dropped(left)
        try:
            self.sink.close()
        except Exception:  # noqa: BLE001 - closing a broken sink must not fail the shutdown
            log.debug("closing the session sink failed", exc_info=True)

    # --- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.retry_s
        while True:
            self._wake.wait(self.flush_interval_s if self.down_since is None else backoff)
            self._wake.clear()
            closing = self._closing
            while True:
                with self._lock:
                    batch = [self._pending[i] for i in range(min(self.batch_size, len(self._pending)))]
                if not batch:
                    break
                if not self._write(batch):
                    backoff = min(backoff * 2, self.max_retry_s)
                    break
                backoff = self.retry_s
            if closing and (not self._pending or self.down_since is not None):
                return

    def _write(self, batch: list[Session]) -> bool:
        """One attempt; on success the batch leaves the queue. Logs outage start and end once."""
        try:
            rejected = list(self.sink.write(batch) or ())
        except Exception as exc:  # noqa: BLE001 - any sink failure: keep the rows, retry later
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning("session log: writing to %s failed (%s); answers continue, up to %d sessions wait "
                            "in memory, later ones are dropped", self.sink.describe(),
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__, self.max_pending)
            return False
        with self._lock:
            for _ in batch:
                self._pending.popleft()
        self.logged += len(batch) - len(rejected)
        if rejected:
            self.dropped += len(rejected)
            if self._on_dropped is not None:
                self._on_dropped(rejected)
        if self.down_since is not None:
            log.warning("session log: %s reachable again after %.1f s; %d sessions dropped meanwhile",
                        self.sink.describe(), time.monotonic() - self.down_since, self._dropped_in_outage)
            self.down_since = None
        self._dropped_in_outage = 0  # drops are reported since the last successful write
        if self._on_logged is not None:
            refused = {id(s) for s in rejected}
            self._on_logged([s for s in batch if id(s) not in refused] if rejected else batch)
        return True


def open_sink(target: str) -> Sink:
    """The sink a ``--log-sessions`` value names: a SQLAlchemy URL (``postgresql+psycopg://``,
    ``sqlite:///file.db``) or a bare ``*.db`` / ``*.sqlite`` path -> the app database; ``s3://``,
    ``file://`` or any other path -> Parquet parts under that folder (see
    :mod:`startup_recs.serving.session_sinks`)."""
    from startup_recs.serving import session_sinks

    return session_sinks.open_sink(target)


__all__ = ["MAX_SESSION_ID_CHARS", "SESSION_HEADER", "SESSION_PARAM", "Session", "SessionLog", "Sink",
           "check_session_id", "new_session_id", "open_sink"]
