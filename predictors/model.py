"""``RecsModel``: one ``kserve.Model`` per use case, serving the bundle of a :class:`BundleSlot`.

Like kserve's sklearnserver: a small subclass, ``ready`` only after a verified bundle is in
memory, typed errors only (:mod:`predictors.errors`). The protocol rules live in
:mod:`startup_recs.serving.api`; the REST envelopes are decoded by :mod:`predictors.v1_request` and
:mod:`predictors.v2_request` before a payload gets here.

A batch (V1 instances, V2 ``entity_id`` elements) is answered per instance: the same
``(id, limit)`` is computed once however often it is asked, an unknown id fails only its own
instance (V1: ``{"entity_id", "error"}`` in its place; V2: its row of the ``error`` output), and
a request whose every instance is unknown answers 404. All model work goes through the
:class:`~predictors.work_queue.WorkQueue` (bounded, with a per-request deadline).
"""

from __future__ import annotations

import logging
import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from predictors import fields, json_body, metrics, session_log
from predictors.errors import BadRequest, EntityNotFound, InternalError, NotFound, Overloaded, PredictorError
from predictors.work_queue import Deadline, WorkQueue, default_queue
from startup_recs.core.usecases import UseCase, get_use_case
from startup_recs.serving import api
from startup_recs.serving.options import v2_options
from startup_recs.serving.reload import BundleSlot, LoadedBundle
from startup_recs.serving.sessions import SessionLog

log = logging.getLogger("predictors")
OUTPUTS = ("candidate_ids", "scores", "route", "error")
SESSION_OUTPUT = "session_id"  # V2 output of a server that logs sessions (--log-sessions)
# V2 outputs of a model running an experiment (--experiment): each row's answering bundle and arm
EXPERIMENT_OUTPUTS = ("model_version", "experiment_arm")
BATCH_CHUNK = 32  # queries per recommend_batch call: a batch overruns its deadline by one chunk at most
Outcome = dict[str, Any] | PredictorError  # one instance's answer, or why it has none


def _unknown_entity_error() -> tuple[type[BaseException], ...]:
    """The serving core's ``UnknownEntityError``, looked up lazily so this module imports
    without it; ``KeyError`` is *not* treated as unknown entity (that would hide bugs)."""
    try:
        from startup_recs.serving.recommender import UnknownEntityError
    except ImportError:
        return ()
    return (UnknownEntityError,)


def link_twins(models: Iterable[Any]) -> None:
    """Give each reverse model the forward twin served beside it (``startup-developer`` <-
    ``developer-startup``): its answers are then reciprocal (:mod:`startup_recs.serving.reciprocal`)."""
    from startup_recs.core.usecases import twin_of

    served = {m.use_case.name: m for m in models if isinstance(m, RecsModel)}
    for name, model in served.items():
        if model.use_case.direction == "reverse":
            model.forward_twin = served.get(twin_of(name))


