"""Data steps: probe the source's watermark, extract a snapshot, build the three datasets."""

from __future__ import annotations

import logging
from typing import Any

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.core.usecases import get_use_case
from startup_recs.pipeline.folders import fresh_dir, opt, provenance, snapshot_stats, split_kwargs
from startup_recs.pipeline.step import step
from startup_recs.pipeline.urls import check_db_url, masked, source_db_url

log = logging.getLogger(__name__)


# --- extract -------------------------------------------------------------------------------------
@step("probe-source")
def probe_source(*, db_url: str = "", events_uri: str = "", time_col: str = "ts") -> str:
    """Newest event time of the source (ISO-8601 UTC), read without extracting anything.

    It becomes an input of ``extract``, so KFP's cache key of extract changes exactly when new
    events arrive. Raises :class:`ConfigError` unless exactly one source is given (an empty
    ``db_url`` falls back to ``$RECS_DB_URL``). Messages show the database URL with its password
    masked.
    """
    events_uri = opt(events_uri)
    db_url = source_db_url(opt(db_url), events_uri)
    if bool(db_url) == bool(events_uri):
        raise ConfigError("give exactly one source: db_url (or $RECS_DB_URL) or events_uri")
    import pandas as pd

    if events_uri:
        if not storage.exists(events_uri):
            raise ConfigError(f"events file {events_uri} does not exist")
        table = storage.read_table(events_uri, columns=[time_col])
        ts = pd.to_datetime(table.column(time_col).to_pandas(), utc=True, errors="coerce")
        newest = ts.max()
    else:
        import sqlalchemy as sa

        url = check_db_url(db_url)
        engine = sa.create_engine(url)
        try:
            names = set(sa.inspect(engine).get_table_names())
            tables = [t for t in ("startup_interactions", "user_interactions") if t in names]
            if not tables:
                raise DataError(f"{masked(url)}: no interaction tables (startup_interactions, user_interactions)")
            with engine.connect() as conn:
                values = [conn.execute(sa.text(f"select max(ts) from {t}")).scalar() for t in tables]
        except sa.exc.SQLAlchemyError as exc:
            raise ConfigError(f"cannot read {masked(url)}: {str(exc).splitlines()[0]}") from None
        finally:
            engine.dispose()
        stamps = [pd.to_datetime(v, utc=True) for v in values if v is not None]
        newest = max(stamps) if stamps else pd.NaT
    if pd.isna(newest):
        raise DataError("the source holds no events")
    watermark = newest.isoformat()
    log.info("source watermark: %s", watermark)
    return watermark


@step("probe-entities")
def probe_entities(*, db_url: str = "", events_uri: str = "") -> str:
    """A digest of the app database's entity tables (:func:`startup_recs.data.entity_digest.entity_digest`);
    ``""`` for an imported event log. Never cached, an input of ``extract``: a new or edited
    profile reruns extract even when no event is newer than the last run's."""
    events_uri = opt(events_uri)
    db_url = source_db_url(opt(db_url), events_uri)
    if bool(db_url) == bool(events_uri):
        raise ConfigError("give exactly one source: db_url (or $RECS_DB_URL) or events_uri")
    if events_uri:
        return ""
    from startup_recs.data.entity_digest import entity_digest

    digest = entity_digest(check_db_url(db_url))
    log.info("entity tables: %s", digest)
    return digest


def snapshot_home(snapshot_uri: str, models_uri: str, source: str) -> str | None:
    """Where the persistent snapshot lives: ``snapshot_uri``, else ``<models_uri>/_snapshot/<source>``
    (``db`` or ``events-<use case>``: one snapshot per source), else ``None`` (a one-off snapshot)."""
    if opt(snapshot_uri):
        return str(snapshot_uri).rstrip("/")
    if opt(models_uri):
        return storage.join(models_uri, SNAPSHOT_HOME, source)
    return None


SNAPSHOT_HOME = "_snapshot"


