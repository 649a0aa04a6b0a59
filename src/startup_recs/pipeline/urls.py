"""The app database URL of the extract steps: where it comes from, normalised, checked, and
masked for messages.

Why the environment: a pipeline parameter is stored in the run's spec and shown in the KFP UI, so
a password in it is readable by everyone who sees the run. ``RECS_DB_URL`` (set from a Kubernetes
Secret, see the ``db_secret`` compile option) keeps it out of both; the parameter stays for
local runs and password-less URLs.
"""

from __future__ import annotations

import os

from startup_recs.core.errors import ConfigError

DB_URL_ENV = "RECS_DB_URL"


def source_db_url(db_url: str, events_uri: str = "") -> str:
    """The database URL a step uses: the ``db_url`` parameter, else ``$RECS_DB_URL`` unless an
    event log is the source; ``""`` when neither."""
    if db_url:
        return db_url
    if events_uri:
        return ""
    return os.environ.get(DB_URL_ENV, "").strip()


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