class RecsModel(kserve.Model):
    """Recommendations for one use case; the model name is the use case's (``startup-developer``)."""

    def __init__(self, slot: BundleSlot, queue: WorkQueue | None = None) -> None:
        self.use_case: UseCase = get_use_case(slot.use_case)
        super().__init__(self.use_case.model_name)
        self.slot = slot
        self.ready = False
        self._queue = queue
        self._unknown = _unknown_entity_error()
        self.sessions: SessionLog | None = None  # --log-sessions: every answer is logged (predictors.session_log)
        self.experiment: Any = None  # --experiment: a serving.experiments.Experiment (predictors.server sets it)
        # a reverse use case's forward twin served by the same server (predictors.server links
        # them): its bundle makes reverse answers reciprocal unless a request says reciprocal=false
        self.forward_twin: RecsModel | None = None

    @property
    def queue(self) -> WorkQueue:
        return self._queue or default_queue()

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
                {"name": "route", "datatype": "BYTES", "shape": [-1]},
                {"name": "error", "datatype": "BYTES", "shape": [-1]}] + (
            [{"name": SESSION_OUTPUT, "datatype": "BYTES", "shape": [-1]}] if self.sessions is not None else []) + (
            [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in EXPERIMENT_OUTPUTS] if self.experiment else [])

    def output_names(self) -> tuple[str, ...]:
        """The V2 outputs a request may ask for."""
        return (OUTPUTS + ((SESSION_OUTPUT,) if self.sessions is not None else ())
                + (EXPERIMENT_OUTPUTS if self.experiment else ()))

    # --- versions ------------------------------------------------------------------------------
    def bundle(self) -> LoadedBundle:
        b = self.slot.current
        if b is None:
            raise ModelNotReady(self.name, self.slot.last_error or "no bundle loaded yet")
        return b

    def check_version(self, version: str | None) -> None:
        """A versioned request (``/versions/<v>/``, ``?model_version=``) must name the served
        bundle, as ``v3`` or ``3``; any other version is :class:`NotFound` (404)."""
        if version is None:
            return
        served = self.bundle().version
        if version not in (served, served.removeprefix("v")):
            raise NotFound(f"model {self.name} has no version {version[:40]!r}; it serves {served}")

    # --- answering -----------------------------------------------------------------------------
    def answer(self, queries: Sequence[api.Query], endpoint: str, deadline: Deadline) -> tuple[list[Outcome], LoadedBundle]:
        """One outcome per query, all from *one* bundle (read once: a hot swap mid-request cannot
        mix versions). Runs on the model thread; :class:`Overloaded` once ``deadline`` passes.

        Distinct queries are answered through the model's ``recommend_batch`` in chunks of
        :data:`BATCH_CHUNK` (one matrix product or ANN search per route and chunk), the deadline
        checked before each chunk; a chunk that fails (an unknown id, a fault) and a model without
        batching are answered one query at a time, which gives each query its own outcome."""
        b = self.bundle()
        version = b.version
        t0 = time.perf_counter()
        todo = list(dict.fromkeys(queries))
        if len(queries) > len(todo):
            metrics.REPEATED.labels(self.name).inc(len(queries) - len(todo))
        forward = self._forward_model()  # read once: one forward bundle for the whole request
        kwargs = {q: self._options(q, forward) for q in todo}
        done = self._answer_batched(b, [q for q in todo if not kwargs[q]], deadline)
        for q in todo:
            if q in done:
                continue
            deadline.check()
            try:
                done[q] = b.model.recommend(q.entity_id, q.limit, **kwargs[q])
            except self._unknown:
                done[q] = EntityNotFound(self.name, q.entity_id)
            except api.InvalidRequest as exc:  # a filter value the bundle has never seen: 400
                done[q] = BadRequest(str(exc))
            except Exception:  # a fault of the model, not of the request: logged with its traceback
                log.exception("%s %s failed on %r", self.name, version, q.entity_id)
                done[q] = InternalError(f"internal error answering {q.entity_id!r} (logged)")
        for q in todo:  # reciprocal=true without a forward twin here: a one-sided answer that says so
            if forward is None and q.options is not None and q.options.reciprocal and isinstance(done[q], dict):
                done[q] = {**done[q], "reciprocal": {"available": False,
                                                     "reason": "the forward twin's bundle is not served here"}}
        outcomes = [done[q] for q in queries]
        answers = [o for o in outcomes if isinstance(o, dict)]
        failed = [o for o in outcomes if isinstance(o, PredictorError)]
        code = "200" if answers else str(failed[0].status)
        route = answers[0]["method_used"] if len(queries) == 1 and answers else ("batch" if answers else "none")
        metrics.LATENCY.labels(self.name, endpoint, route, version).observe(time.perf_counter() - t0)
        metrics.REQUESTS.labels(self.name, endpoint, route, version, code).inc()
        for a in answers:
            metrics.ROUTES.labels(self.name, a["method_used"], version).inc()
        if not answers:  # nothing to answer with: the first instance's error is the request's
            raise next((f for f in failed if not isinstance(f, EntityNotFound)), failed[0])
        return outcomes, b

    def _forward_model(self) -> Any | None:
        """The forward twin's current model (reverse use cases with the twin served), else None."""
        twin = self.forward_twin
        current = twin.slot.current if twin is not None else None
        return current.model if current is not None else None

    @staticmethod
    def _options(q: api.Query, forward: Any | None) -> dict[str, Any]:
        """``recommend`` keyword arguments of a query: its filters, and the forward model unless
        it asked ``reciprocal=false`` (``{}``: the plain answer, which may be batched)."""
        opts = q.options
        kw: dict[str, Any] = {}
        if opts is not None and opts.filters:
            kw["filters"] = opts.filters
        if forward is not None and (opts is None or opts.reciprocal is not False):
            kw["forward"] = forward
        return kw

    def _answer_batched(self, b: LoadedBundle, todo: Sequence[api.Query], deadline: Deadline) -> dict[api.Query, Outcome]:
        """The answers ``recommend_batch`` gives, chunk by chunk, and the unknown ids that the
        model's ``check_entity`` names up front (so one of them does not fail a chunk); ``{}`` for
        a single query or a model without batching. A failing chunk is left to the per-query loop."""
        batch = getattr(b.model, "recommend_batch", None)
        done: dict[api.Query, Outcome] = {}
        if batch is None or len(todo) < 2:
            return done
        check = getattr(b.model, "check_entity", None)
        if check is not None:
            for q in todo:
                try:
                    check(q.entity_id)
                except self._unknown:
                    done[q] = EntityNotFound(self.name, q.entity_id)
                except Exception:  # noqa: BLE001 - the per-query loop reports it
                    pass
        known = [q for q in todo if q not in done]
        for start in range(0, len(known), BATCH_CHUNK):
            chunk = known[start:start + BATCH_CHUNK]
            deadline.check()
            try:
                answers = batch([q.entity_id for q in chunk], [q.limit for q in chunk])
            except Exception:  # noqa: BLE001 - per-instance outcomes (404s, logged faults) come from the loop
                continue
            done.update(zip(chunk, answers, strict=True))
        return done

    def count(self, endpoint: str, code: int) -> None:
        b = self.slot.current
        metrics.REQUESTS.labels(self.name, endpoint, "none", b.version if b else "none", str(code)).inc()

    async def run(self, queries: Sequence[api.Query], endpoint: str,
                  session_id: str | None = None) -> tuple[list[Outcome], LoadedBundle]:
        """:meth:`answer` through the work queue (503 + ``Retry-After`` when overloaded). With
        session logging on, every answer gets its ``session_id`` (the client's, or a new one) and
        is queued for the sink (:func:`predictors.session_log.stamp`: a few microseconds)."""
        self.bundle()  # not ready: 503 at once, without a place in the queue
        try:
            outcomes, b = await self.queue.run(lambda deadline: self.answer(queries, endpoint, deadline))
        except Overloaded:
            self.count(endpoint, 503)
            raise
        if self.sessions is not None:
            outcomes = session_log.stamp(self.sessions, self.use_case.name, outcomes, session_id, b.version)
        return outcomes, b

    async def recommend_one_async(self, entity_id: str, limit: int, endpoint: str = "legacy",
                                  session_id: str | None = None, options: Any = None) -> dict[str, Any]:
        """One answer object (``options``: :class:`~startup_recs.serving.options.RequestOptions`;
        ``format=legacy`` gives the legacy Flask shape)."""
        outcomes, _ = await self.run([api.Query(entity_id, limit, options or None)], endpoint, session_id)
        return api.render(outcomes[0], self.use_case, options)  # a lone failure was raised by answer

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        """V1 (a parsed JSON body) or V2 (InferRequest): parse on the loop (cheap), answer off it."""
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload, headers)
        try:
            if isinstance(payload, bytes | str):  # only when called past our routes
                payload = json_body.loads(payload)
            queries = [api.Query(fields.check_entity_id(q.entity_id, field=f"instances[{i}]"), q.limit, q.options)
                       for i, q in enumerate(api.parse_v1(payload, self.use_case))]
            session_id = session_log.client_session_id(headers, len(queries)) if self.sessions else None
        except (api.InvalidRequest, BadRequest) as exc:
            self.count("v1", 400)
            raise BadRequest(str(exc)) from None
        outcomes, _ = await self.run(queries, "v1", session_id)
        return {"predictions": [api.render(o, self.use_case, q.options) if isinstance(o, dict)
                                else {"entity_id": q.entity_id, "error": str(o)}
                                for q, o in zip(queries, outcomes, strict=True)]}

    async def _predict_v2(self, req: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        try:
            tensors = [api.Tensor(inp.name, inp.datatype, inp.shape,
                                  inp.data if isinstance(inp.data, list | np.ndarray) else inp.as_numpy())
                       for inp in req.inputs]
            ids, limit = api.parse_v2(tensors)
            ids = [fields.check_entity_id(e, field=f"entity_id[{i}]") for i, e in enumerate(ids)]
            options = v2_options(req.parameters, self.use_case) or None  # filters, reciprocal
            session_id = session_log.client_session_id(headers, len(ids)) if self.sessions else None
        except (api.InvalidRequest, BadRequest, InvalidInput) as exc:
            self.count("v2", 400)
            raise BadRequest(str(exc)) from None
        except (ValueError, TypeError, OverflowError, struct.error) as exc:  # gRPC: undecodable tensor bytes
            self.count("v2", 400)
            raise BadRequest(f"undecodable input tensor: {str(exc)[:200]}") from None
        outcomes, b = await self.run([api.Query(i, limit, options) for i in ids], "v2", session_id)
        answers = [o if isinstance(o, dict) else {"candidates": [], "method_used": ""} for o in outcomes]
        cand, scores, routes = api.v2_outputs(answers, limit)
        errors = np.array([b"" if isinstance(o, dict) else str(o).encode() for o in outcomes], dtype=object)
        n = len(ids)
        outputs = [
            InferOutput("candidate_ids", [n, limit], "BYTES", cand),
            InferOutput("scores", [n, limit], "FP32", scores),
            InferOutput("route", [n], "BYTES", routes),
            InferOutput("error", [n], "BYTES", errors),
        ]
        if self.sessions is not None:
            sids = np.array([str(o.get("session_id", "")).encode() if isinstance(o, dict) else b"" for o in outcomes],
                            dtype=object)
            outputs.append(InferOutput(SESSION_OUTPUT, [n], "BYTES", sids))
        if self.experiment:  # rows of one request may come from both arms
            for name, value in (("model_version", lambda o: o.get("model_version")),
                                ("experiment_arm", lambda o: (o.get("experiment") or {}).get("arm"))):
                col = [str(value(o) or "").encode() if isinstance(o, dict) else b"" for o in outcomes]
                outputs.append(InferOutput(name, [n], "BYTES", np.array(col, dtype=object)))
        return InferResponse(
            response_id=req.id or str(uuid.uuid4()), model_name=self.name, model_version=b.version,
            infer_outputs=outputs, use_binary_outputs=req.use_binary_outputs,
            requested_outputs=req.request_outputs,
        )
