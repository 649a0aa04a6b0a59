"""Extract (``recs extract``): the app database or an imported log -> a validated Parquet snapshot.

Layout (docs/contracts.md): ``<out>/<table>/part-NNNNN.parquet`` plus ``extract_stats.json``.

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
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from startup_recs.core import storage
from startup_recs.core.config import event_weights as load_event_weights
from startup_recs.core.errors import ConfigError, DataError, RecsError, StorageError
from startup_recs.core.usecases import get_use_case
from startup_recs.data import schema

log = logging.getLogger(__name__)

STATS_FILE = "extract_stats.json"
LIST_COLUMNS = {"startups": ("skills_needed",), "users": ("skills", "sectors", "stages")}
ENTITY_TABLES = ("startups", "users", "entity_features", "candidate_features")
EVENT_TIME = {**schema.EVENT_TABLES, "events": "ts"}
# Tables that grow by one part per run (the rest are rewritten whole).
APPEND_TABLES = frozenset({*EVENT_TIME, "impressions"})


# --- small helpers -------------------------------------------------------------------------------
def parse_time(value: str | dt.datetime, what: str = "--since") -> dt.datetime:
    """An ISO-8601 string (or datetime) as an aware UTC datetime; naive means UTC."""
    if isinstance(value, dt.datetime):
        t = value
    else:
        try:
            t = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{what}: unparseable timestamp {value!r} (expected ISO-8601)") from None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()


def _to_timestamps(values: pa.Array | pa.ChunkedArray, table: str, column: str) -> pa.Array:
    """Strings / datetimes / epoch seconds -> timestamp[us, UTC]; names the first bad value."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    t = arr.type
    if pa.types.is_null(t):  # an all-null chunk of a nullable column (created_at)
        return pa.nulls(len(arr), schema.TS)
    if pa.types.is_timestamp(t):
        return (pc.assume_timezone(arr, "UTC") if t.tz is None else arr).cast(schema.TS)
    if pa.types.is_integer(t) or pa.types.is_floating(t):  # epoch seconds
        us = pc.multiply(arr.cast(pa.float64()), 1e6)
        return pc.round(us).cast(pa.int64()).cast(schema.TS)
    if pa.types.is_date(t):
        return arr.cast(pa.timestamp("us")).cast(schema.TS)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        arr = arr.cast(pa.string())
        for target in (pa.timestamp("us"), schema.TS):
            try:
                out = arr.cast(target)
                return (pc.assume_timezone(out, "UTC") if out.type.tz is None else out).cast(schema.TS)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        import pandas as pd

        values_pd = arr.to_pandas()
        parsed = pd.to_datetime(values_pd, utc=True, errors="coerce", format="mixed")
        bad = parsed.isna() & values_pd.notna()
        if bad.any():
            raise DataError(f"{table}.{column}: unparseable timestamp {values_pd[bad].iloc[0]!r}")
        return pa.array(parsed, type=schema.TS)
    raise DataError(f"{table}.{column}: cannot read {t} as a timestamp")


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


def _read_stats(out_uri: str) -> dict | None:
    uri = storage.join(out_uri, STATS_FILE)
    try:
        return storage.read_json(uri) if storage.exists(uri) else None
    except StorageError as exc:
        raise StorageError(f"cannot read the previous {STATS_FILE}: {exc}") from None


