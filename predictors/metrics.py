"""Prometheus metrics of the predictor, exposed on kserve's ``/metrics`` (the default registry).

Labels: ``model`` (KServe model name), ``endpoint`` (legacy | v1 | v2), ``route`` (the answer's
``method_used``, e.g. ``warm:als``; ``none`` for a request that failed before routing),
``model_version`` (the bundle version, ``none`` before one is loaded) and ``code`` (HTTP status).
Route counts are per answered entity: a V1/V2 batch of n entities adds n. A request refused by
the work queue (full, or its deadline passed) counts with code 503.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "recs_requests", "Recommendation requests by outcome",
    ["model", "endpoint", "route", "model_version", "code"],
)
LATENCY = Histogram(
    "recs_request_latency_seconds", "Time to answer one recommendation request (model work only)",
    ["model", "endpoint", "route", "model_version"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
ROUTES = Counter(
    "recs_route", "Answered entities by route (segment and retriever)",
    ["model", "route", "model_version"],
)
REPEATED = Counter(
    "recs_repeated_instances", "Batch instances answered from an identical instance of the same request "
    "(same id and limit: computed once)", ["model"],
)
SESSIONS_LOGGED = Counter(
    "recs_sessions_logged", "Answers written as recommendation sessions (--log-sessions), with their impressions",
    ["model"],
)
SESSIONS_DROPPED = Counter(
    "recs_sessions_dropped", "Answers not logged: the session queue was full while the sink was down or slow, the "
    "sink refused the session (a reused session id), or it was still queued at shutdown", ["model"],
)
BUNDLE_VERSION = Gauge("recs_bundle_version", "Bundle version currently served", ["model"])
RELOADS = Counter("recs_bundle_reloads", "Bundles swapped in (initial load included)", ["model"])
