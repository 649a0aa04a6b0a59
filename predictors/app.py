"""What we add to kserve's FastAPI app besides the routes of :mod:`predictors.routes`: the legacy
GET routes and :class:`RequestGuard`, an ASGI middleware in front of everything.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from kserve.errors import ModelNotFound

from predictors import fields, session_log
from predictors.errors import BadRequest
from predictors.model import RecsModel
from startup_recs.core.usecases import USE_CASES
from startup_recs.serving import api
from startup_recs.serving.options import OPTION_NAMES, query_options

log = logging.getLogger("predictors")

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]
_ASCII_LENGTH = re.compile(rb"[0-9]{1,12}")
# headers whose value decides how a body is read: each must come at most once (a proxy and the
# app could otherwise read different copies)
_SINGLE = (b"content-length", b"content-type", b"transfer-encoding", b"inference-header-content-length")


async def _send_json(send: Callable, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: refuse a request whose framing headers are ambiguous (400: given twice, a
    length that is not ASCII digits) and bound the request body (413 above ``max_bytes``), before
    any other code reads it. The body is read fully (at most ``max_bytes``) and replayed to the
    app unchanged.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = api.MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            key = key.lower()
            if key in _SINGLE:
                if key in seen:
                    await self._refuse(send, scope, 400, f"header {key.decode()} given more than once")
                    return
                seen[key] = value
        declared = seen.get(b"content-length")
        if declared is not None and not _ASCII_LENGTH.fullmatch(declared):
            await self._refuse(send, scope, 400, "header content-length is not a byte count")
            return
        if declared is not None and int(declared) > self.max_bytes:
            await self._refuse(send, scope, 413, f"request body of {int(declared)} bytes exceeds {self.max_bytes}")
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS") and declared in (None, b"0"):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, scope, 413, f"request body exceeds {self.max_bytes} bytes")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Callable, scope: Scope, status: int, message: str) -> None:
        log.info("%d %s %s: %s", status, scope["method"], scope["path"], message)
        await _send_json(send, status, message)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


# the query string is read raw (an int parameter would let FastAPI word the errors); the schema says what is valid
_LIMIT_PARAM = {"name": "limit", "in": "query", "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": api.MAX_LIMIT, "default": api.DEFAULT_LIMIT}}


_SESSION_PARAM = {"name": "session_id", "in": "query", "required": False,
                  "description": "the client's own session id (logged with --log-sessions); also header X-Session-Id",
                  "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}$"}}


_OPTION_PARAMS = [
    {"name": name, "in": "query", "required": False, "description": text, "schema": {"type": "string"}}
    for name, text in (
        ("location", "candidates in one of these locations (comma-separated)"),
        ("skills", "developers with any of these skills (comma-separated)"),
        ("sector", "investors investing in / startups in one of these sectors (comma-separated)"),
        ("stage", "investors investing at / startups at one of these stages (comma-separated)"),
        ("exclude", "candidate ids never to return (comma-separated)"),
        ("reciprocal", "true|false: fuse with the forward twin's scores (reverse routes; default true when loaded)"),
        ("format", "default|legacy: the legacy service's response shape"),
    )
]


def add_legacy_routes(app: FastAPI, models: Mapping[str, RecsModel]) -> None:
    """``GET /api/recommendations/<candidates>/for-<entity>/{id}?limit=10`` for all four use cases,
    with the request options of :mod:`startup_recs.serving.options` (filters, ``reciprocal``,
    ``format``) as query parameters.

    ``models`` maps use-case names to served models; a route whose use case is not served
    answers 404 naming the model (the legacy service had no such case: it served both routes).
    """
    for uc in USE_CASES.values():
        app.add_api_route(uc.route.replace("{id}", "{entity_id}"), _legacy_handler(uc.name, uc.model_name, models),
                          methods=["GET"], name=f"legacy-{uc.model_name}", tags=["legacy"],
                          openapi_extra={"parameters": [_LIMIT_PARAM, _SESSION_PARAM, *_OPTION_PARAMS]})



def _legacy_handler(use_case: str, model_name: str, models: Mapping[str, RecsModel]) -> Callable:
    async def recommend(entity_id: str, request: Request) -> Response:
        model = models.get(use_case)
        if model is None:
            raise ModelNotFound(model_name)
        params = request.query_params
        try:
            extra = set(params.keys()) - {"limit", "session_id", *OPTION_NAMES}
            if extra:
                raise BadRequest(f"unknown query parameter(s): {', '.join(sorted(extra))[:200]}")
            values = params.getlist("limit")
            if len(values) > 1:
                raise BadRequest("limit given more than once")
            limit = fields.limit_from_text(values[0] if values else None)
            entity_id = fields.entity_id(entity_id, field="id")
            session_id = session_log.from_request(request.headers, params)  # ?session_id= or X-Session-Id
            options = query_options({k: params.getlist(k) for k in params if k in OPTION_NAMES}, use_case)
        except api.InvalidRequest as exc:  # a filter, reciprocal or format value
            model.count("legacy", 400)
            raise BadRequest(str(exc)) from None
        except BadRequest:
            model.count("legacy", 400)
            raise
        return _json(await model.recommend_one_async(entity_id, limit, "legacy", session_id, options))

    recommend.__name__ = f"recommend_{use_case}"
    return recommend