# --- the snapshot writer shared by both sources --------------------------------------------------
class _SnapshotRun:
    """Stages one extract run locally, then commits it into ``out`` (stats written last)."""

    def __init__(self, out_uri: str, source: str, use_case: str | None, since: str | None,
                 weights: dict[str, float]) -> None:
        self.out = str(out_uri).rstrip("/")
        self.source, self.use_case, self.weights = source, use_case, weights
        self.prev = _read_stats(self.out)
        if self.prev is not None and (
                self.prev.get("source") != source or self.prev.get("use_case") != use_case):
            raise ConfigError(
                f"{self.out} holds a snapshot of source={self.prev.get('source')!r} "
                f"use_case={self.prev.get('use_case')!r}; extract into a new --out"
            )
        self.since = parse_time(since) if since else None
        if storage.is_s3(self.out):
            self.staging = Path(tempfile.mkdtemp(prefix=".recs-extract-"))
        else:
            target = storage.local(self.out)
            target.parent.mkdir(parents=True, exist_ok=True)
            self.staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex[:8]}"
            self.staging.mkdir()
        self.staged: dict[str, str] = {}  # table -> part file name
        self.appended: dict[str, int] = {}
        self.ranges: dict[str, tuple[dt.datetime, dt.datetime]] = {}

    # previous state
    def prev_parts(self, table: str) -> list[str]:
        return list((self.prev or {}).get("parts", {}).get(table, []))

    def prev_watermark(self, table: str) -> dt.datetime | None:
        wm = (self.prev or {}).get("watermarks", {}).get(table)
        return parse_time(wm, f"{STATS_FILE} watermark") if wm else None

    def lower_bound(self, table: str) -> dt.datetime | None:
        """Rows with ``ts >= lower_bound`` are read for event table ``table``."""
        wm = self.prev_watermark(table)
        if wm is not None and self.since is not None and self.since < wm:
            log.info("%s: --since %s is before the snapshot's watermark %s; using the watermark",
                     table, _iso(self.since), _iso(wm))
        candidates = [t for t in (wm, self.since) if t is not None]
        return max(candidates) if candidates else None

    def _existing_at(self, table: str, when: dt.datetime) -> Counter:
        """Multiset of rows of ``table`` already in the snapshot with ``ts == when``."""
        parts = self.prev_parts(table)
        if not parts:
            return Counter()
        fs, path = storage.filesystem(storage.join(self.out, table))
        files = [f"{path}/{p}" for p in parts]
        got = pq.read_table(files, filesystem=fs, filters=[(EVENT_TIME[table], "=", pa.scalar(when, schema.TS))])
        return Counter(zip(*[got.column(c).to_pylist() for c in got.column_names], strict=True))

    # writing
    def write(self, table: str, chunks: Iterator[pa.Table]) -> int:
        """Stage validated chunks of ``table`` as one Parquet part; returns the rows written."""
        is_event = table in EVENT_TIME
        append = table in APPEND_TABLES
        seq = len(self.prev_parts(table)) if append else 0
        name = f"part-{seq:05d}.parquet"
        folder = self.staging / table
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        tcol = EVENT_TIME.get(table)
        wm = self.prev_watermark(table) if is_event else None
        lb = self.lower_bound(table) if is_event else None
        seen = self._existing_at(table, wm) if (wm is not None and lb == wm) else Counter()
        rows, lo, hi = 0, None, None
        writer: pq.ParquetWriter | None = None
        try:
            for chunk in chunks:
                if is_event and lb is not None:
                    chunk = chunk.filter(pc.greater_equal(chunk.column(tcol), pa.scalar(lb, schema.TS)))
                    if seen and chunk.num_rows:
                        chunk = _drop_seen(chunk, tcol, wm, seen)
                if chunk.num_rows == 0:
                    continue
                if writer is None:
                    writer = pq.ParquetWriter(path, chunk.schema, compression="zstd")
                writer.write_table(chunk)
                rows += chunk.num_rows
                if tcol:
                    mm = pc.min_max(chunk.column(tcol)).as_py()
                    lo = mm["min"] if lo is None or mm["min"] < lo else lo
                    hi = mm["max"] if hi is None or mm["max"] > hi else hi
            first_run = not self.prev_parts(table)
            if writer is None and (not append or first_run):
                writer = pq.ParquetWriter(path, schema_of(table, self), compression="zstd")
        finally:
            if writer is not None:
                writer.close()
        if writer is not None:
            self.staged[table] = name
        self.appended[table] = rows
        if lo is not None:
            self.ranges[table] = (lo, hi)
        return rows

    def commit(self) -> dict:
        """Move staged parts into ``out``, drop stale parts, write extract_stats.json last."""
        prev = self.prev or {}
        parts: dict[str, list[str]] = {}
        for table in set(self.appended) | set(prev.get("parts", {})):
            if table in self.appended and table not in APPEND_TABLES:
                parts[table] = [self.staged[table]] if table in self.staged else []
            else:
                parts[table] = self.prev_parts(table) + ([self.staged[table]] if table in self.staged else [])
        # remove files a crashed earlier run may have left (not listed in the stats)
        for table in parts:
            folder = storage.join(self.out, table)
            for f in storage.listdir(folder):
                if f.startswith("part-") and f not in parts[table]:
                    storage.remove(storage.join(folder, f))
        for table, name in self.staged.items():
            src, dst = self.staging / table / name, storage.join(self.out, table, name)
            if storage.is_s3(self.out):
                storage.upload_file(src, dst)
            else:
                storage.local(dst).parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, storage.local(dst))
        totals = dict(prev.get("tables", {}))
        for table, n in self.appended.items():
            totals[table] = (totals.get(table, 0) + n) if table in APPEND_TABLES else n
        watermarks = dict(prev.get("watermarks", {}))
        for table, (_, hi) in self.ranges.items():
            old = watermarks.get(table)
            if old is None or hi > parse_time(old):
                watermarks[table] = _iso(hi)
        lows = [parse_time(prev["time_range"][0])] if prev.get("time_range") else []
        lows += [lo for lo, _ in self.ranges.values()]
        highs = [parse_time(w) for w in watermarks.values()]
        now = dt.datetime.now(dt.UTC)
        stats = {
            "source": self.source,
            "use_case": self.use_case,
            "tables": totals,
            "time_range": [_iso(min(lows)), _iso(max(highs))] if lows and highs else None,
            "watermark": _iso(max(highs)) if highs else None,
            "watermarks": watermarks,
            "extracted_at": _iso(now),
            "event_weights": self.weights,
            "parts": parts,
            "runs": [*prev.get("runs", []), {
                "extracted_at": _iso(now), "since": _iso(self.since), "appended": self.appended}],
        }
        storage.write_json(storage.join(self.out, STATS_FILE), stats)
        return stats

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def schema_of(table: str, run: _SnapshotRun) -> pa.Schema:
    if table in schema.SCHEMAS:
        return schema.SCHEMAS[table]
    return run.feature_schemas[table]  # type: ignore[attr-defined]


