"""Fresh exclusions: what an entity contacted after its bundle's data was taken.

What: a bundle excludes the candidates each entity acted on (the use case's ``excluded_by``
events: ``contact``, ``apply_received``, ...) up to its data watermark (``ServingData.until``,
the refit's ``fit_until``). Between two publishes that list goes stale: a startup that contacts a
developer at 10:00 is shown the same developer again at 10:05, and an A/B test of an older bundle
against a newer one measures staleness, not ranking. :class:`FreshExclusions` (``recs serve
--fresh-exclusions URL``) reads those events *after* the watermark from the app database (the
interactions tables of ``data/schema.py``), at load and then every ``interval_s`` seconds, and
each served bundle's :class:`~startup_recs.serving.data.ServingData` adds them to its
exclusions (``excluded_of``), so every retriever, pool, filter and answer path honours them.

Shapes: per use case ``{entity_id: tuple of candidate ids}``; a lookup returns that tuple (empty
for most entities), the same object until a read adds to it, so a bundle's data can cache what
it maps it to. Reads are incremental (``ts >= the newest ts read``; repeats are deduplicated), so
a poll costs one indexed range query on the app tables of :func:`startup_recs.data.appdb.metadata`.

Why no raise: a database outage must not take answers down. A failed read logs one warning per
outage, keeps what was read and is retried on the next poll; the answers then exclude what the
bundle and the last good read knew.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from startup_recs.core import bundle
from startup_recs.core.errors import RecsError
from startup_recs.core.usecases import get_use_case
from startup_recs.data.appdb import db_url, mask_url, metadata, sqlite_path

log = logging.getLogger(__name__)

Lookup = Callable[[str], tuple[str, ...]]
_EMPTY: tuple[str, ...] = ()
# interactions table -> (entity column, candidate column) by the use case's direction
COLUMNS = {"startup_interactions": ("startup_id", "user_id"), "user_interactions": ("user_id", "startup_id")}


def _to_us(values: Iterable[Any]) -> np.ndarray:
    """Timestamps as the drivers return them (datetimes; SQLite: text) -> int64 us since the epoch (UTC)."""
    ts = pd.to_datetime(pd.Series(list(values), dtype=object), utc=True, format="mixed")
    return ts.to_numpy(dtype="datetime64[us]").astype(np.int64)


def watermark_of(local_dir: Any) -> pd.Timestamp | None:
    """The ``data_watermark`` (else ``fit_until``) of the bundle in ``local_dir``'s manifest, UTC."""
    try:
        manifest = bundle.read_manifest(str(local_dir))
    except RecsError:
        return None
    mark = manifest.get("data_watermark") or manifest.get("fit_until")
    return pd.Timestamp(mark).tz_convert("UTC") if mark else None


