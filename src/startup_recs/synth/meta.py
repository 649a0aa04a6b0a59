"""``synth_meta``: which planted world made an app database (its ``--size`` and ``--seed``).

``recs synth`` (and ``recs demo``) write one row beside the six app tables; ``recs
simulate-traffic`` rebuilds the world from ``--size/--seed`` and refuses to answer for a database
that another world made (:func:`check_meta`). Columns: ``size`` (text), ``seed`` (integer),
``generator`` (the package version that wrote it), ``written_at`` (UTC). Extract never reads it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from startup_recs.core.errors import ConfigError
from startup_recs.data.appdb import db_url, mask_url

TABLE = "synth_meta"


def _table(md: Any) -> Any:
    import sqlalchemy as sa

    return sa.Table(TABLE, md, sa.Column("size", sa.String(16), nullable=False),
                    sa.Column("seed", sa.BigInteger, nullable=False), sa.Column("generator", sa.String(32)),
                    sa.Column("written_at", sa.DateTime(timezone=True)))


def write_meta(url: str, size: str, seed: int) -> None:
    """Replace the database's ``synth_meta`` row with ``(size, seed)``."""
    import sqlalchemy as sa

    from startup_recs import __version__

    engine = sa.create_engine(db_url(url))
    try:
        md = sa.MetaData()
        table = _table(md)
        with engine.begin() as conn:
            md.drop_all(conn, checkfirst=True)
            md.create_all(conn)
            conn.execute(table.insert().values(size=size, seed=int(seed), generator=__version__,
                                               written_at=datetime.now(UTC)))
    finally:
        engine.dispose()


def read_meta(url: str) -> dict[str, Any] | None:
    """``{"size", "seed", "generator", "written_at"}`` of the database, or None (no ``synth_meta``)."""
    import sqlalchemy as sa

    engine = sa.create_engine(db_url(url))
    try:
        if not sa.inspect(engine).has_table(TABLE):
            return None
        with engine.connect() as conn:
            row = conn.execute(sa.select(_table(sa.MetaData()))).mappings().first()
        return dict(row) if row is not None else None
    finally:
        engine.dispose()


def check_meta(url: str, size: str, seed: int) -> dict[str, Any]:
    """The database's ``synth_meta``, after checking it names world ``(size, seed)``; a
    :class:`ConfigError` says which world made it otherwise (or that none is recorded)."""
    meta = read_meta(url)
    if meta is None:
        raise ConfigError(f"{mask_url(db_url(url))} records no synthetic world (no {TABLE} table): "
                          "only a database written by `recs synth` can be simulated")
    if meta["size"] != size or int(meta["seed"]) != int(seed):
        raise ConfigError(f"{mask_url(db_url(url))} was made by the world --size {meta['size']} --seed "
                          f"{meta['seed']}, not --size {size} --seed {seed}")
    return meta