def _drop_seen(chunk: pa.Table, tcol: str, wm: dt.datetime, seen: Counter) -> pa.Table:
    """Drop rows of ``chunk`` at the watermark that the snapshot already holds (multiset)."""
    at = pc.equal(chunk.column(tcol), pa.scalar(wm, schema.TS)).to_numpy(zero_copy_only=False)
    if not at.any():
        return chunk
    keep = [True] * chunk.num_rows
    cols = [chunk.column(c).to_pylist() for c in chunk.column_names]
    for i in (i for i, flag in enumerate(at) if flag):
        key = tuple(col[i] for col in cols)
        if seen.get(key, 0) > 0:
            seen[key] -= 1
            keep[i] = False
    return chunk.filter(pa.array(keep))


# --- source 1: the app database ------------------------------------------------------------------
def _engine(url: str):
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


def _db_tables(engine, shown_url: str) -> dict[str, Any]:
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


def _db_select(table: str, tables: dict[str, Any], lb: dt.datetime | None, sqlite: bool):
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


def _stream(conn, stmt, chunk_size: int) -> Iterator[list[tuple]]:
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
            arrays[name] = _to_timestamps(raw, table, name) if len(raw) else pa.array([], schema.TS)
        else:
            try:
                arrays[name] = pa.array(list(values))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise DataError(f"{table}.{name}: {str(exc).splitlines()[0]}") from None
    return schema.validate(pa.table(arrays) if arrays else pa.table({}), table)


def extract_db(db_url: str, out_uri: str, since: str | None = None, chunk_size: int = 100_000,
               event_weights: dict[str, float] | str | None = None) -> dict:
    """Read the six app tables (streamed in ``chunk_size`` rows) into a snapshot at ``out_uri``.

    Returns the new ``extract_stats.json`` content. A first run reads everything (or events at
    or after ``since``); later runs on the same ``out_uri`` append only newer events.
    """
    if chunk_size <= 0:
        raise ConfigError("--chunk-size must be positive")
    weights = load_event_weights(event_weights)
    engine, shown = _engine(db_url)
    sqlite = engine.dialect.name == "sqlite"
    try:
        tables = _db_tables(engine, shown)
        run = _SnapshotRun(out_uri, "db", None, since, weights)
        try:
            with engine.connect() as conn:
                for table in schema.APP_TABLES:
                    lb = run.lower_bound("recommendation_sessions" if table == "impressions" else table)
                    if table == "impressions" and run.prev is None and run.since is None:
                        lb = None
                    stmt = _db_select(table, tables, lb if table in EVENT_TIME or table == "impressions" else None, sqlite)
                    names = [c.name for c in stmt.selected_columns]
                    seen_sessions = _sessions_at_watermark(run) if table == "impressions" else set()

                    def chunks(stmt=stmt, names=names, table=table, seen=seen_sessions) -> Iterator[pa.Table]:
                        for part in _stream(conn, stmt, chunk_size):
                            tbl = _rows_to_table(table, names, part)
                            if seen:
                                mask = pc.invert(pc.is_in(tbl.column("session_id"), pa.array(sorted(seen))))
                                tbl = tbl.filter(mask)
                            yield tbl

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


