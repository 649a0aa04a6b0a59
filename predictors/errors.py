"""The predictor's typed errors, one per HTTP outcome, and the handlers that turn them into answers.

Like kserve's own errors (``InvalidInput`` -> 400, ``ModelNotFound`` -> 404, ``ModelNotReady`` ->
503), each class here *is* its HTTP status: :class:`BadRequest` 400, :class:`NotFound` 404,
:class:`PayloadTooLarge` 413, :class:`Overloaded` 503 with ``Retry-After``, :class:`InternalError`
500. Every answer is ``{"error": "<what was wrong>"}`` with one log line; no exception class name
or traceback reaches a client. A 500 is a predictor bug, never the client's input: the model
failed on a valid request, or an exception escaped that is none of these (generic message; the
traceback goes to the log only).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from kserve.errors import (
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
)
from starlette.exceptions import HTTPException

log = logging.getLogger("predictors")


class PredictorError(Exception):
    """An error answer: ``status``, the message of ``{"error": ...}`` and extra response headers."""

    status = 500

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        Exception.__init__(self, message)
        self.message = self.reason = message  # ``reason``: what kserve's gRPC interceptor reports
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return self.message


class BadRequest(PredictorError, InvalidInput):
    """The request is malformed; the message names the field and the problem (400; gRPC:
    INVALID_ARGUMENT, as kserve's ``InvalidInput``, which it also is)."""

    status = 400


class NotFound(PredictorError, ModelNotFound):
    """No such route, model, model version or entity (404; gRPC: NOT_FOUND)."""

    status = 404


class EntityNotFound(NotFound):
    """The entity id is not in the served bundle (404)."""

    def __init__(self, model_name: str, entity_id: str) -> None:
        super().__init__(f"unknown {model_name.split('-')[0]} id {entity_id!r} for model {model_name}")
        self.entity_id = entity_id


class PayloadTooLarge(PredictorError):
    """The request body is over the configured bound (413)."""

    status = 413


class InternalError(PredictorError, InferenceError):
    """The model failed on a valid request: a predictor bug, logged with its traceback (500)."""

    status = 500


class Overloaded(PredictorError, ServerNotReady):
    """The model work queue is full or the request's deadline passed (503 with ``Retry-After``;
    gRPC: UNAVAILABLE).

    The client did nothing wrong: the same request may succeed after ``retry_after_s`` seconds.
    """

    status = 503

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        PredictorError.__init__(self, message, headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))})


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json",
                    headers=dict(headers or {}))


async def _predictor_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PredictorError)
    log.info("%d %s %s: %s", exc.status, request.method, request.url.path, exc.message)
    return error_response(exc.status, exc.message, exc.headers)


def _fixed(status: int) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        log.info("%d %s %s: %s", status, request.method, request.url.path, exc)
        return error_response(status, str(exc))

    return handle


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    msg = f"malformed request: {where}: {first.get('msg', 'invalid')}"
    log.info("400 %s %s: %s", request.method, request.url.path, msg)
    return error_response(400, msg)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) / 405 (wrong method) / 400 (unparsable body), as ``{"error"}``."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        msg = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        msg = f"method {request.method} not allowed on {request.url.path}"
    else:
        msg = str(exc.detail)
    log.info("%d %s %s: %s", exc.status_code, request.method, request.url.path, msg)
    return error_response(exc.status_code, msg, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("500 %s %s: unexpected error", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error of the predictor (logged); the request was not answered")


def add_exception_handlers(app: FastAPI) -> None:
    """Register every handler; called *after* kserve registers its own, so these win."""
    app.add_exception_handler(PredictorError, _predictor_error)
    app.add_exception_handler(InvalidInput, _fixed(400))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ModelNotFound, _fixed(404))
    app.add_exception_handler(ModelNotReady, _fixed(503))
    app.add_exception_handler(ServerNotReady, _fixed(503))
    app.add_exception_handler(ServerNotLive, _fixed(503))
    app.add_exception_handler(Exception, _unexpected)
