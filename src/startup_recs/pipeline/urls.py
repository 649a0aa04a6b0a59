"""The app database URL of the extract steps: normalised, checked, and masked for messages."""

from __future__ import annotations

from startup_recs.core.errors import ConfigError


def check_db_url(db_url: str) -> str:
    """The SQLAlchemy URL of ``db_url`` (a bare path is SQLite); a SQLite file must exist (opening
    a missing one would silently create an empty database)."""
    from startup_recs.data.appdb import db_url as normalise_url
    from startup_recs.data.appdb import sqlite_path

    url = normalise_url(db_url)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise ConfigError(f"database file {path} does not exist")
    return url


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``: the only form a message or log may show."""
    from startup_recs.data.appdb import mask_url

    return mask_url(url)
