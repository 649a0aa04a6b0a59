"""The REST routes of the predictor: an allow-list instead of kserve's whole set.

What is left out of kserve's ``register_v1_endpoints`` / ``register_v2_endpoints``, and why:

- the model repository extension (``POST /v2/repository/models/<m>/load|unload``): no
  authentication, and one ``unload`` takes a model out of service (the server turns unready).
  What is served is decided by publishing bundles (the poller swaps them in), never by a client.
  These paths answer 404, and server metadata lists no extension.
- ``:explain`` answers 404 naming why: there is no explainer. Every prediction already carries
  ``match_reasons`` (the features of the candidate that matched the entity); an explain route
  would compute the same recommendation a second time, outside the bounds of ``:predict``.
  404 rather than 405: no method works on that resource, and 405 would promise one.
- kserve's versioned routes answer 501 (not implemented). Here ``/versions/<v>/`` and
  ``?model_version=<v>`` work for the version being served (``v3`` or ``3``) and answer 404
  for any other version.

V1 ``:predict`` and V2 ``/infer`` decode their bodies with :mod:`predictors.v1_request` /
:mod:`predictors.v2_request`; kserve's decoders never see a request. The model is then called as
kserve's dataplane would call it (``await model(request, headers=...)``), and the answer encoded
with kserve's ``InferResponse.to_rest``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from kserve.errors import ModelNotFound, ModelNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferResponse
from kserve.protocol.rest.server import metrics_handler
from kserve.protocol.rest.v1_endpoints import V1Endpoints
from kserve.protocol.rest.v2_endpoints import V2Endpoints

from predictors import session_log, v1_request, v2_request
from predictors.errors import NotFound
from predictors.model import OUTPUTS, RecsModel
from startup_recs.serving import api
from startup_recs.serving.filters import FILTER_NAMES
from startup_recs.serving.options import FORMATS

_ID = {"type": "string", "minLength": 1, "maxLength": api.MAX_ID_CHARS}
# a filter (startup_recs.serving.filters): comma-separated values or a list of them
_FILTER = {"oneOf": [{"type": "string", "minLength": 1},
                     {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}]}
V1_BODY: dict[str, Any] = {
    "type": "object", "required": ["instances"], "additionalProperties": False,
    "properties": {"instances": {
        "type": "array", "minItems": 1, "maxItems": api.MAX_BATCH,
        "items": {"type": "object", "additionalProperties": False,
                  "properties": {"startup_id": _ID, "user_id": _ID, "entity_id": _ID,
                                 "limit": {"type": "integer", "minimum": 1, "maximum": api.MAX_LIMIT},
                                 **{f: _FILTER for f in FILTER_NAMES},
                                 "reciprocal": {"type": "boolean"},
                                 "format": {"type": "string", "enum": list(FORMATS)}}},
    }},
}
_PARAMS = {"type": "object", "additionalProperties": {"type": ["string", "boolean", "integer"]}}
V2_BODY: dict[str, Any] = {
    "type": "object", "required": ["inputs"], "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "maxLength": v2_request.MAX_REQUEST_ID_CHARS},
        "parameters": _PARAMS,
        "inputs": {"type": "array", "minItems": 1, "maxItems": 2, "items": {
            "type": "object", "required": ["name", "datatype", "shape", "data"], "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "enum": ["entity_id", "limit"]},
                "datatype": {"type": "string", "enum": ["BYTES", "INT32", "INT64"]},
                "shape": {"type": "array", "minItems": 1, "maxItems": 1,
                          "items": {"type": "integer", "minimum": 1, "maximum": api.MAX_BATCH}},
                "parameters": _PARAMS,
                "data": {"type": "array", "minItems": 1, "maxItems": api.MAX_BATCH,
                         "items": {"type": ["string", "integer"]}},
            }}},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {"type": "string", "enum": list(OUTPUTS)}, "parameters": _PARAMS}}},
    },
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _json(obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json",
                    headers=headers)


class Routes:
    """The handlers, over kserve's dataplane (model registry, health) and our models."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.v1 = V1Endpoints(dataplane)
        self.v2 = V2Endpoints(dataplane)

    def model(self, name: str, version: str | None = None) -> RecsModel:
        """The served model ``name`` (404 otherwise), checked against ``version`` when given."""
        model = self.dataplane.model_registry.get_model(name)
        if not isinstance(model, RecsModel):
            raise ModelNotFound(name)
        model.check_version(version)
        return model

    async def ready_model(self, name: str, version: str | None = None) -> RecsModel:
        model = self.model(name, version)
        if not await model.healthy():
            raise ModelNotReady(name, model.slot.last_error or "no bundle loaded yet")
        return model

    # --- server ---------------------------------------------------------------------------------
    async def metadata(self) -> Response:
        meta = self.dataplane.metadata()
        return _json({**meta, "extensions": []})

    # --- V1 -------------------------------------------------------------------------------------
    async def v1_predict(self, model_name: str, request: Request) -> Response:
        model = await self.ready_model(model_name)
        req = v1_request.decode(await request.body(), request.headers)
        headers = session_log.with_session(request.headers, session_log.from_request(request.headers,
                                                                                     request.query_params))
        result, _ = await model(req.payload, headers=headers)
        if req.event is not None:
            headers, body = v1_request.encode_event(model_name, result, req)
            return Response(body, headers=headers)
        return _json(result)

    async def v1_explain(self, model_name: str) -> Response:
        self.model(model_name)
        raise NotFound(f"model {model_name} has no explainer: every prediction carries match_reasons "
                       f"(the candidate features that matched); use :predict")

    # --- V2 -------------------------------------------------------------------------------------
    async def v2_model_metadata(self, model_name: str, model_version: str | None = None) -> Response:
        self.model(model_name, model_version)
        return _json(await self.dataplane.model_metadata(model_name))

    async def v2_model_ready(self, model_name: str, model_version: str | None = None) -> Response:
        model = await self.ready_model(model_name, model_version)
        return _json({"name": model.name, "ready": True})

    async def v2_infer(self, model_name: str, request: Request, model_version: str | None = None) -> Response:
        model = await self.ready_model(model_name, model_version)
        infer_request = v2_request.decode(await request.body(), request.headers, model_name, model.output_names())
        headers = session_log.with_session(request.headers, session_log.from_request(request.headers,
                                                                                     request.query_params))
        response, _ = await model(infer_request, headers=headers)
        assert isinstance(response, InferResponse)
        body, json_length = response.to_rest()
        if isinstance(body, bytes):
            return Response(body, media_type="application/octet-stream",
                            headers={v2_request.LENGTH_HEADER: str(json_length)})
        return _json(body)


