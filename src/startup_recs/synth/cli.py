"""``recs synth``: generate a marketplace, write it into the app database and the oracle beside it.

What: :func:`cli_synth` writes the six app tables (SQLite file or PostgreSQL URL, ``--force`` to
replace), the ``synth_meta`` row naming the world (:mod:`startup_recs.synth.meta`) and ``oracle.parquet`` (``--oracle``, default: beside a SQLite file, else
``data/oracle.parquet``), then prints rows per table, startups per segment and the time taken
(seconds of wall time).
"""

from __future__ import annotations

import argparse
import time

from startup_recs.core import storage
from startup_recs.core.errors import StorageError
from startup_recs.data import schema
from startup_recs.data.appdb import db_url, mask_url, sqlite_path, write_db
from startup_recs.synth.meta import write_meta
from startup_recs.synth.tables import generate, segment_counts


def default_oracle_path(url: str) -> str:
    """``oracle.parquet`` beside a SQLite database file; ``data/oracle.parquet`` for a server URL."""
    path = sqlite_path(db_url(url))
    return str(path.parent / "oracle.parquet") if path is not None else "data/oracle.parquet"


def cli_synth(args: argparse.Namespace) -> int:
    """``recs synth --db URL --size S --seed N [--force] [--oracle URI]``."""
    t0 = time.perf_counter()
    tables = generate(args.size, args.seed)
    t_gen = time.perf_counter() - t0
    url = db_url(args.db)
    write_db({k: v for k, v in tables.items() if k != "oracle"}, url, replace=args.force)
    write_meta(url, args.size, args.seed)  # the world that made it: recs simulate-traffic checks it
    oracle_uri = args.oracle or default_oracle_path(url)
    try:
        storage.write_table(tables["oracle"], oracle_uri)
    except OSError as exc:
        raise StorageError(f"cannot write {oracle_uri}: {exc}") from None
    elapsed = time.perf_counter() - t0
    print(f"synthetic marketplace size={args.size} seed={args.seed} -> {mask_url(url)}")
    for name in (*schema.APP_TABLES, "oracle"):
        print(f"  {name:<24} {tables[name].num_rows:>10,} rows")
    for use_case, seg in segment_counts(tables).items():
        print(f"  {use_case:<24} startups cold={seg['cold']} warm={seg['warm']} hot={seg['hot']}")
    print(f"  oracle -> {oracle_uri}")
    print(f"  time: generate {t_gen:.1f}s, total {elapsed:.1f}s")
    return 0
