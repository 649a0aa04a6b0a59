"""One ``kserve.ModelServer`` serving every use case, bound where we say, with hot reload.

The differences from a stock ``ModelServer``, all deliberate:
- the REST server binds ``host`` (kserve hard-codes 0.0.0.0): ``recs serve`` defaults to
  127.0.0.1, the image passes 0.0.0.0;
- it serves the allow-list of :mod:`predictors.routes` (no model repository extension, versioned
  routes that check the version, our own body decoders), behind :class:`RequestGuard`, with the
  error answers of :mod:`predictors.errors`; gRPC gets no repository extension either;
- server readiness means every model has a verified bundle (kserve: the process is up);
- every model is registered even when its bundle is missing or corrupt. kserve would raise
  ``NoModelReady`` and exit, and Kubernetes would restart it into the same failure (a crash loop
  of tracebacks); here the model answers 503 on readiness with one log line, and becomes ready
  when the poller finds a good bundle. A request never triggers a load (kserve's dataplane
  would load a not-ready model on the event loop);
- model work is admitted through a bounded queue with a per-request deadline
  (:mod:`predictors.work_queue`; ``--request-timeout`` / ``--max-queue``, or the
  ``RECS_REQUEST_TIMEOUT`` / ``RECS_MAX_QUEUE`` environment; a flag wins over the environment);
- at start the download folders a previous container left in ``--cache-dir`` are removed, and
  ``recs_bundle_fallback`` tells when a model serves an older bundle than ``latest`` names.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kserve.model_server as kms
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import ModelNotFound, ModelNotReady
from kserve.model import BaseKServeModel
from kserve.model_server import ModelServer
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer

from predictors import bundle_metrics, session_log, work_queue
from predictors.app import RequestGuard, add_legacy_routes
from predictors.errors import NotFound, add_exception_handlers
from predictors.model import RecsModel, link_twins
from predictors.routes import register_routes
from predictors.warm_up import warming
from predictors.work_queue import Limits
from startup_recs.core.errors import ConfigError
from startup_recs.serving import api
from startup_recs.serving.experiments import Experiment, parse_experiments
from startup_recs.serving.flags import add_serve_flags
from startup_recs.serving.fresh import FreshExclusions
from startup_recs.serving.reload import (
    BundleSlot,
    Loader,
    Poller,
    clean_cache,
    default_loader,
    expand_sources,
)

log = logging.getLogger("predictors")


class _RESTServer(RESTServer):
    """kserve's REST server on ``host``, with our routes and our error handlers (after kserve's)."""

    def __init__(self, *args: Any, host: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = host

    def _register_endpoints(self, app: Any) -> None:
        register_routes(app, self.dataplane)

    def _add_exception_handlers(self, app: Any) -> None:
        super()._add_exception_handlers(app)
        add_exception_handlers(app)


class _NoRepository(ModelRepositoryExtension):
    """The model repository extension, switched off (gRPC's RepositoryModelLoad/Unload): what is
    served is decided by published bundles, never by a client."""

    async def load(self, model_name: str) -> None:
        raise NotFound("the model repository extension is not served")

    async def unload(self, model_name: str) -> None:
        raise NotFound("the model repository extension is not served")


class _DataPlane(DataPlane):
    """Server readiness (``/v2/health/ready``) = every registered model is ready.

    kserve answers ready as soon as the process is up; a pod whose bundle failed to load would
    then take traffic it can only answer with 503. Liveness stays kserve's (the process is up).
    """

    async def ready(self) -> bool:
        models = list(self.model_registry.get_models().values())
        return bool(models) and all([await m.healthy() for m in models])

    async def get_model(self, name: str) -> BaseKServeModel:
        """The model, ready, or ModelNotFound / ModelNotReady: never a load on the event loop."""
        model = self.model_registry.get_model(name)
        if model is None:
            raise ModelNotFound(name)
        if not await model.healthy():
            raise ModelNotReady(name)
        return model


class RecsModelServer(ModelServer):
    """``ModelServer`` with a bind address, tolerant registration, model-aware server readiness
    and a bundle poller."""

    def __init__(self, *, host: str = "127.0.0.1", poller: Poller | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.poller = poller
        self.dataplane = _DataPlane(model_registry=self.registered_models)
        self.model_repository_extension = _NoRepository(model_registry=self.registered_models)

    def start(self, models: list[RecsModel]) -> None:  # type: ignore[override]
        if self.workers != 1:
            raise ConfigError("workers must be 1: scale out with replicas (the legacy routes live in this process)")
        for model in models:
            self.register_model(model)
            model.enable_latency_logging = self.enable_latency_logging
            model.start()
        if not any(m.ready for m in models):
            log.warning("no model is ready yet; readiness answers 503 until a bundle loads")
        self._rest_server = _RESTServer(
            FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
            host=self.host, access_log_format=self.access_log_format, workers=1,
            grace_period=self.grace_period, event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive, ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
        )
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            from kserve.protocol.grpc.server import GRPCServer

            self._grpc_server = GRPCServer(self.grpc_port, self.dataplane, self.model_repository_extension,
                                           kwargs=vars(kms.args), grace_period=self.grace_period)
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        if self.poller is not None:
            self.poller.start()
        try:
            asyncio.run(self._serve())
        finally:
            if self.poller is not None:
                self.poller.stop()


def build_models(bundles: Sequence[str], *, loader: Loader = default_loader,
                 cache_dir: str | None = None, experiments: Sequence[str] = (),
                 fresh: FreshExclusions | None = None) -> list[RecsModel]:
    """One loaded (or not-ready) :class:`RecsModel` per use case named by ``bundles``; every
    bundle is warmed up before it is served (:mod:`predictors.warm_up`). ``experiments``
    (``--experiment`` values): the use case's model answers through
    :class:`~startup_recs.serving.experiments.Experiment` (its treatment slot: ``model.experiment``).
    ``fresh`` (``--fresh-exclusions``): every loaded bundle, either arm's, also excludes what
    each entity contacted after its data watermark."""
    models = []
    if cache_dir:
        clean_cache(cache_dir)  # before any slot loads: those folders belong to a dead process
    sources = expand_sources(bundles)
    specs = parse_experiments(experiments, sources)
    base = fresh.wrap(loader) if fresh is not None else loader
    for use_case, source in sources.items():
        model_loader, experiment = warming(base), None
        if use_case in specs:
            treatment = BundleSlot(specs[use_case].source, use_case, loader=model_loader, cache_root=cache_dir)
            experiment = Experiment(specs[use_case], treatment)
            treatment.refresh()
            model_loader = experiment.wrap(model_loader)
        slot = BundleSlot(source, use_case, loader=model_loader, cache_root=cache_dir)
        model = RecsModel(slot)
        model.experiment = experiment
        slot._on_swap = model.on_swap
        model.load()
        models.append(model)
    return models


def serve(bundles: Sequence[str], *, host: str = "127.0.0.1", port: int = 8080, reload_interval: float = 30.0,
          cache_dir: str | None = None, max_body_bytes: int = api.MAX_BODY_BYTES,
          limits: Limits | None = None, loader: Loader = default_loader, models: list[Any] | None = None,
          experiments: Sequence[str] = (), log_sessions: str | None = None, session_queue: int = 10_000,
          fresh_exclusions: str | None = None, fresh_interval: float = 30.0, **server_kwargs: Any) -> None:
    """Load the bundles and serve them until SIGINT/SIGTERM. ``reload_interval <= 0`` disables
    polling. ``limits``: the work queue's (default: from the environment). ``models`` (instead
    of ``bundles``) serves ready-made models: the benchmark's trivial model goes through exactly
    this path. ``log_sessions``: a SQLAlchemy URL or storage URI every answer is logged to
    (:mod:`predictors.session_log`; at most ``session_queue`` sessions wait for it), flushed on
    shutdown. ``fresh_exclusions``: the app database whose events after each bundle's watermark
    are excluded too (:mod:`startup_recs.serving.fresh`), read every ``fresh_interval`` seconds."""
    queue = work_queue.configure(limits or Limits.from_env())
    fresh = FreshExclusions(fresh_exclusions, fresh_interval) if fresh_exclusions else None
    if models is None:
        models = build_models(bundles, loader=loader, cache_dir=cache_dir, experiments=experiments, fresh=fresh)
    if fresh is not None:
        log.info("fresh exclusions from %s: %s pairs (read every %ss)", fresh.shown_url, fresh.counts(),
                 fresh.interval_s if fresh.interval_s > 0 else "-")
        fresh.start()
    link_twins(models)  # reverse answers fuse the forward twin's scores when it is served here
    app = kms.app
    app.add_middleware(RequestGuard, max_bytes=max_body_bytes)
    add_legacy_routes(app, {m.use_case.name: m for m in models})
    slots = [m.slot for m in models if isinstance(m, RecsModel)]
    running = [e for e in (getattr(m, "experiment", None) for m in models) if e is not None]
    slots += [e.treatment for e in running]  # the treatment hot-reloads like the control
    for e in running:
        log.info("experiment %s", e.describe())
    poller = Poller(slots, reload_interval) if reload_interval > 0 and slots else None
    bundle_metrics.register([(m.name, "control", m.slot) for m in models if isinstance(m, RecsModel)]
                            + [(m.name, "treatment", m.experiment.treatment) for m in models
                               if getattr(m, "experiment", None) is not None])
    server_kwargs.setdefault("enable_grpc", False)
    server_kwargs.setdefault("enable_latency_logging", False)
    for m in models:
        b = m.slot.current
        log.info("model %s: %s", m.name, f"{b.version} ready" if b else "NOT READY")
    log.info("serving on http://%s:%d (reload every %ss; request timeout %gs, queue %d)", host, port,
             reload_interval if poller else "-", queue.limits.request_timeout_s, queue.limits.max_queue)
    print_examples(models, host, port)
    sessions = session_log.start(log_sessions, max_pending=session_queue) if log_sessions else None
    for m in models:
        if isinstance(m, RecsModel):
            m.sessions = sessions
    try:
        RecsModelServer(host=host, poller=poller, http_port=port, **server_kwargs).start(models)
    finally:
        if fresh is not None:
            fresh.stop()
        if sessions is not None:
            sessions.close()


def print_examples(models: Sequence[RecsModel], host: str, port: int) -> None:
    """Print working curl calls for every ready model (an entity the bundle knows, its busiest)."""
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    lines = []
    for m in models:
        b = m.slot.current
        data = getattr(b.model, "data", None) if b else None
        if data is None or not hasattr(data, "known_entities"):
            continue
        known = data.known_entities()
        if not known:
            continue
        entity = max(known[:2000], key=data.interaction_count) if hasattr(data, "interaction_count") else known[0]
        lines += [f"# {m.name} ({b.version}), entity {entity}:"] + api.example_curls(base, m.use_case, entity)
    if lines:
        print("try:\n  " + "\n  ".join(lines), flush=True)


def cli_serve(args: argparse.Namespace) -> int:
    """``recs serve``: REST only (no gRPC), loopback by default."""
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1..65535, got {args.port}")
    serve(args.bundle, host=args.host, port=args.port, reload_interval=args.reload_interval,
          cache_dir=args.cache_dir, max_body_bytes=args.max_body_bytes, limits=limits_of(args),
          experiments=getattr(args, "experiment", None) or (), log_sessions=args.log_sessions,
          session_queue=args.session_queue, fresh_exclusions=args.fresh_exclusions,
          fresh_interval=args.fresh_interval)
    return 0


def limits_of(args: argparse.Namespace) -> Limits:
    """The work queue's limits: each flag when given, else its environment variable, else the
    default (:meth:`Limits.from_env`)."""
    env = Limits.from_env()
    timeout, queue = getattr(args, "request_timeout", None), getattr(args, "max_queue", None)
    return Limits(env.request_timeout_s if timeout is None else timeout, env.max_queue if queue is None else queue)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m predictors``: kserve's own flags (``--http_port``, ``--enable_grpc``, ...) plus ours."""
    parser = argparse.ArgumentParser(prog="python -m predictors", parents=[kms.parser],
                                     description="startup-recs KServe predictor")
    add_serve_flags(parser, default_host="0.0.0.0")
    args = parser.parse_args(argv)
    kms.args = args  # kserve reads logging and gRPC settings from this module global
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cache_dir:
        Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    serve(args.bundle, host=args.host, port=args.http_port, reload_interval=args.reload_interval,
          cache_dir=args.cache_dir, max_body_bytes=args.max_body_bytes, limits=limits_of(args),
          experiments=args.experiment, log_sessions=args.log_sessions, session_queue=args.session_queue,
          fresh_exclusions=args.fresh_exclusions, fresh_interval=args.fresh_interval,
          grpc_port=args.grpc_port, workers=args.workers, max_threads=args.max_threads,
          max_asyncio_workers=args.max_asyncio_workers, enable_grpc=args.enable_grpc,
          enable_docs_url=args.enable_docs_url, enable_latency_logging=args.enable_latency_logging,
          access_log_format=args.access_log_format, event_loop=args.event_loop,
          timeout_keep_alive=args.timeout_keep_alive, ssl_certfile=args.ssl_certfile,
          ssl_keyfile=args.ssl_keyfile)
    return 0
