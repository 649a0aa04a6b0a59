"""Extract from an imported interaction log (``recs extract --events FILE --use-case UC``).

What: :func:`import_events` reads a Parquet or CSV log (``pyarrow.dataset`` batches of
``chunk_size`` rows) into the snapshot table ``events`` (``entity_id, candidate_id, ts, event,
weight``) of one use case, plus optional ``entity_features`` / ``candidate_features`` tables
(an id column plus any feature columns). Without an event column every row is event
``"interaction"``; without a weight column the weight is 1. Timestamps may be ISO strings (naive
= UTC), timestamps or epoch seconds. Every event name needs a configured weight.

Why a snapshot like the database's: every later step reads :class:`~startup_recs.data.snapshot.Snapshot`
only, so an imported log trains, evaluates and serves through the same code (an id-only log has
no features and no sessions).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from startup_recs.core import storage
from startup_recs.core.config import event_weights as load_event_weights
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.core.usecases import get_use_case
from startup_recs.data import schema
from startup_recs.data.snapshot_parts import SnapshotRun, to_timestamps

if TYPE_CHECKING:
    import pyarrow.dataset as ds


def _dataset(path: str, text_columns: list[str]) -> ds.Dataset:
    """``path`` (CSV, optionally gzipped, or Parquet; local or S3) as a dataset; ``text_columns``
    of a CSV are read as strings (ids must never become numbers)."""
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
                  chunk_size: int = 100_000, sessions_uri: str | None = None) -> dict:
    """Import an interaction log (Parquet or CSV) as snapshot table ``events`` for ``use_case``.

    Columns are renamed to ``entity_id, candidate_id, ts, event, weight``. Without an event
    column every row is event ``"interaction"``; without a weight column the weight is 1.
    Timestamps may be ISO strings, timestamps or epoch seconds. Every event name must have a
    configured weight (defaults, ``RECS_EVENT_WEIGHTS`` or ``event_weights``). ``sessions_uri``:
    Parquet session parts the predictor logged (``recs serve --log-sessions <folder>``), appended as
    the snapshot's ``recommendation_sessions`` / ``impressions`` tables
    (:mod:`startup_recs.data.session_parts`).
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
    run = SnapshotRun(out_uri, "events", uc, since, weights)
    run.feature_schemas = {k: v.schema for k, v in feats.items()}
    try:
        n = run.write("events", chunks())
        if n == 0 and not run.prev_parts("events"):
            raise DataError(f"events file {path}: no events" + (f" at or after {since}" if since else ""))
        for table, tbl in feats.items():
            run.write(table, iter([tbl]))
        if sessions_uri:
            from startup_recs.data.session_parts import append_session_parts

            append_session_parts(run, sessions_uri)
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
    ts = to_timestamps(batch.column(time_col), "events", time_col)
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
