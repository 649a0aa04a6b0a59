"""The evaluation gate and publishing a versioned bundle with an atomic ``latest`` pointer."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def gate(evaluation: dsl.Input[dsl.Artifact], models_uri: str, use_case: str, margin: float = 0.02) -> str:
    """Decides whether the evaluated models may replace the published bundle (the reason is logged).

    Args:
        evaluation: The evaluate step's folder (its ``metrics.json``).
        models_uri: Where bundles are published (``<models_uri>/<use_case>/v<N>``, local or
            ``s3://``); the published ``latest`` is the comparison.
        use_case: The use case to decide for.
        margin: How far (relative) routed_ranked NDCG@10 may fall below the published bundle's.

    Returns:
        Output: ``"publish"`` when routed_ranked NDCG@10 beats popularity and is at most
            ``margin`` below the published bundle's; ``"skip"`` otherwise.
    """
    from startup_recs.pipeline import publish_steps

    return publish_steps.gate(evaluation.path, models_uri, use_case, margin=margin)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def publish(models: dsl.Input[dsl.Model], evaluation: dsl.Input[dsl.Artifact], snapshot: dsl.Input[dsl.Dataset],
            models_uri: str, use_case: str, bundle: dsl.Output[dsl.Artifact], margin: float = 0.02,
            tuned_two_tower: dsl.Input[dsl.Artifact] = None, two_tower_dataset_uri: str = ""):
    """``<models_uri>/<use_case>/v<N>/`` + manifest.json, then ``latest`` -> vN (atomic).

    Args:
        models: The refit step's servable folder (every model fit on all events up to the
            watermark); the evaluate step's folder works too (then fit until ``split_at``).
        evaluation: The evaluate step's folder (metrics, report and plots go into the bundle: the
            evaluation of record, on the test window).
        snapshot: The extract step's snapshot folder (its watermark goes into the manifest).
        models_uri: Where bundles are published (local path or ``s3://``).
        use_case: The use case of the bundle.
        margin: The gate's margin, checked again before anything is written.
        tuned_two_tower: The two-tower tuning step's output (its URI goes into the manifest).
        two_tower_dataset_uri: The two-tower dataset's URI (into the manifest, with the snapshot's).

    Returns:
        bundle: A copy of the published manifest; its metadata names the bundle's URI and version.
    """
    from startup_recs.pipeline import publish_steps
    from startup_recs.pipeline.two_tower_job import s3_uri

    def object_uri(uri: str) -> str:  # KFP's minio:// is the same store as s3:// (AWS_ENDPOINT_URL)
        return s3_uri(uri) if uri.startswith(("minio://", "s3://")) else uri

    data = {"snapshot": object_uri(snapshot.uri), "two_tower_dataset": object_uri(two_tower_dataset_uri),
            "two_tower_tuned": object_uri(tuned_two_tower.uri) if tuned_two_tower is not None else ""}
    bundle.metadata.update(publish_steps.publish(models.path, evaluation.path, snapshot.path, models_uri, use_case,
                                                 margin=margin, record=bundle.path, data_uris=data))