def _sessions_at_watermark(run: _SnapshotRun) -> set[str]:
    """Sessions already in the snapshot at the sessions' watermark (their impressions too)."""
    wm = run.prev_watermark("recommendation_sessions")
    if wm is None:
        return set()
    rows = run._existing_at("recommendation_sessions", wm)
    return {key[0] for key in rows}


# --- source 2: an imported log -------------------------------------------------------------------
def _dataset(path: str, text_columns: list[str]):
    import pyarrow.csv as pacsv
    import pyarrow.dataset as ds

    if not storage.exists(path):
        raise DataError(f"file not found: {path}")
    fs, p = storage.filesystem(path)
    if str(path).lower().endswith((".csv", ".csv.gz")):
        fmt = ds.CsvFileFormat(convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(text_columns, pa.string()), strings_can_be_null=True))
        return ds.dataset(p, format=fmt, filesystem=fs)
    try:
        return ds.dataset(p, format="parquet", filesystem=fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot read {path} as Parquet: {str(exc).splitlines()[0]}") from None


def _read_features(path: str, id_col: str, out_col: str, what: str) -> pa.Table:
    """A feature table with its id column renamed to ``out_col`` (strings, unique, non-null)."""
    d = _dataset(path, [id_col, out_col])
    table = d.to_table()
    col = id_col if id_col in table.column_names else out_col
    if col not in table.column_names:
        raise DataError(f"{what} {path}: missing id column {id_col!r}")
    ids = table.column(col).cast(pa.string())
    if ids.null_count:
        raise DataError(f"{what} {path}: {ids.null_count} null id(s) in {col!r}")
    if pc.count_distinct(ids).as_py() != len(ids):
        raise DataError(f"{what} {path}: duplicate ids in {col!r}")
    rest = [c for c in table.column_names if c not in (col, out_col)]
    return pa.table([ids, *[table.column(c) for c in rest]], names=[out_col, *rest])


def import_events(path: str, out_uri: str, use_case: str, entity_col: str = "entity_id",
                  candidate_col: str = "candidate_id", time_col: str = "ts", event_col: str = "event",
                  weight_col: str = "weight", entity_features: str | None = None,
                  candidate_features: str | None = None,
                  event_weights: dict[str, float] | str | None = None, since: str | None = None,
                  chunk_size: int = 100_000) -> dict:
    """Import an interaction log (Parquet or CSV) as snapshot table ``events`` for ``use_case``.

    Columns are renamed to ``entity_id, candidate_id, ts, event, weight``. Without an event
    column every row is event ``"interaction"``; without a weight column the weight is 1.
    Timestamps may be ISO strings, timestamps or epoch seconds. Every event name must have a
    configured weight (defaults, ``RECS_EVENT_WEIGHTS`` or ``event_weights``).
    """
    uc = get_use_case(use_case).name
    if chunk_size <= 0:
        raise ConfigError("--chunk-size must be positive")
    weights = load_event_weights(event_weights)
    allowed = frozenset(weights)
    d = _dataset(path, [entity_col, candidate_col, event_col])
    present = set(d.schema.names)
    for col, flag in ((entity_col, "--entity-col"), (candidate_col, "--candidate-col"), (time_col, "--time-col")):
        if col not in present:
            raise DataError(f"events file {path}: missing column {col!r} ({flag})")
    has_event = event_col in present
    if not has_event and event_col != "event":
        raise DataError(f"events file {path}: missing column {event_col!r} (--event-col)")
    has_weight = weight_col in present
    if not has_weight and weight_col != "weight":
        raise DataError(f"events file {path}: missing column {weight_col!r} (--weight-col)")
    columns = [entity_col, candidate_col, time_col] + ([event_col] if has_event else []) + (
        [weight_col] if has_weight else [])

    def chunks() -> Iterator[pa.Table]:
        try:
            batches = d.to_batches(columns=columns, batch_size=chunk_size)
            for batch in batches:
                yield _events_chunk(batch, entity_col, candidate_col, time_col,
                                    event_col if has_event else None,
                                    weight_col if has_weight else None, allowed)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"events file {path}: {str(exc).splitlines()[0]}") from None

    feats = {}
    if entity_features:
        feats["entity_features"] = _read_features(entity_features, entity_col, "entity_id", "entity features")
    if candidate_features:
        feats["candidate_features"] = _read_features(candidate_features, candidate_col, "candidate_id",
                                                     "candidate features")
    run = _SnapshotRun(out_uri, "events", uc, since, weights)
    run.feature_schemas = {k: v.schema for k, v in feats.items()}  # type: ignore[attr-defined]
    try:
        n = run.write("events", chunks())
        if n == 0 and not run.prev_parts("events"):
            raise DataError(f"events file {path}: no events" + (f" at or after {since}" if since else ""))
        for table, tbl in feats.items():
            run.write(table, iter([tbl]))
        stats = run.commit()
    finally:
        run.cleanup()
    return stats


