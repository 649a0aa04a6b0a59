"""``RecsModel``: one ``kserve.Model`` per use case, serving the bundle of a :class:`BundleSlot`.

Like kserve's sklearnserver: a small subclass, ``ready`` only after a verified bundle is in
memory, typed errors only. The protocol rules live in :mod:`startup_recs.serving.api`; this class
maps their errors to kserve's (``InvalidInput`` -> 400) and our :class:`EntityNotFound` (-> 404).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kserve
import orjson
from kserve.errors import InferenceError, InvalidInput, ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from predictors import metrics
from startup_recs.core.usecases import UseCase, get_use_case
from startup_recs.serving import api
from startup_recs.serving.reload import BundleSlot, LoadedBundle

T = TypeVar("T")
_EXECUTOR: ThreadPoolExecutor | None = None


def model_executor() -> ThreadPoolExecutor:
    """The threads that run model work (``RECS_MODEL_THREADS``, default 1).

    Model work never runs on the event loop: a slow answer (a cold start scanning every
    candidate's features) must not stall liveness/readiness probes or ``/metrics``. One thread
    by default, because the serving core is not promised to be thread-safe and on two cores a
    second thread mostly contends for the GIL with the event loop.
    """
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=max(1, int(os.environ.get("RECS_MODEL_THREADS", "1"))),
                                       thread_name_prefix="recs-model")
    return _EXECUTOR


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(model_executor(), fn, *args)


class EntityNotFound(LookupError):
    """The entity id is not in the served bundle (HTTP 404 with a JSON message)."""

    def __init__(self, model_name: str, entity_id: str) -> None:
        self.reason = f"unknown {model_name.split('-')[0]} id {entity_id!r} for model {model_name}"
        super().__init__(self.reason)

    def __str__(self) -> str:
        return self.reason


def _unknown_entity_error() -> tuple[type[BaseException], ...]:
    """The serving core's ``UnknownEntityError`` (E2), looked up lazily so this module imports
    without it; ``KeyError`` is *not* treated as unknown entity (that would hide bugs)."""
    try:
        from startup_recs.serving.recommender import UnknownEntityError
    except ImportError:
        return ()
    return (UnknownEntityError,)


class RecsModel(kserve.Model):
    """Recommendations for one use case; the model name is the use case's (``startup-developer``)."""

    def __init__(self, slot: BundleSlot) -> None:
        self.use_case: UseCase = get_use_case(slot.use_case)
        super().__init__(self.use_case.model_name)
        self.slot = slot
        self.ready = False
        self._unknown = _unknown_entity_error()

    # --- lifecycle -----------------------------------------------------------------------------
    def load(self) -> bool:
        """Fetch, verify and load the bundle. A missing or corrupt bundle leaves the model not
        ready with one log line (written by the slot); it never raises, so no traceback loop."""
        self.slot.refresh()
        self.ready = self.slot.current is not None
        return self.ready

    def start(self) -> None:
        """kserve's default sets ``ready = True`` unconditionally; readiness is the bundle's."""
        self.ready = self.slot.current is not None

    async def healthy(self) -> bool:
        # a bundle that appears later (hot reload after a failed start) makes the model ready
        self.ready = self.slot.current is not None
        return self.ready

    def on_swap(self, old: LoadedBundle | None, new: LoadedBundle) -> None:
        self.ready = True
        metrics.RELOADS.labels(self.name).inc()
        number = new.manifest.get("version")
        if isinstance(number, int | float):
            metrics.BUNDLE_VERSION.labels(self.name).set(float(number))

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "entity_id", "datatype": "BYTES", "shape": [-1]},
                {"name": "limit", "datatype": "INT32", "shape": [1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "candidate_ids", "datatype": "BYTES", "shape": [-1, -1]},
                {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "route", "datatype": "BYTES", "shape": [-1]}]

    # --- answering -----------------------------------------------------------------------------
    def bundle(self) -> LoadedBundle:
        b = self.slot.current
        if b is None:
            raise ModelNotReady(self.name, self.slot.last_error or "no bundle loaded yet")
        return b

    def answer(self, queries: list[api.Query], endpoint: str) -> tuple[list[dict[str, Any]], LoadedBundle]:
        """Answer every query from *one* bundle (read once: a hot swap mid-request cannot mix
        versions), record the metrics, and map an unknown id to :class:`EntityNotFound`."""
        b = self.bundle()
        version = b.version
        t0 = time.perf_counter()
        answers = []
        try:
            for q in queries:
                answers.append(b.model.recommend(q.entity_id, q.limit))
        except self._unknown:
            metrics.REQUESTS.labels(self.name, endpoint, "none", version, "404").inc()
            raise EntityNotFound(self.name, q.entity_id) from None
        except Exception as exc:  # a fault of the model, not of the request: a typed 500, logged once
            metrics.REQUESTS.labels(self.name, endpoint, "none", version, "500").inc()
            raise InferenceError(f"{self.name} {version} failed on {q.entity_id!r}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        elapsed = time.perf_counter() - t0
        route = answers[0]["method_used"] if len(answers) == 1 else "batch"
        metrics.LATENCY.labels(self.name, endpoint, route, version).observe(elapsed)
        metrics.REQUESTS.labels(self.name, endpoint, route, version, "200").inc()
        for a in answers:
            metrics.ROUTES.labels(self.name, a["method_used"], version).inc()
        return answers, b

    def count_bad_request(self, endpoint: str) -> None:
        b = self.slot.current
        metrics.REQUESTS.labels(self.name, endpoint, "none", b.version if b else "none", "400").inc()

    def recommend_one(self, entity_id: str, limit: int, endpoint: str = "legacy") -> dict[str, Any]:
        answers, _ = self.answer([api.Query(entity_id, limit)], endpoint)
        return api.legacy_response(answers[0], self.use_case)

    async def recommend_one_async(self, entity_id: str, limit: int, endpoint: str = "legacy") -> dict[str, Any]:
        return await off_loop(self.recommend_one, entity_id, limit, endpoint)

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        """V1 (dict) or V2 (InferRequest): parse on the loop (cheap), answer off the loop."""
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload)
        try:
            if isinstance(payload, bytes | str):  # kserve passes non-JSON content types through raw
                try:
                    payload = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    raise api.InvalidRequest("body is not valid JSON") from None
            queries = api.parse_v1(payload, self.use_case)
        except api.InvalidRequest as exc:
            self.count_bad_request("v1")
            raise InvalidInput(str(exc)) from None
        answers, _ = await off_loop(self.answer, queries, "v1")
        return {"predictions": [api.legacy_response(a, self.use_case) for a in answers]}

    async def _predict_v2(self, req: InferRequest) -> InferResponse:
        try:
            tensors = []
            for inp in req.inputs:
                data = inp.data if isinstance(inp.data, list) else inp.as_numpy()
                tensors.append(api.Tensor(inp.name, inp.datatype, inp.shape, data))
            ids, limit = api.parse_v2(tensors)
        except api.InvalidRequest as exc:
            self.count_bad_request("v2")
            raise InvalidInput(str(exc)) from None
        except (ValueError, TypeError) as exc:  # kserve could not decode the tensor bytes
            self.count_bad_request("v2")
            raise InvalidInput(f"undecodable input tensor: {exc}") from None
        answers, b = await off_loop(self.answer, [api.Query(i, limit) for i in ids], "v2")
        cand, scores, routes = api.v2_outputs(answers, limit)
        n = len(ids)
        outputs = [
            InferOutput("candidate_ids", [n, limit], "BYTES", cand),
            InferOutput("scores", [n, limit], "FP32", scores),
            InferOutput("route", [n], "BYTES", routes),
        ]
        return InferResponse(
            response_id=req.id or str(uuid.uuid4()), model_name=self.name, model_version=b.version,
            infer_outputs=outputs, use_binary_outputs=req.use_binary_outputs,
            requested_outputs=req.request_outputs,
        )
