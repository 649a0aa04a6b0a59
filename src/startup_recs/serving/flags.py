"""The flags of `recs serve` and `python -m predictors` (one definition; argparse only, no kserve)."""

from __future__ import annotations

import argparse


def add_serve_flags(p: argparse.ArgumentParser, *, default_host: str = "127.0.0.1") -> None:
    """Flags shared by `recs serve` and `python -m predictors` (which adds kserve's own)."""
    p.add_argument("--bundle", action="append", required=True, metavar="URI",
                   help="bundle (.../<use_case>/vN), use-case folder with a 'latest' pointer, models root, "
                        "or USE_CASE=URI; local path or s3:// (AWS_ENDPOINT_URL honoured); repeatable")
    p.add_argument("--experiment", action="append", default=[], metavar="USE_CASE=URI:PERCENT[:NAME]",
                   help="A/B experiment: serve the bundle URI to PERCENT %% of the use case's entities (sticky "
                        "per entity, by a hash of NAME and the id); repeatable, one per use case; docs/online.md")
    p.add_argument("--host", default=default_host, help="address the REST server binds")
    p.add_argument("--reload-interval", type=float, default=30.0,
                   help="seconds between polls of the 'latest' pointers (0 disables hot reload)")
    p.add_argument("--cache-dir", default=None, help="where s3:// bundles are downloaded (default: a temp dir)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413")
    # default None: the predictor then reads RECS_REQUEST_TIMEOUT / RECS_MAX_QUEUE (a flag wins)
    p.add_argument("--request-timeout", type=float, default=None, metavar="S",
                   help="seconds a request may take, queue wait included; then 503 + Retry-After "
                        "(default: env RECS_REQUEST_TIMEOUT, else the work queue's default)")
    p.add_argument("--max-queue", type=int, default=None, metavar="N",
                   help="requests waiting for or running model work at once; more get 503 + Retry-After "
                        "(default: env RECS_MAX_QUEUE, else the work queue's default)")
    p.add_argument("--log-sessions", default=None, metavar="URL",
                   help="log every answer (a recommendation_sessions row + one impressions row per candidate) to "
                        "the app database (SQLAlchemy URL) or as Parquet parts under a storage URI (s3://, folder); "
                        "written in batches off the request path; answers carry session_id")
    p.add_argument("--fresh-exclusions", default=None, metavar="URL",
                   help="app database (SQLAlchemy URL) to read, beside each bundle's own exclusions, the candidates "
                        "each entity contacted after the bundle's data watermark: never shown again until the next "
                        "publish (docs/online.md)")
    p.add_argument("--fresh-interval", type=float, default=30.0, metavar="S",
                   help="with --fresh-exclusions: seconds between reads of new events (0: at bundle load only)")
    p.add_argument("--session-queue", type=int, default=10_000, metavar="N",
                   help="with --log-sessions: sessions that may wait in memory while the sink is down; "
                        "later ones are dropped and counted (recs_sessions_dropped_total)")