class FreshExclusions:
    """The exclude events newer than each served bundle, read from the app database ``url``.

    ``attach(model)`` (the loader wrapper calls it for every bundle it loads) reads the model's
    use case from its data watermark on and gives the model's data the lookup; ``refresh()``
    reads what is new since the last read; ``start()`` polls every ``interval_s`` seconds in a
    daemon thread (``interval_s <= 0``: only at load)."""

    def __init__(self, url: str, interval_s: float = 30.0) -> None:
        self.url = db_url(url)
        self.interval_s = float(interval_s)
        self._engine: Any = None
        self._tables = metadata().tables  # the app database's tables, typed (docs/contracts.md)
        self._lock = threading.Lock()
        self._pairs: dict[str, dict[str, tuple[str, ...]]] = {}
        self._from: dict[str, int] = {}  # use case -> read events at or after this (us)
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def shown_url(self) -> str:
        """The database URL with its password masked (for logs)."""
        return mask_url(self.url)

    # --- wiring --------------------------------------------------------------------------------
    def wrap(self, loader: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``loader``, then :meth:`attach` on what it loaded."""

        def load(local_dir: Any) -> Any:
            return self.attach(loader(local_dir), watermark_of(local_dir))

        return load

    def attach(self, model: Any, watermark: pd.Timestamp | None = None) -> Any:
        """Give ``model``'s data the lookup of the events after its watermark: the serving data's
        ``until``, else ``watermark`` (a published bundle fitted on every event of its snapshot:
        the manifest's ``data_watermark``)."""
        data = getattr(model, "data", None)
        if data is None or not hasattr(data, "attach_fresh"):
            return model
        mark = data.until if data.until is not None else watermark
        if mark is None:
            log.warning("fresh exclusions: %s has no data watermark; not applied", data.use_case)
            return model
        uc = data.use_case
        until_us = int(pd.Timestamp(mark).value // 1000)
        with self._lock:
            if until_us < self._from.get(uc, until_us + 1):
                self._from[uc] = until_us  # the first or an older bundle: read from its mark (repeats merge)
                self._pairs.setdefault(uc, {})
        self.refresh([uc])
        data.attach_fresh(self.lookup(uc))
        return model

    def lookup(self, use_case: str) -> Lookup:
        def of(entity_id: str) -> tuple[str, ...]:
            return self._pairs.get(use_case, {}).get(entity_id, _EMPTY)

        return of

    # --- reading -------------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._engine is None:
            import sqlalchemy as sa

            path = sqlite_path(self.url)
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"database file not found: {path}")
            self._engine = sa.create_engine(self.url, pool_pre_ping=True)
        return self._engine

    def refresh(self, use_cases: Iterable[str] | None = None) -> int:
        """Read every watched use case's new exclude events; returns the rows read. Never raises."""
        import sqlalchemy as sa

        with self._lock:
            todo = [u for u in (use_cases or list(self._from)) if u in self._from]
            since = {u: self._from[u] for u in todo}
        n = 0
        try:
            engine = self._connect()
            with engine.connect() as conn:
                for uc_name in todo:
                    uc = get_use_case(uc_name)
                    ent, cand = COLUMNS[uc.interactions_table]
                    t = self._tables[uc.interactions_table]  # its typed ts column binds and parses per dialect
                    lower = dt.datetime.fromtimestamp(since[uc_name] / 1e6, dt.UTC)
                    stmt = sa.select(t.c[ent], t.c[cand], t.c.ts).where(
                        t.c.event.in_(list(uc.excluded_by)), t.c.ts >= lower)
                    rows = conn.execute(stmt).all()
                    if rows:
                        self._add(uc_name, rows)
                    n += len(rows)
        except Exception as exc:  # noqa: BLE001 - any driver or network error: keep serving
            if not self._failing:
                log.warning("fresh exclusions: cannot read %s (%s); answers keep the last good read",
                            self.shown_url, str(exc).splitlines()[0][:200])
            self._failing = True
            return n
        if self._failing:
            log.info("fresh exclusions: %s readable again", self.shown_url)
        self._failing = False
        return n

    def _add(self, use_case: str, rows: list[Any]) -> None:
        new: dict[str, list[str]] = {}
        for r in rows:
            new.setdefault(str(r[0]), []).append(str(r[1]))
        newest = int(_to_us(r[2] for r in rows).max())
        with self._lock:
            table = self._pairs.setdefault(use_case, {})
            for e, cands in new.items():
                # a new tuple per entity, swapped in whole: a request reading the old one while
                # this runs (the poller's thread) never sees it change
                table[e] = tuple(dict.fromkeys((*table.get(e, _EMPTY), *cands)))
            self._from[use_case] = max(self._from[use_case], newest)

    def counts(self) -> dict[str, int]:
        """Pairs held per use case (what the overlay adds to the bundles' exclusions)."""
        with self._lock:
            return {u: sum(len(v) for v in p.values()) for u, p in self._pairs.items()}

    # --- polling -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="fresh-exclusions", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
