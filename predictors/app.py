"""What we add to kserve's FastAPI app: the legacy GET routes, a request-size bound, a check of
binary V2 envelopes, and exception handlers that turn every bad request into a 4xx JSON answer
``{"error": "..."}`` with one log line (kserve's own handlers log a full traceback per 400).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady

from predictors.model import EntityNotFound, RecsModel
from startup_recs.core.usecases import USE_CASES
from startup_recs.serving import api

log = logging.getLogger("predictors")

_V2_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


async def _send_json(send: Callable, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: bound the request body (413 above ``max_bytes``) and validate binary V2
    envelopes (400), before kserve's decoder could fail on them with a 500.

    The body is read fully (it is at most ``max_bytes``) and replayed to the app unchanged.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = api.MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, f"request body of {declared} bytes exceeds {self.max_bytes}")
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_json(send, 413, f"request body exceeds {self.max_bytes} bytes")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        json_length = headers.get("inference-header-content-length")
        if _V2_INFER.match(scope["path"]):
            if json_length is not None:
                try:
                    api.check_v2_binary(body, json_length)
                except api.InvalidRequest as exc:
                    log.info("400 %s: %s", scope["path"], exc)
                    await _send_json(send, 400, str(exc))
                    return
            elif not headers.get("content-type", "").startswith("application/json"):
                # A V2 REST body without binary tensors *is* JSON, whatever the client labels it
                # (tritonclient sends no content type); kserve would take it for a binary body.
                scope = dict(scope)
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
                scope["headers"].append((b"content-type", b"application/json"))
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


def _handler(status: int) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        log.info("%d %s %s: %s", status, request.method, request.url.path, exc)
        return _json({"error": str(exc)}, status)

    return handle


async def _validation_handler(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    msg = f"malformed request: {where}: {first.get('msg', 'invalid')}"
    log.info("400 %s %s: %s", request.method, request.url.path, msg)
    return _json({"error": msg}, 400)


def add_exception_handlers(app: FastAPI) -> None:
    """Quiet 4xx handlers; called *after* kserve registers its own, so these win."""
    app.add_exception_handler(InvalidInput, _handler(400))
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ModelNotFound, _handler(404))
    app.add_exception_handler(EntityNotFound, _handler(404))
    app.add_exception_handler(ModelNotReady, _handler(503))
    app.add_exception_handler(ServerNotReady, _handler(503))


def add_legacy_routes(app: FastAPI, models: Mapping[str, RecsModel]) -> None:
    """``GET /api/recommendations/<candidates>/for-<entity>/{id}?limit=10`` for all four use cases.

    ``models`` maps use-case names to served models; a route whose use case is not served
    answers 404 naming the model (the legacy service had no such case: it served both routes).
    """
    for uc in USE_CASES.values():
        app.add_api_route(uc.route.replace("{id}", "{entity_id}"), _legacy_handler(uc.name, uc.model_name, models),
                          methods=["GET"], name=f"legacy-{uc.model_name}", tags=["legacy"])


def _legacy_handler(use_case: str, model_name: str, models: Mapping[str, RecsModel]) -> Callable:
    async def recommend(entity_id: str, request: Request) -> Response:
        model = models.get(use_case)
        if model is None:
            raise ModelNotFound(model_name)
        params = request.query_params
        try:
            extra = set(params.keys()) - {"limit"}
            if extra:
                raise api.InvalidRequest(f"unknown query parameter(s): {', '.join(sorted(extra))}")
            values = params.getlist("limit")
            if len(values) > 1:
                raise api.InvalidRequest("limit given more than once")
            limit = api.parse_limit(values[0] if values else None)
            entity_id = api.parse_entity_id(entity_id, field="id")
        except api.InvalidRequest as exc:
            model.count_bad_request("legacy")
            raise InvalidInput(str(exc)) from None
        return _json(await model.recommend_one_async(entity_id, limit, "legacy"))

    recommend.__name__ = f"recommend_{use_case}"
    return recommend
