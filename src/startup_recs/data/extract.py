"""Extract (``recs extract``): the app database or an imported log -> a validated Parquet snapshot.

Layout (docs/contracts.md): ``<out>/<table>/part-NNNNN.parquet`` plus ``extract_stats.json``.
This module reads the app database (:func:`extract_db`) and holds ``recs extract``
(:func:`cli_extract`); imported logs: :mod:`startup_recs.data.extract_events`; staging, commit
and watermarks: :mod:`startup_recs.data.snapshot_parts`.

* **Streaming.** Tables are read in chunks (SQLAlchemy ``stream_results`` + ``yield_per``;
  ``pyarrow.dataset`` batches for files), each chunk validated against ``schema.py`` and
  appended as a row group to one Parquet part in a local staging folder, so memory stays flat.
* **All or nothing.** Nothing reaches ``<out>`` until every table has been read and validated;
  then each staged file is moved (local) or uploaded (S3, one PUT each) into place and
  ``extract_stats.json`` is written last. Any bad input raises a one-line
  :class:`~startup_recs.core.errors.RecsError` and leaves ``<out>`` untouched.
* **Incremental.** A run on an existing snapshot (or with ``--since``) appends one new part per
  event table holding only rows at or after the table's previous watermark (its largest ``ts``);
  rows *equal* to the watermark that were already extracted are dropped by a multiset
  comparison with the snapshot, so events sharing the watermark timestamp are neither lost nor
  duplicated. Entity tables (``startups``, ``users``, feature tables) are rewritten whole.
  Limit: a row committed later with a ``ts`` *before* the watermark is not picked up.
* List columns stored as JSON text (how ``recs synth`` writes them; see docs/contracts.md) are
  decoded; native arrays (PostgreSQL ``text[]``) are accepted as they are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from startup_recs.core.config import event_weights as load_event_weights
from startup_recs.core.errors import ConfigError, DataError, RecsError
from startup_recs.data import schema
from startup_recs.data.extract_events import import_events
from startup_recs.data.snapshot_parts import EVENT_TIME, SnapshotRun, parse_time, to_timestamps

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger(__name__)

LIST_COLUMNS = {"startups": ("skills_needed",), "users": ("skills", "sectors", "stages")}


def _decode_lists(values: list[Any], table: str, column: str) -> pa.Array:
    """JSON-text lists (or native lists) -> list<string>."""
    out: list[list[str] | None] = []
    for v in values:
        if v is None or isinstance(v, list | tuple):
            out.append(None if v is None else [str(x) for x in v])
            continue
        try:
            parsed = json.loads(v)
        except (TypeError, json.JSONDecodeError):
            raise DataError(f"{table}.{column}: expected a JSON list, got {str(v)[:40]!r}") from None
        if not isinstance(parsed, list):
            raise DataError(f"{table}.{column}: expected a JSON list, got {str(v)[:40]!r}")
        out.append([str(x) for x in parsed])
    return pa.array(out, type=schema.STR_LIST)



# --- source 1: the app database ------------------------------------------------------------------
def _engine(url: str) -> tuple[sa.Engine, str]:
    """A connected engine for ``url`` and the URL with its password masked (for messages)."""
    import sqlalchemy as sa

    from startup_recs.data.appdb import db_url, sqlite_path
    from startup_recs.data.appdb import mask_url as _safe

    url = db_url(url)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise ConfigError(f"database file not found: {path}")
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except RecsError:
        raise
    except Exception as exc:  # noqa: BLE001 - bad dialect, host, credentials...
        raise ConfigError(f"cannot connect to {_safe(url)}: {str(exc).splitlines()[0]}") from None
    return engine, _safe(url)


def _db_tables(engine: sa.Engine, shown_url: str) -> dict[str, sa.Table]:
    """Reflect the app tables; a missing table or required column is a one-line DataError."""
    import sqlalchemy as sa

    md = sa.MetaData()
    names = set(sa.inspect(engine).get_table_names())
    out = {}
    for table in schema.APP_TABLES:
        if table not in names:
            raise DataError(f"table {table!r} not found in {shown_url}")
        t = sa.Table(table, md, autoload_with=engine)
        for field in schema.SCHEMAS[table]:
            if field.name not in t.c and not field.nullable:
                raise DataError(f"{table}: missing column {field.name!r} in {shown_url}")
        out[table] = t
    return out


def _db_select(table: str, tables: dict[str, sa.Table], lb: dt.datetime | None, sqlite: bool) -> sa.Select:
    """The contract columns of ``table`` (SQLite timestamps as text), events at or after ``lb``
    (impressions: of sessions at or after it)."""
    import sqlalchemy as sa

    t = tables[table]
    cols = []
    for field in schema.SCHEMAS[table]:
        if field.name not in t.c:
            continue
        col = t.c[field.name]
        if pa.types.is_timestamp(field.type) and sqlite:
            col = sa.type_coerce(col, sa.String()).label(field.name)  # parse text ourselves
        cols.append(col)
    stmt = sa.select(*cols)
    if table in schema.EVENT_TABLES and lb is not None:
        stmt = stmt.where(t.c[schema.EVENT_TABLES[table]] >= lb)
    elif table == "impressions" and lb is not None:
        s = tables["recommendation_sessions"]
        stmt = stmt.select_from(t.join(s, t.c.session_id == s.c.session_id)).where(s.c.ts >= lb)
    return stmt


def _stream(conn: sa.Connection, stmt: sa.Select, chunk_size: int) -> Iterator[list[tuple]]:
    """Rows of ``stmt`` in chunks of plain tuples, read through the driver's cursor.

    A server-side (named) cursor on PostgreSQL and SQLite's lazy cursor keep memory flat; plain
    tuples skip SQLAlchemy's per-row ``Row`` objects (values are converted column-wise by
    Arrow afterwards). The statement is compiled by SQLAlchemy for the connection's dialect.
    """
    dialect = conn.engine.dialect
    compiled = stmt.compile(dialect=dialect)
    sqlite = dialect.name == "sqlite"
    params = {k: _bind(v, sqlite) for k, v in compiled.params.items()}
    args: Any = tuple(params[k] for k in compiled.positiontup) if compiled.positional else params
    dbapi = conn.connection.dbapi_connection
    named = dialect.driver in ("psycopg", "psycopg2")
    cursor = dbapi.cursor(name=f"recs_extract_{uuid.uuid4().hex[:8]}") if named else dbapi.cursor()
    try:
        if named:
            cursor.itersize = chunk_size
        cursor.execute(str(compiled), args)
        while True:
            rows = cursor.fetchmany(chunk_size)
            if not rows:
                return
            yield rows
    finally:
        cursor.close()


def _bind(value: Any, sqlite: bool) -> Any:
    """A bound parameter as the driver expects it (SQLite: SQLAlchemy's UTC DateTime text)."""
    if isinstance(value, dt.datetime) and sqlite:
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _rows_to_table(table: str, names: list[str], rows: list[Any]) -> pa.Table:
    """A chunk of DB rows -> validated Arrow table of contract ``table``."""
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
    arrays = {}
    fields = {f.name: f for f in schema.SCHEMAS[table]}
    for name, values in zip(names, cols, strict=True):
        field = fields[name]
        if name in LIST_COLUMNS.get(table, ()):
            arrays[name] = _decode_lists(list(values), table, name)
        elif pa.types.is_timestamp(field.type):
            try:
                raw = pa.array(list(values))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raw = pa.array([None if v is None else str(v) for v in values], pa.string())
            arrays[name] = to_timestamps(raw, table, name) if len(raw) else pa.array([], schema.TS)
        else:
            try:
                arrays[name] = pa.array(list(values))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise DataError(f"{table}.{name}: {str(exc).splitlines()[0]}") from None
    return schema.validate(pa.table(arrays) if arrays else pa.table({}), table)


def extract_db(db_url: str, out_uri: str, since: str | None = None, chunk_size: int = 100_000,
               event_weights: dict[str, float] | str | None = None, sessions_uri: str | None = None) -> dict:
    """Read the six app tables (streamed in ``chunk_size`` rows) into a snapshot at ``out_uri``.

    Returns the new ``extract_stats.json`` content. A first run reads everything (or events at
    or after ``since``); later runs on the same ``out_uri`` append only newer events.
    ``sessions_uri``: Parquet session parts the predictor logged there
    (:mod:`startup_recs.data.session_parts`), appended with the database's own sessions.
    """
    if chunk_size <= 0:
        raise ConfigError("--chunk-size must be positive")
    weights = load_event_weights(event_weights)
    engine, shown = _engine(db_url)
    sqlite = engine.dialect.name == "sqlite"
    try:
        tables = _db_tables(engine, shown)
        run = SnapshotRun(out_uri, "db", None, since, weights)
        try:
            extra: dict[str, pa.Table] = {}
            if sessions_uri:
                from startup_recs.data.session_parts import read_session_parts

                extra = read_session_parts(sessions_uri, run.lower_bound("recommendation_sessions"),
                                           _sessions_at_watermark(run))
            with engine.connect() as conn:
                for table in schema.APP_TABLES:
                    lb = run.lower_bound("recommendation_sessions" if table == "impressions" else table)
                    if table == "impressions" and run.prev is None and run.since is None:
                        lb = None
                    stmt = _db_select(table, tables, lb if table in EVENT_TIME or table == "impressions" else None, sqlite)
                    names = [c.name for c in stmt.selected_columns]
                    seen_sessions = _sessions_at_watermark(run) if table == "impressions" else set()

                    def chunks(stmt: sa.Select = stmt, names: list[str] = names, table: str = table,
                               seen: set[str] = seen_sessions) -> Iterator[pa.Table]:
                        for part in _stream(conn, stmt, chunk_size):
                            tbl = _rows_to_table(table, names, part)
                            if seen:
                                mask = pc.invert(pc.is_in(tbl.column("session_id"), pa.array(sorted(seen))))
                                tbl = tbl.filter(mask)
                            yield tbl
                        if table in extra:  # the Parquet session parts (already incremental)
                            yield extra[table]

                    n = run.write(table, chunks())
                    log.info("extract %s: %d rows", table, n)
            stats = run.commit()
        finally:
            run.cleanup()
    except RecsError:
        raise
    except Exception as exc:  # noqa: BLE001 - driver errors mid-read become one line
        import sqlalchemy as sa

        if isinstance(exc, sa.exc.SQLAlchemyError):
            raise DataError(f"reading {shown}: {str(exc).splitlines()[0]}") from None
        raise
    finally:
        engine.dispose()
    return stats


def _sessions_at_watermark(run: SnapshotRun) -> set[str]:
    """Sessions already in the snapshot at the sessions' watermark (their impressions too)."""
    from startup_recs.data.session_parts import sessions_at_watermark

    return sessions_at_watermark(run)


# --- CLI -----------------------------------------------------------------------------------------
def cli_extract(args: argparse.Namespace) -> int:
    if args.db:
        if args.use_case:
            raise ConfigError("--use-case applies to --events imports, not --db")
        stats = extract_db(args.db, args.out, since=args.since, chunk_size=args.chunk_size,
                           event_weights=args.event_weights, sessions_uri=getattr(args, "sessions", None))
    else:
        if not args.use_case:
            raise ConfigError("--use-case is required with --events")
        stats = import_events(
            args.events, args.out, args.use_case, entity_col=args.entity_col,
            candidate_col=args.candidate_col, time_col=args.time_col, event_col=args.event_col,
            weight_col=args.weight_col, entity_features=args.entity_features,
            candidate_features=args.candidate_features, event_weights=args.event_weights,
            since=args.since, chunk_size=args.chunk_size, sessions_uri=getattr(args, "sessions", None))
    appended = stats["runs"][-1]["appended"]
    print(f"snapshot {args.out} (source={stats['source']}"
          + (f", use_case={stats['use_case']}" if stats["use_case"] else "") + ")")
    for table, total in stats["tables"].items():
        print(f"  {table:<24} +{appended.get(table, 0):>10,}  total {total:>10,}")
    print(f"  watermark {stats['watermark']}")
    return 0


__all__ = ["cli_extract", "extract_db", "import_events", "parse_time"]
