"""Sessions the predictor logged as Parquet parts (``recs serve --log-sessions <folder or s3://>``,
:class:`startup_recs.serving.session_sinks.ParquetSink`), read into a snapshot by extract
(``recs extract --sessions URI``) beside, or instead of, the app database's tables.

Layout read: ``<uri>/recommendation_sessions/part-*.parquet`` and ``<uri>/impressions/part-*.parquet``
(contract schemas). Incremental like the database's tables: sessions at or after the snapshot's
sessions watermark (rows already in the snapshot at the watermark are dropped by
:class:`~startup_recs.data.snapshot_parts.SnapshotRun`), and the impressions of exactly those
sessions, less those of sessions the snapshot already holds at the watermark.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from startup_recs.core import storage
from startup_recs.core.errors import DataError
from startup_recs.data import schema
from startup_recs.data.snapshot_parts import SnapshotRun

SESSIONS, IMPRESSIONS = "recommendation_sessions", "impressions"


def read_session_parts(uri: str, since: dt.datetime | None, skip_sessions: set[str] | frozenset[str] = frozenset()
                       ) -> dict[str, pa.Table]:
    """``{"recommendation_sessions": table, "impressions": table}`` (validated, maybe empty) of the
    parts under ``uri``: sessions with ``ts >= since`` (all when ``None``) and their impressions,
    without those of ``skip_sessions``."""
    sessions = _read(uri, SESSIONS, [("ts", ">=", pa.scalar(since, schema.TS))] if since else None)
    ids = sessions.column("session_id").unique()
    if skip_sessions:
        ids = pc.filter(ids, pc.invert(pc.is_in(ids, pa.array(sorted(skip_sessions), pa.string()))))
    impressions = _read(uri, IMPRESSIONS, None)
    impressions = impressions.filter(pc.is_in(impressions.column("session_id"), ids))
    return {SESSIONS: sessions, IMPRESSIONS: impressions}


def _read(uri: str, table: str, filters: list | None) -> pa.Table:
    folder = storage.join(uri, table)
    if not storage.listdir(folder):
        return schema.empty(table)
    fs, path = storage.filesystem(folder)
    try:
        got = pq.read_table(path, filesystem=fs, filters=filters, schema=schema.SCHEMAS[table])
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"session parts {folder}: {str(exc).splitlines()[0]}") from None
    return schema.validate(got, table)


def sessions_at_watermark(run: SnapshotRun) -> set[str]:
    """Sessions the snapshot already holds at its sessions watermark (their impressions too)."""
    wm = run.prev_watermark(SESSIONS)
    if wm is None:
        return set()
    return {key[0] for key in run._existing_at(SESSIONS, wm)}


def append_session_parts(run: SnapshotRun, uri: str) -> dict[str, int]:
    """Stage the session parts under ``uri`` that ``run``'s snapshot lacks (an imported log's
    snapshot; the database path chains them to its own rows); returns rows staged per table."""
    parts = read_session_parts(uri, run.lower_bound(SESSIONS), sessions_at_watermark(run))
    return {table: run.write(table, iter([parts[table]])) for table in (SESSIONS, IMPRESSIONS)}


__all__ = ["append_session_parts", "read_session_parts", "sessions_at_watermark"]
