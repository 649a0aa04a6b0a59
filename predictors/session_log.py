"""Session logging in the predictor (``--log-sessions``): the client's own session id, the
session id of every answer, and the Prometheus counters. The queue and the sinks are the core's
(:mod:`startup_recs.serving.sessions`); nothing here touches the sink on a request.

Where the id appears: the legacy answer and each V1 prediction get ``"session_id"``; a V2
response gets an output ``session_id`` BYTES ``[n]`` (``b""`` for a row without an answer). A
client names its own session with ``?session_id=`` or the ``X-Session-Id`` header (one
instance per request then: a session has one entity); otherwise every answer gets a fresh
UUID (32 hex digits).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from predictors import fields, metrics
from predictors.errors import BadRequest
from startup_recs.core.usecases import get_use_case
from startup_recs.serving import api
from startup_recs.serving.sessions import (
    SESSION_HEADER,
    SESSION_PARAM,
    Session,
    SessionLog,
    check_session_id,
    new_session_id,
    open_sink,
)


def from_request(headers: Any, query: Any) -> str | None:
    """The client's session id from the ``X-Session-Id`` header or the ``session_id`` query
    parameter (starlette ``Headers`` / ``QueryParams``); each at most once, both only if equal.
    :class:`BadRequest` for a malformed or ambiguous one."""
    header = fields.single_header(headers.getlist(SESSION_HEADER), SESSION_HEADER)
    values = query.getlist(SESSION_PARAM)
    if len(values) > 1:
        raise BadRequest(f"{SESSION_PARAM} given more than once")
    param = values[0] if values else None
    if header is not None and param is not None and header != param:
        raise BadRequest(f"{SESSION_PARAM} and header {SESSION_HEADER} name different sessions")
    value = header if header is not None else param
    return None if value is None else _checked(value)


def with_session(headers: Mapping[str, str], session_id: str | None) -> dict[str, str]:
    """``headers`` as a dict carrying the validated client session id (or none) to ``predict``."""
    out = {k: v for k, v in headers.items() if k.lower() != SESSION_HEADER}
    if session_id is not None:
        out[SESSION_HEADER] = session_id
    return out


def client_session_id(headers: Mapping[str, str] | None, instances: int) -> str | None:
    """The client's session id a V1/V2 ``predict`` received (:func:`with_session`); it names one
    session, so a request with more than one instance may not carry one."""
    value = (headers or {}).get(SESSION_HEADER)
    if value is None:
        return None
    if instances > 1:
        raise BadRequest(f"{SESSION_PARAM} names one session: send one instance per request with it, "
                         f"or leave it out and every answer gets its own")
    return _checked(value)


def _checked(value: str) -> str:
    try:
        return check_session_id(value)
    except api.InvalidRequest as exc:
        raise BadRequest(str(exc)) from None


def stamp(slog: SessionLog, use_case: str, outcomes: Sequence[Any], session_id: str | None,
          version: str) -> list[Any]:
    """Every answer (a dict) of ``outcomes`` copied with its ``session_id`` and queued as one
    session (its candidates at positions 0..n-1, the answer's ``model_version``); errors pass."""
    now = dt.datetime.now(dt.UTC)
    out: list[Any] = []
    for o in outcomes:
        if not isinstance(o, dict):
            out.append(o)
            continue
        sid = session_id or new_session_id()
        slog.record(Session(sid, str(o.get("entity_id")), use_case, now, str(o.get("model_version") or version),
                            tuple(str(c["id"]) for c in o["candidates"])))
        out.append({**o, "session_id": sid})
    return out


def _count(counter: Any, sessions: Sequence[Session]) -> None:
    by_model: dict[str, int] = {}
    for s in sessions:
        by_model[s.use_case] = by_model.get(s.use_case, 0) + 1
    for uc, n in by_model.items():
        counter.labels(get_use_case(uc).model_name).inc(n)


def start(target: str, *, max_pending: int = 10_000) -> SessionLog:
    """The running :class:`SessionLog` of ``--log-sessions target``, wired to
    ``recs_sessions_logged_total`` / ``recs_sessions_dropped_total``."""
    return SessionLog(open_sink(target), max_pending=max_pending,
                      on_logged=lambda b: _count(metrics.SESSIONS_LOGGED, b),
                      on_dropped=lambda b: _count(metrics.SESSIONS_DROPPED, b)).start()
