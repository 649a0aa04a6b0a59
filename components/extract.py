"""Extract: the app database (SQLAlchemy URL) or an imported event log -> Parquet snapshot."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def probe_source(db_url: str = "", events_uri: str = "", time_col: str = "ts") -> str:
    """The source's data watermark (newest event time, ISO-8601), cheap to read.

    Never cached: its output feeds extract's inputs, so new data changes extract's cache key and
    reruns it. Exactly one of ``db_url`` and ``events_uri`` must be given.

    Args:
        db_url: SQLAlchemy URL of the app database (``postgresql+psycopg://...``, ``sqlite:///file``
            or a bare SQLite path); empty when reading an event log. Messages mask its password.
        events_uri: An interaction log to import (Parquet or CSV, local path or ``s3://``); empty
            when reading the database.
        time_col: The event-time column of ``events_uri``.

    Returns:
        Output: The newest event time of the source (ISO-8601, UTC).
    """
    from startup_recs.pipeline import data_steps

    return data_steps.probe_source(db_url=db_url, events_uri=events_uri, time_col=time_col)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def probe_entities(db_url: str = "", events_uri: str = "") -> str:
    """A digest of the app database's entity tables (startups, users), so that a new or edited
    profile reruns extract too. Never cached, like the watermark probe; empty for an event log.

    Args:
        db_url: SQLAlchemy URL of the app database; empty when reading an event log.
        events_uri: An interaction log to import; empty when reading the database.

    Returns:
        Output: ``"<table>:<rows>:<sha256 prefix>;..."`` of the entity tables.
    """
    from startup_recs.pipeline import data_steps

    return data_steps.probe_entities(db_url=db_url, events_uri=events_uri)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def extract(snapshot: dsl.Output[dsl.Dataset], watermark: str, db_url: str = "", events_uri: str = "",
            events_use_case: str = "", entity_col: str = "entity_id", candidate_col: str = "candidate_id",
            time_col: str = "ts", event_col: str = "event", weight_col: str = "weight",
            event_weights: str = "", entities: str = "", snapshot_uri: str = "", models_uri: str = ""):
    """Validated Parquet snapshot (one dataset dir per table) + extract_stats.json, appended to a
    persistent snapshot from its watermark and copied out as this run's artifact.

    Args:
        watermark: The probe's watermark: the cache key that reruns extract when new events arrive.
        db_url: SQLAlchemy URL (or SQLite path) of the app database; empty for an event log.
        events_uri: An interaction log to import (Parquet or CSV); empty for the database.
        events_use_case: The use case the imported log's events belong to (with ``events_uri``).
        entity_col: The imported log's entity id column.
        candidate_col: The imported log's candidate id column.
        time_col: The imported log's event-time column.
        event_col: The imported log's event-name column.
        weight_col: The imported log's per-event weight column (optional in the file).
        event_weights: JSON object ``{event: weight}`` replacing the default event weights; empty
            keeps them.
        entities: The entity probe's digest: the cache key that reruns extract when profiles change.
        snapshot_uri: The persistent snapshot each run appends its new rows to (local path or
            ``s3://``); empty = ``<models_uri>/_snapshot/<source>``.
        models_uri: Where bundles are published (the persistent snapshot's default home).

    Returns:
        snapshot: The snapshot folder (a copy of the persistent one after this run's rows): one
            Parquet dataset directory per table and ``extract_stats.json`` (watermark, row counts,
            event weights, the rows each run appended).
    """
    from startup_recs.pipeline import data_steps

    snapshot.metadata.update(data_steps.extract(
        snapshot.path, watermark=watermark, db_url=db_url, events_uri=events_uri, use_case=events_use_case,
        entity_col=entity_col, candidate_col=candidate_col, time_col=time_col, event_col=event_col,
        weight_col=weight_col, event_weights=event_weights, snapshot_uri=snapshot_uri, models_uri=models_uri,
        entities=entities))
