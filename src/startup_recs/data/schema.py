"""Table contracts: pyarrow schemas for the app database tables and the imported event log.

Every table that enters the platform (from the app database or an imported file) passes
:func:`validate`, which casts it to the contract and raises a one-line :class:`DataError` naming
the offending table, column, type or value. Ids are strings; timestamps are UTC microseconds.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from startup_recs.core.errors import DataError

TS = pa.timestamp("us", tz="UTC")
STR_LIST = pa.list_(pa.string())

SCHEMAS: dict[str, pa.Schema] = {
    "startups": pa.schema([
        pa.field("startup_id", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("sector", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("location", pa.string()),
        pa.field("skills_needed", STR_LIST),
        pa.field("funding_usd", pa.float64()),
        pa.field("created_at", TS),
    ]),
    "users": pa.schema([
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("skills", STR_LIST),
        pa.field("sectors", STR_LIST),
        pa.field("stages", STR_LIST),
        pa.field("location", pa.string()),
        pa.field("experience_years", pa.float64()),
        pa.field("check_size_usd", pa.float64()),
        pa.field("created_at", TS),
    ]),
    "startup_interactions": pa.schema([
        pa.field("startup_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("session_id", pa.string()),
    ]),
    "user_interactions": pa.schema([
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("startup_id", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("session_id", pa.string()),
    ]),
    "recommendation_sessions": pa.schema([
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("use_case", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
    ]),
    "impressions": pa.schema([
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("model_version", pa.string()),
    ]),
    # An imported interaction log (``recs extract --events``), already renamed to these columns.
    "events": pa.schema([
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("ts", TS, nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("weight", pa.float64(), nullable=False),
    ]),
}

# Allowed values of enumerated columns: (table, column) -> allowed set.
ENUMS: dict[tuple[str, str], frozenset[str]] = {
    ("users", "role"): frozenset({"developer", "investor"}),
    # ``reply``: the side that was approached answers (a startup an application or an investor's
    # contact; a user a startup's contact), written in the answering side's own table
    ("startup_interactions", "event"): frozenset({"view", "click", "contact", "apply_received", "reply"}),
    ("user_interactions", "event"): frozenset({"view", "click", "save", "apply", "contact", "reply"}),
    ("recommendation_sessions", "use_case"): frozenset(
        {"startup_developer", "startup_investor", "developer_startup", "investor_startup"}
    ),
}

# Tables an app-database snapshot holds, in extraction order.
APP_TABLES = ("startups", "users", "startup_interactions", "user_interactions",
              "recommendation_sessions", "impressions")
# Tables with an event time, read incrementally by ``extract --since``.
EVENT_TABLES = {"startup_interactions": "ts", "user_interactions": "ts", "recommendation_sessions": "ts"}


def _cast_column(name: str, col: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray:
    if col.type == field.type:
        return col
    target = field.type
    try:
        if pa.types.is_timestamp(target):
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                col = pc.cast(col, pa.string())
                try:
                    col = pc.strptime(col, format="%Y-%m-%dT%H:%M:%S", unit="us", error_is_null=False)
                except pa.ArrowInvalid:
                    col = _parse_iso(name, field.name, col)
            if pa.types.is_timestamp(col.type) and col.type.tz is None:
                col = pc.assume_timezone(col, "UTC")
            return pc.cast(col, target)
        if pa.types.is_string(target) and (pa.types.is_integer(col.type) or pa.types.is_large_string(col.type)):
            return pc.cast(col, pa.string())
        return pc.cast(col, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise DataError(
            f"{name}.{field.name}: cannot convert {col.type} to {target} ({str(exc).splitlines()[0]})"
        ) from None


def _parse_iso(table: str, column: str, col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Parse ISO-8601-ish strings (with or without time/offset); name the first bad value."""
    import pandas as pd

    values = col.to_pandas()
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    bad = parsed.isna() & values.notna()
    if bad.any():
        raise DataError(f"{table}.{column}: unparseable timestamp {values[bad].iloc[0]!r}")
    return pa.chunked_array([pa.array(parsed, type=TS)])


def validate(table: pa.Table, name: str, *, allowed_events: frozenset[str] | None = None) -> pa.Table:
    """Check ``table`` against the contract ``name`` and return it cast to the contract schema.

    Extra columns are dropped; missing nullable columns are added as nulls. Raises
    :class:`DataError` naming the table and the offending column, type or value for: a missing
    required column, an unconvertible type, a null in a non-null column (an id, a timestamp), or
    a value outside an enumerated column's allowed set. ``allowed_events`` overrides the event
    vocabulary (used for imported logs, whose event names come from configuration).
    """
    if name not in SCHEMAS:
        raise DataError(f"unknown table {name!r}; expected one of: {', '.join(SCHEMAS)}")
    schema = SCHEMAS[name]
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            if not field.nullable:
                raise DataError(f"{name}: missing required column {field.name!r}")
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        col = _cast_column(name, table.column(field.name), field)
        if not field.nullable and col.null_count:
            raise DataError(f"{name}.{field.name}: {col.null_count} null value(s) in a required column")
        allowed = allowed_events if (allowed_events is not None and field.name == "event") else ENUMS.get((name, field.name))
        if allowed is not None:
            present = pc.unique(col.drop_null()).to_pylist()
            unknown = sorted(set(present) - set(allowed))
            if unknown:
                raise DataError(
                    f"{name}.{field.name}: unknown value {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
                )
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def empty(name: str) -> pa.Table:
    """An empty table with the contract schema ``name``."""
    return SCHEMAS[name].empty_table()
