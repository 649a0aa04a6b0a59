"""The app database: its SQLAlchemy tables, URL helpers and bulk writes.

``recs synth`` writes it, ``recs extract`` reads it (SQLite or PostgreSQL). List columns are JSON
text and timestamps UTC; see ``docs/contracts.md``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from startup_recs.core.errors import ConfigError
from startup_recs.data import schema


def db_url(url_or_path: str) -> str:
    """A SQLAlchemy URL; a bare path (no ``://``) means a SQLite file."""
    if "://" in url_or_path:
        return url_or_path
    return f"sqlite:///{url_or_path}"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///file`` URL, or None (in-memory or not SQLite)."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"bad database URL {url!r}: {exc}") from None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def metadata():
    """SQLAlchemy tables of the app database (list columns as JSON text, timestamps UTC)."""
    import sqlalchemy as sa

    md = sa.MetaData()
    ts = sa.DateTime(timezone=True)
    sa.Table("startups", md,
             sa.Column("startup_id", sa.String(32), primary_key=True),
             sa.Column("name", sa.String(128)), sa.Column("sector", sa.String(64)),
             sa.Column("stage", sa.String(32)), sa.Column("location", sa.String(64)),
             sa.Column("skills_needed", sa.Text), sa.Column("funding_usd", sa.Float),
             sa.Column("created_at", ts))
    sa.Table("users", md,
             sa.Column("user_id", sa.String(32), primary_key=True),
             sa.Column("role", sa.String(16), nullable=False), sa.Column("skills", sa.Text),
             sa.Column("sectors", sa.Text), sa.Column("stages", sa.Text),
             sa.Column("location", sa.String(64)), sa.Column("experience_years", sa.Float),
             sa.Column("check_size_usd", sa.Float), sa.Column("created_at", ts))
    for name, first, second in (("startup_interactions", "startup_id", "user_id"),
                                ("user_interactions", "user_id", "startup_id")):
        sa.Table(name, md,
                 sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                           autoincrement=True),
                 sa.Column(first, sa.String(32), nullable=False),
                 sa.Column(second, sa.String(32), nullable=False),
                 sa.Column("event", sa.String(32), nullable=False),
                 sa.Column("ts", ts, nullable=False, index=True),
                 sa.Column("session_id", sa.String(32)))
    sa.Table("recommendation_sessions", md,
             sa.Column("session_id", sa.String(32), primary_key=True),
             sa.Column("entity_id", sa.String(32), nullable=False),
             sa.Column("use_case", sa.String(32), nullable=False),
             sa.Column("ts", ts, nullable=False, index=True))
    sa.Table("impressions", md,
             sa.Column("session_id", sa.String(32), primary_key=True),
             sa.Column("position", sa.Integer, primary_key=True),
             sa.Column("candidate_id", sa.String(32), nullable=False),
             sa.Column("model_version", sa.String(64)))
    return md


LIST_COLUMNS = {"startups": ("skills_needed",), "users": ("skills", "sectors", "stages")}


def _rows(table: pa.Table, name: str, chunk: int, sqlite: bool) -> Iterator[list[tuple]]:
    """Chunks of row tuples for a DBAPI executemany, in the table's column order.

    Lists become JSON text; timestamps become ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text for SQLite
    (SQLAlchemy's own DateTime storage format) and aware datetimes otherwise. Values are
    converted column-wise by Arrow, not row by row.
    """
    import json

    lists = LIST_COLUMNS.get(name, ())
    for batch in table.to_batches(max_chunksize=chunk):
        cols = []
        for field, col in zip(batch.schema, batch.columns, strict=True):
            if field.name in lists:
                cols.append([None if v is None else json.dumps(v) for v in col.to_pylist()])
            elif pa.types.is_timestamp(field.type) and sqlite:
                cols.append(pc.strftime(col, format="%Y-%m-%d %H:%M:%S").to_pylist())
            else:
                cols.append(col.to_pylist())
        yield list(zip(*cols, strict=True))


def insert_sql(engine, table) -> str:
    """``INSERT INTO t (a, b) VALUES (?, ?)`` in the driver's positional parameter style, over the
    table's contract columns in table order (bulk writes and the session sink)."""
    style = engine.dialect.paramstyle
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(style)
    if mark is None:
        raise ConfigError(f"unsupported database driver parameter style {style!r}")
    quote = engine.dialect.identifier_preparer.quote
    names = [c.name for c in table.columns if c.name in schema.SCHEMAS[table.name].names]
    return (f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
            f"VALUES ({', '.join([mark] * len(names))})")


def _insert(conn, md, name: str, table: pa.Table, chunk: int) -> None:
    """Bulk insert: one executemany per chunk of plain tuples (no per-row ORM/Core processing)."""
    t = md.tables[name]
    names = [c.name for c in t.columns if c.name in schema.SCHEMAS[name].names]
    sql = insert_sql(conn.engine, t)
    for rows in _rows(table.select(names), name, chunk, conn.engine.dialect.name == "sqlite"):
        conn.exec_driver_sql(sql, rows)


def write_db(tables: dict[str, pa.Table], url: str, replace: bool = False, chunk: int = 20_000) -> None:
    """Write the six app tables to the database at ``url`` (SQLAlchemy Core, chunked executemany).

    SQLite files are written to a temporary file that replaces the target only when complete;
    other databases get one transaction. Existing tables are an error unless ``replace``.
    """
    import sqlalchemy as sa

    url = db_url(url)
    path = sqlite_path(url)
    if path is not None:
        if path.exists() and not replace:
            raise ConfigError(f"{path} already exists; pass --force to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            engine = sa.create_engine(f"sqlite:///{tmp}")
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=OFF")
                conn.exec_driver_sql("PRAGMA synchronous=OFF")
            _write(engine, tables, chunk, drop=False)
            engine.dispose()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any connection problem is a bad URL for the user
        raise ConfigError(f"cannot connect to {mask_url(url)}: {str(exc).splitlines()[0]}") from None
    existing = set(sa.inspect(engine).get_table_names()) & set(schema.APP_TABLES)
    if existing and not replace:
        raise ConfigError(f"tables already exist in {mask_url(url)}: {', '.join(sorted(existing))}; "
                          "pass --force to replace them")
    _write(engine, tables, chunk, drop=True)
    engine.dispose()


def insert_rows(url: str, tables: dict[str, pa.Table], chunk: int = 20_000) -> None:
    """Append rows to existing app tables (new events arriving; tests of incremental extract)."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_url(url))
    md = metadata()
    try:
        with engine.begin() as conn:
            for name, table in tables.items():
                _insert(conn, md, name, schema.validate(table, name), chunk)
    finally:
        engine.dispose()


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for every log line and error)."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<database URL>"


_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\"]*:)(?P<pw>[^\s@'\"]+)@")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it replaced by
    ``***``. Why beside :func:`mask_url`: an exception message (a driver's, a wrapped one) may
    quote the URL anywhere in free text, and a step's error goes to the KFP log and UI as is."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}***@", text)


def _write(engine, tables: dict[str, pa.Table], chunk: int, drop: bool) -> None:
    md = metadata()
    with engine.begin() as conn:
        if drop:
            md.drop_all(conn, checkfirst=True)
        md.create_all(conn)
        for name in schema.APP_TABLES:
            _insert(conn, md, name, tables[name], chunk)
