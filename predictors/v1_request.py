"""V1 ``:predict`` bodies: plain JSON, or the same JSON carried by a CloudEvent, and the CloudEvent
answer to one.

kserve accepts a CloudEvent in binary mode (the four ``ce-specversion``/``ce-id``/``ce-source``/
``ce-type`` headers, the body is the event's data) or structured mode (a JSON object holding
``specversion``, ``id``, ``source``, ``type``, ``time`` and ``data``), and answers in the same
mode. Its decoder fails with a 500 and a traceback on an event without data; here an event
without a JSON request in its data is a 400 like any other malformed body.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from cloudevents.sdk.converters.util import has_binary_headers
from starlette.datastructures import Headers

from predictors import fields, json_body
from predictors.errors import BadRequest
from startup_recs.serving import api

_CE_HEADERS = ("ce-specversion", "ce-id", "ce-source", "ce-type")
_STRUCTURED_KEYS = ("specversion", "id", "source", "type", "time", "data")
SPEC_VERSIONS = ("1.0", "0.3")
MAX_FIELDS = 8  # of the body and of each instance: a valid one has 1 and 2
MAX_EVENT_FIELDS = 64  # of a structured CloudEvent


@dataclass(frozen=True)
class V1Request:
    """The parsed JSON request, and the CloudEvent attributes when it came as one."""

    payload: Any
    event: dict[str, Any] | None = None
    binary_event: bool = False


def decode(body: bytes, headers: Headers) -> V1Request:
    """The request in ``body``; :class:`BadRequest` for a body that is not one."""
    for name in ("content-type", *_CE_HEADERS):
        fields.single_header(headers.getlist(name), name)
    if has_binary_headers(headers):
        attrs = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
        if attrs["specversion"] not in SPEC_VERSIONS:
            raise BadRequest(f"ce-specversion must be one of {', '.join(SPEC_VERSIONS)}")
        if not body:
            raise BadRequest("the CloudEvent has no data: its body must be the JSON request")
        return V1Request(_bounded(json_body.loads(body, what="the CloudEvent data")), attrs, True)
    if not body:
        raise BadRequest("empty body: expected a JSON object with an 'instances' list")
    obj = json_body.loads(body)
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if isinstance(obj, dict) and (ctype == "application/cloudevents+json"
                                  or all(k in obj for k in _STRUCTURED_KEYS)):
        if ctype == "application/cloudevents+json" and "specversion" not in obj:
            raise BadRequest("a structured CloudEvent needs 'specversion', 'id', 'source', 'type' and 'data'")
        if "specversion" in obj:
            return _structured(obj)
    return V1Request(_bounded(obj))


def _bounded(payload: Any) -> Any:
    """``payload``, refused when an object in it has so many fields that listing the unexpected
    ones (``api.parse_v1`` names them) would cost more than the request is worth."""
    if isinstance(payload, dict):
        if len(payload) > MAX_FIELDS:
            raise BadRequest(f"the body has {len(payload)} fields; expected 'instances'")
        instances = payload.get("instances")
        if isinstance(instances, list) and len(instances) <= api.MAX_BATCH:
            for i, inst in enumerate(instances):
                if isinstance(inst, dict) and len(inst) > MAX_FIELDS:
                    raise BadRequest(f"instances[{i}] has {len(inst)} fields; expected an id and 'limit'")
    return payload


def _structured(obj: dict[str, Any]) -> V1Request:
    for key in ("specversion", "id", "source", "type"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise BadRequest(f"the CloudEvent's {key!r} must be a non-empty string")
    if obj["specversion"] not in SPEC_VERSIONS:
        raise BadRequest(f"the CloudEvent's 'specversion' must be one of {', '.join(SPEC_VERSIONS)}")
    if obj.get("data") is None:
        raise BadRequest("the CloudEvent has no 'data': it must hold the JSON request")
    if len(obj) > MAX_EVENT_FIELDS:
        raise BadRequest(f"the CloudEvent has {len(obj)} attributes, at most {MAX_EVENT_FIELDS} are read")
    data = obj["data"]
    if isinstance(data, str):  # data sent as JSON text
        data = json_body.loads(data, what="the CloudEvent data")
    return V1Request(_bounded(data), {k: v for k, v in obj.items() if k != "data"}, False)


def encode_event(model_name: str, response: dict[str, Any], req: V1Request) -> tuple[dict[str, str], bytes]:
    """``(headers, body)`` of the CloudEvent answering ``req`` (in its mode), with kserve's
    attributes: ``CE_TYPE`` / ``CE_SOURCE`` (env) or their defaults; ``CE_MERGE=true`` also copies
    the request's string attributes except ``id``, ``time`` and the content type."""
    attrs: dict[str, Any] = {}
    if os.getenv("CE_MERGE", "false").lower() == "true" and req.event:
        attrs = {k: v for k, v in req.event.items()
                 if isinstance(v, str) and k not in ("id", "time", "datacontenttype", "specversion", "data_base64")}
    attrs["type"] = os.getenv("CE_TYPE", "io.kserve.inference.response")
    attrs["source"] = os.getenv("CE_SOURCE", f"io.kserve.inference.{model_name}")
    event = CloudEvent(attrs, response)
    headers, body = to_binary(event) if req.binary_event else to_structured(event)
    headers = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in headers.items()}
    headers["content-type"] = "application/json" if req.binary_event else "application/cloudevents+json"
    return headers, body if isinstance(body, bytes) else str(body).encode()
