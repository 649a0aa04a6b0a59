"""Snapshot part bookkeeping: one extract run staged locally, then committed into the snapshot.

What: :class:`SnapshotRun` writes each table of one run as one Parquet part
(``<out>/<table>/part-NNNNN.parquet``) into a local staging folder, then :meth:`SnapshotRun.commit`
moves (local) or uploads (S3) every part into place, removes parts a crashed earlier run may have
left, and writes ``extract_stats.json`` last (``tables`` rows, ``watermarks`` per event table,
``parts`` per table, ``runs``, ``time_range``, ``event_weights``; see docs/contracts.md).

Incremental runs: event tables (:data:`EVENT_TIME`, plus ``impressions``) grow by one part per run
holding only rows at or after the table's previous watermark (its largest ``ts``, UTC); rows equal
to the watermark that the snapshot already holds are dropped by a multiset comparison
(:func:`drop_seen`), so rows sharing the watermark time are neither lost nor duplicated. Entity
tables are rewritten whole. Times are aware UTC datetimes here, ``timestamp[us, UTC]`` in Arrow
(:func:`to_timestamps` reads strings, datetimes and epoch seconds).

Why staged: nothing reaches ``<out>`` until every table was read and validated, so a failing run
leaves the previous snapshot as it was.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from startup_recs.core import storage
from startup_recs.core.errors import ConfigError, DataError, StorageError
from startup_recs.data import schema

log = logging.getLogger(__name__)

STATS_FILE = "extract_stats.json"
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


def iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()


def to_timestamps(values: pa.Array | pa.ChunkedArray, table: str, column: str) -> pa.Array:
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


def read_stats(out_uri: str) -> dict | None:
    uri = storage.join(out_uri, STATS_FILE)
    try:
        return storage.read_json(uri) if storage.exists(uri) else None
    except StorageError as exc:
        raise StorageError(f"cannot read the previous {STATS_FILE}: {exc}") from None


# --- the snapshot writer shared by both sources --------------------------------------------------
class SnapshotRun:
    """Stages one extract run locally, then commits it into ``out`` (stats written last)."""

    def __init__(self, out_uri: str, source: str, use_case: str | None, since: str | None,
                 weights: dict[str, float]) -> None:
        self.out = str(out_uri).rstrip("/")
        self.source, self.use_case, self.weights = source, use_case, weights
        self.prev = read_stats(self.out)
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
        self.feature_schemas: dict[str, pa.Schema] = {}  # imported feature tables: their own schema

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
                     table, iso(self.since), iso(wm))
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
                        chunk = drop_seen(chunk, tcol, wm, seen)
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
                watermarks[table] = iso(hi)
        lows = [parse_time(prev["time_range"][0])] if prev.get("time_range") else []
        lows += [lo for lo, _ in self.ranges.values()]
        highs = [parse_time(w) for w in watermarks.values()]
        now = dt.datetime.now(dt.UTC)
        stats = {
            "source": self.source,
            "use_case": self.use_case,
            "tables": totals,
            "time_range": [iso(min(lows)), iso(max(highs))] if lows and highs else None,
            "watermark": iso(max(highs)) if highs else None,
            "watermarks": watermarks,
            "extracted_at": iso(now),
            "event_weights": self.weights,
            "parts": parts,
            "runs": [*prev.get("runs", []), {
                "extracted_at": iso(now), "since": iso(self.since), "appended": self.appended}],
        }
        storage.write_json(storage.join(self.out, STATS_FILE), stats)
        return stats

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def schema_of(table: str, run: SnapshotRun) -> pa.Schema:
    """The Arrow schema of ``table``: the contract's, or an imported feature table's own."""
    if table in schema.SCHEMAS:
        return schema.SCHEMAS[table]
    return run.feature_schemas[table]


def drop_seen(chunk: pa.Table, tcol: str, wm: dt.datetime, seen: Counter) -> pa.Table:
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
