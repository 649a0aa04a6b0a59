"""Extract: the app database (SQLAlchemy URL) or an imported event log -> Parquet snapshot."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def probe_source(db_url: str = "", events_uri: str = "", time_col: str = "ts") -> str:
    """The source's data watermark (newest event time, ISO-8601), cheap to read. Never cached: its
    output feeds extract's inputs, so new data changes extract's cache key and reruns it."""
    from startup_recs.pipeline import steps

    return steps.probe_source(db_url=db_url, events_uri=events_uri, time_col=time_col)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def extract(snapshot: dsl.Output[dsl.Dataset], watermark: str, db_url: str = "", events_uri: str = "",
            events_use_case: str = "", entity_col: str = "entity_id", candidate_col: str = "candidate_id",
            time_col: str = "ts", event_col: str = "event", weight_col: str = "weight",
            event_weights: str = ""):
    """Validated Parquet snapshot (one dataset dir per table) + extract_stats.json."""
    from startup_recs.pipeline import steps

    snapshot.metadata.update(steps.extract(
        snapshot.path, watermark=watermark, db_url=db_url, events_uri=events_uri, use_case=events_use_case,
        entity_col=entity_col, candidate_col=candidate_col, time_col=time_col, event_col=event_col,
        weight_col=weight_col, event_weights=event_weights))