def _events_chunk(batch: pa.RecordBatch, entity_col: str, candidate_col: str, time_col: str,
                  event_col: str | None, weight_col: str | None, allowed: frozenset[str]) -> pa.Table:
    n = batch.num_rows
    ent = batch.column(entity_col).cast(pa.string())
    cand = batch.column(candidate_col).cast(pa.string())
    for arr, col in ((ent, entity_col), (cand, candidate_col)):
        if arr.null_count:
            raise DataError(f"events.{col}: {arr.null_count} null id(s)")
    ts = _to_timestamps(batch.column(time_col), "events", time_col)
    if ts.null_count:
        raise DataError(f"events.{time_col}: {ts.null_count} null timestamp(s)")
    if event_col is None:
        event = pa.array(["interaction"] * n, pa.string())
    else:
        event = batch.column(event_col).cast(pa.string())
        if event.null_count:
            raise DataError(f"events.{event_col}: {event.null_count} null event(s)")
        unknown = sorted(set(pc.unique(event).to_pylist()) - allowed)
        if unknown:
            raise DataError(f"events.{event_col}: unknown event {unknown[0]!r} (configured: "
                            f"{', '.join(sorted(allowed))}; add it with --event-weights)")
    if weight_col is None:
        weight = pa.array([1.0] * n, pa.float64())
    else:
        try:
            weight = pc.fill_null(batch.column(weight_col).cast(pa.float64()), 1.0)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(f"events.{weight_col}: weights must be numbers") from None
        bad = pc.sum(pc.or_(pc.less(weight, 0.0), pc.is_nan(weight))).as_py() or 0
        if bad:
            raise DataError(f"events.{weight_col}: {bad} negative or NaN weight(s)")
    table = pa.table({"entity_id": ent, "candidate_id": cand, "ts": ts, "event": event, "weight": weight})
    return schema.validate(table, "events", allowed_events=allowed)


# --- CLI -----------------------------------------------------------------------------------------
def cli_extract(args: argparse.Namespace) -> int:
    if args.db:
        if args.use_case:
            raise ConfigError("--use-case applies to --events imports, not --db")
        stats = extract_db(args.db, args.out, since=args.since, chunk_size=args.chunk_size,
                           event_weights=args.event_weights)
    else:
        if not args.use_case:
            raise ConfigError("--use-case is required with --events")
        stats = import_events(
            args.events, args.out, args.use_case, entity_col=args.entity_col,
            candidate_col=args.candidate_col, time_col=args.time_col, event_col=args.event_col,
            weight_col=args.weight_col, entity_features=args.entity_features,
            candidate_features=args.candidate_features, event_weights=args.event_weights,
            since=args.since, chunk_size=args.chunk_size)
    appended = stats["runs"][-1]["appended"]
    print(f"snapshot {args.out} (source={stats['source']}"
          + (f", use_case={stats['use_case']}" if stats["use_case"] else "") + ")")
    for table, total in stats["tables"].items():
        print(f"  {table:<24} +{appended.get(table, 0):>10,}  total {total:>10,}")
    print(f"  watermark {stats['watermark']}")
    return 0
