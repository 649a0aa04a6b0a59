"""Where logged sessions go (:mod:`startup_recs.serving.sessions`): the app database or Parquet parts.

- :class:`SqlSink`: a SQLAlchemy URL of the app database (PostgreSQL, SQLite). Each batch is one
  transaction inserting (PostgreSQL: ``COPY``) its ``recommendation_sessions`` rows and their
  ``impressions`` rows (the
  tables of :func:`startup_recs.data.appdb.metadata`, created when the database has neither), so
  extract never sees a session without its impressions. Connections are checked before use
  (``pool_pre_ping``) and time out after a few seconds, so a database that went away costs the
  writer thread one failed attempt per retry, not a hang. A batch refused because a client reused
  a session id is retried one session per transaction; the duplicates are reported back as
  rejected (the log counts them as dropped).
- :class:`ParquetSink`: a storage URI (local folder, ``file://`` or ``s3://``). Each batch
  becomes ``<uri>/impressions/part-<utc time>-<random>.parquet`` and then the
  ``recommendation_sessions`` part of the same name (contract schemas of
  :data:`startup_recs.data.schema.SCHEMAS`); ``recs extract --sessions <uri>`` appends them to a
  snapshot like the database's tables.

Database passwords never reach a log line (:func:`startup_recs.data.appdb.mask_url`).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from startup_recs.core import storage
from startup_recs.data import appdb, schema
from startup_recs.serving.sessions import Session, Sink

log = logging.getLogger(__name__)

SESSIONS_TABLE, IMPRESSIONS_TABLE = "recommendation_sessions", "impressions"
CONNECT_TIMEOUT_S = 3


def session_rows(sessions: Sequence[Session]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(``recommendation_sessions`` rows, ``impressions`` rows) of ``sessions``, as dicts."""
    sess = [{"session_id": s.session_id, "entity_id": s.entity_id, "use_case": s.use_case, "ts": s.ts}
            for s in sessions]
    imp = [{"session_id": s.session_id, "candidate_id": c, "position": p, "model_version": s.model_version}
           for s in sessions for p, c in enumerate(s.candidates)]
    return sess, imp


class SqlSink:
    """Sessions into the app database at ``url`` (SQLAlchemy URL or a SQLite file path)."""

    def __init__(self, url: str) -> None:
        self.url = appdb.db_url(url)
        self.shown = appdb.mask_url(self.url)
        self._engine: Any = None
        self._tables: tuple[Any, Any] | None = None

    def describe(self) -> str:
        return self.shown

    def _connect(self) -> tuple[Any, Any, Any]:
        import sqlalchemy as sa

        if self._engine is None:
            backend = sa.engine.make_url(self.url).get_backend_name()
            if backend == "sqlite":
                self._engine = sa.create_engine(self.url, connect_args={"timeout": CONNECT_TIMEOUT_S})
            else:  # one pooled connection, checked before each use: a restarted server is reconnected
                args = {"connect_timeout": CONNECT_TIMEOUT_S} if backend == "postgresql" else {}
                self._engine = sa.create_engine(self.url, pool_pre_ping=True, pool_size=1, max_overflow=1,
                                                connect_args=args)
        if self._tables is None:
            md = appdb.metadata()
            tables = (md.tables[SESSIONS_TABLE], md.tables[IMPRESSIONS_TABLE])
            md.create_all(self._engine, tables=list(tables), checkfirst=True)  # a fresh database gets them
            self._tables = tables
        return self._engine, *self._tables

    def write(self, sessions: Sequence[Session]) -> list[Session]:
        """Insert ``sessions`` in one transaction; returns those the database refused for good
        (a reused session id), after retrying the batch one session at a time."""
        import sqlalchemy as sa

        engine, sess_t, imp_t = self._connect()
        # a reused key: SQLAlchemy's IntegrityError, or the driver's own from a raw COPY
        duplicate = (sa.exc.IntegrityError, getattr(engine.dialect.loaded_dbapi, "IntegrityError", sa.exc.IntegrityError))
        try:
            self._insert(engine, sess_t, imp_t, sessions)
            return []
        except duplicate:
            pass
        rejected = []
        for s in sessions:
            try:
                self._insert(engine, sess_t, imp_t, [s])
            except duplicate:
                rejected.append(s)
        if rejected:
            log.warning("session log: %s refused %d of %d sessions (session id already logged, e.g. %r)",
                        self.shown, len(rejected), len(sessions), rejected[0].session_id)
        return rejected

    @staticmethod
    def _insert(engine: Any, sess_t: Any, imp_t: Any, sessions: Sequence[Session]) -> None:
        """One transaction for the batch, and per table the cheapest bulk path of the driver:
        PostgreSQL (psycopg) ``COPY ... FROM STDIN``; SQLite one executemany of plain tuples (no
        per-row SQLAlchemy processing); anything else SQLAlchemy's ``insert()`` executemany."""
        sess, imp = session_rows(sessions)
        quote = engine.dialect.identifier_preparer.quote
        with engine.begin() as conn:
            for table, rows in ((sess_t, sess), (imp_t, imp)):
                if not rows:
                    continue
                names = [c.name for c in table.columns if c.name in schema.SCHEMAS[table.name].names]
                if engine.dialect.name == "sqlite":
                    conn.exec_driver_sql(appdb.insert_sql(engine, table),  # the same columns, in this order
                                         [tuple(_db_value(r[n]) for n in names) for r in rows])
                elif engine.dialect.driver == "psycopg":
                    cols = ", ".join(quote(n) for n in names)
                    with conn.connection.dbapi_connection.cursor() as cur, \
                            cur.copy(f"COPY {quote(table.name)} ({cols}) FROM STDIN") as copy:
                        for r in rows:
                            copy.write_row(tuple(r[n] for n in names))
                else:
                    conn.execute(table.insert(), rows)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def _db_value(value: Any) -> Any:
    """A timestamp as SQLAlchemy stores it in SQLite (UTC text), else the value itself."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


class ParquetSink:
    """Sessions as Parquet parts under ``uri`` (one pair of parts per batch)."""

    def __init__(self, uri: str) -> None:
        self.uri = str(uri).rstrip("/")

    def describe(self) -> str:
        return self.uri

    def write(self, sessions: Sequence[Session]) -> list[Session]:
        sess, imp = session_rows(sessions)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        tables = {IMPRESSIONS_TABLE: imp, SESSIONS_TABLE: sess}
        for table in (IMPRESSIONS_TABLE, SESSIONS_TABLE):  # sessions last: a reader seeing one sees its rows
            arrow = pa.Table.from_pylist(tables[table], schema=schema.SCHEMAS[table]) if tables[table] \
                else schema.empty(table)
            storage.write_table(arrow, storage.join(self.uri, table, name))
        return []

    def close(self) -> None:
        return None


def open_sink(target: str) -> Sink:
    """:class:`SqlSink` for a SQLAlchemy URL or a ``.db``/``.sqlite``/``.sqlite3`` path,
    :class:`ParquetSink` for ``s3://``, ``file://`` or any other path (a folder)."""
    text = str(target).strip()
    if text.startswith(("s3://", "file://")):
        return ParquetSink(text.removeprefix("file://") if text.startswith("file://") else text)
    if "://" in text or text.endswith((".db", ".sqlite", ".sqlite3")):
        return SqlSink(text)
    return ParquetSink(text)


__all__ = ["ParquetSink", "SqlSink", "open_sink", "session_rows"]