def register_routes(app: FastAPI, dataplane: DataPlane) -> None:
    """Every REST route the predictor serves (the legacy GET routes are added by ``app``)."""
    r = Routes(dataplane)

    def add(path: str, fn: Callable, methods: str = "GET", tags: tuple[str, ...] = (), **kw: Any) -> None:
        app.add_api_route(path, fn, methods=[methods], response_model=None, tags=list(tags), **kw)

    add("/", dataplane.live)
    add("/metrics", metrics_handler)
    add("/v1/models", r.v1.models, tags=("V1",))
    add("/v1/models/{model_name}", r.v1.model_ready, tags=("V1",))
    add("/v1/models/{model_name}:predict", r.v1_predict, "POST", ("V1",), openapi_extra=_body(V1_BODY))
    add("/v1/models/{model_name}:explain", r.v1_explain, "POST", ("V1",), include_in_schema=False)
    add("/v2", r.metadata, tags=("V2",))
    add("/v2/health/live", r.v2.live, tags=("V2",))
    add("/v2/health/ready", r.v2.ready, tags=("V2",))
    add("/v2/models", r.v2.models, tags=("V2",))
    for prefix in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}"):
        add(prefix, r.v2_model_metadata, tags=("V2",))
        add(prefix + "/ready", r.v2_model_ready, tags=("V2",))
        add(prefix + "/infer", r.v2_infer, "POST", ("V2",), openapi_extra=_body(V2_BODY))