@step("extract")
def extract(out_dir: str, *, watermark: str = "", db_url: str = "", events_uri: str = "", use_case: str = "",
            entity_col: str = "entity_id", candidate_col: str = "candidate_id", time_col: str = "ts",
            event_col: str = "event", weight_col: str = "weight", event_weights: str = "",
            snapshot_uri: str = "", models_uri: str = "", entities: str = "") -> dict[str, Any]:
    """Database or event log -> snapshot folder. ``watermark`` and ``entities`` are the probes'
    values: only cache keys here (``watermark`` is checked against what was extracted; newer data
    arriving in between is fine).

    Incremental: the persistent snapshot (:func:`snapshot_home`: ``snapshot_uri``, by default under
    ``models_uri``) is appended to from its own watermarks, as ``recs extract`` into an existing
    ``--out`` does (only newer event rows are read; entity tables are rewritten), and then copied
    into ``out_dir``, this run's immutable artifact. Without either URI the snapshot is extracted
    whole into ``out_dir``. The provenance names the rows this run appended per table."""
    from startup_recs.data import extract as ex

    events_uri = opt(events_uri)
    db_url = source_db_url(opt(db_url), events_uri)
    if bool(db_url) == bool(events_uri):
        raise ConfigError("give exactly one source: db_url (or $RECS_DB_URL) or events_uri")
    if events_uri and not opt(use_case):
        raise ConfigError("an imported event log needs events_use_case (the use case its events belong to)")
    out = fresh_dir(out_dir)
    home = snapshot_home(snapshot_uri, models_uri, "db" if db_url else f"events-{use_case}")
    target = home or str(out)
    if db_url:
        stats = ex.extract_db(db_url, target, event_weights=opt(event_weights))
    else:
        get_use_case(use_case)
        stats = ex.import_events(events_uri, target, use_case, entity_col=entity_col,
                                 candidate_col=candidate_col, time_col=time_col, event_col=event_col,
                                 weight_col=weight_col, event_weights=opt(event_weights))
    if home:
        storage.download(home, out)  # this run's artifact: a copy, so a later run never changes it
    stats = stats or snapshot_stats(str(out))
    rows = sum(int(v) for v in (stats.get("tables") or {}).values())
    appended = ((stats.get("runs") or [{}])[-1]).get("appended") or {}
    log.info("snapshot: %d rows in %d tables (+%d this run), watermark %s (probe said %s)%s", rows,
             len(stats.get("tables") or {}), sum(appended.values()), stats.get("watermark"), watermark,
             f"; persistent snapshot {home}" if home else "")
    return provenance(str(out), None, rows=rows, source=stats.get("source"), tables=stats.get("tables") or {},
                      appended=appended, snapshot_home=home or "", probe_watermark=watermark,
                      entities=entities)


# --- datasets ------------------------------------------------------------------------------------
@step("dataset-two-tower")
def dataset_two_tower(snapshot: str, use_case: str, out_dir: str, *, negative_samples: int = 5,
                      min_interactions: int = 1, seed: int = 0, split_at: str = "", test_days: float = 14.0,
                      val_days: float = 14.0) -> dict[str, Any]:
    """Two-tower pairs (``<two_tower{sfx}>.parquet`` + sidecars) of the snapshot."""
    from startup_recs.datasets.two_tower import build_two_tower

    uc = get_use_case(use_case)
    out = fresh_dir(out_dir)
    info = build_two_tower(snapshot, use_case, str(out / artifacts.two_tower_dataset(uc)),
                           negative_samples=negative_samples, min_interactions=min_interactions, seed=seed,
                           **split_kwargs(split_at, test_days, val_days))
    return provenance(snapshot, use_case, rows=_rows(info), **_counts(info))


@step("dataset-als")
def dataset_als(snapshot: str, use_case: str, out_dir: str, *, fit_window: str = "trainval",
                min_interactions: int = 1, split_at: str = "", test_days: float = 14.0,
                val_days: float = 14.0) -> dict[str, Any]:
    """The ALS matrix and id mappings of one fit window (``train`` | ``trainval``)."""
    from startup_recs.datasets.als import build_als

    out = fresh_dir(out_dir)  # build_als rejects an unknown fit_window with a one-line ConfigError
    info = build_als(snapshot, use_case, str(out), fit_window=fit_window, min_interactions=min_interactions,
                     **split_kwargs(split_at, test_days, val_days))
    return provenance(snapshot, use_case, rows=_rows(info), fit_window=fit_window, **_counts(info))


@step("dataset-ranker")
def dataset_ranker(snapshot: str, use_case: str, out_dir: str, *, neg_ratio: float = 2.0,
                   propensity_clip: float = 0.05, seed: int = 0, split_at: str = "", test_days: float = 14.0,
                   val_days: float = 14.0) -> dict[str, Any]:
    """Ranker session pairs (``<ranker{sfx}>.parquet``) and the position-bias curve."""
    from startup_recs.datasets.ranker import build_ranker

    uc = get_use_case(use_case)
    out = fresh_dir(out_dir)
    info = build_ranker(snapshot, use_case, str(out / artifacts.ranker_dataset(uc)), neg_ratio=neg_ratio,
                        propensity_clip=propensity_clip, seed=seed, **split_kwargs(split_at, test_days, val_days))
    return provenance(snapshot, use_case, rows=_rows(info), **_counts(info))


def _rows(info: dict[str, Any] | None) -> int | None:
    for key in ("rows", "n_rows", "pairs", "nnz"):
        if isinstance((info or {}).get(key), int | float):
            return int(info[key])
    return None


def _counts(info: dict[str, Any] | None) -> dict[str, Any]:
    keep = ("counts", "split", "n_entities", "n_candidates", "positives", "nnz", "shape")
    return {k: v for k, v in (info or {}).items() if k in keep}
