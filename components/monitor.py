"""Monitor: online evaluation of the served bundle since the last run (sessions, impressions, events)."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def monitor(snapshot: dsl.Input[dsl.Dataset], db_url: str, use_case: str, models_uri: str,
            online: dsl.Output[dsl.Artifact], metrics: dsl.Output[dsl.Metrics], report: dsl.Output[dsl.Markdown],
            window_days: float = 7.0):
    """Contact rate and CTR per model version (with entity-bootstrap intervals and p values) of the
    sessions logged since the previous run's data watermark.

    Args:
        snapshot: The extract step's snapshot folder: its data watermark is this run's.
        db_url: SQLAlchemy URL of the app database the predictor logs sessions into; empty for an
            imported event log (nothing to monitor).
        use_case: The use case to evaluate.
        models_uri: Where bundles are published: the newest bundle whose data watermark is before
            this run's marks where the period starts.
        window_days: Attribution window after a session, in days.

    Returns:
        online: ``metrics.json``, ``report.md`` and the PNG plots.
        metrics: Per arm ``<version>_contact_rate``, ``_ctr``, ``_sessions``, ...; per comparison
            ``<a>_vs_<b>_lift`` and ``_p_value``, for the Kubeflow UI.
        report: The report in Markdown with its plots embedded.
    """
    from startup_recs.pipeline import monitor_steps, step

    info = monitor_steps.monitor(db_url, use_case, models_uri, online.path, snapshot=snapshot.path,
                                 report_md=report.path, window_days=window_days)
    step.log_metrics(metrics, info["headline"])
    online.metadata.update(info["metadata"])
