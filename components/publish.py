"""The evaluation gate and publishing a versioned bundle with an atomic ``latest`` pointer."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def gate(evaluation: dsl.Input[dsl.Artifact], models_uri: str, use_case: str, margin: float = 0.02) -> str:
    """``"publish"`` when routed_ranked NDCG@10 beats popularity and is at most ``margin``
    (relative) below the published bundle's; ``"skip"`` otherwise (the reason is logged)."""
    from startup_recs.pipeline import steps

    return steps.gate(evaluation.path, models_uri, use_case, margin=margin)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def publish(models: dsl.Input[dsl.Model], evaluation: dsl.Input[dsl.Artifact], snapshot: dsl.Input[dsl.Dataset],
            models_uri: str, use_case: str, bundle: dsl.Output[dsl.Artifact], margin: float = 0.02):
    """``<models_uri>/<use_case>/v<N>/`` + manifest.json, then ``latest`` -> vN (atomic). ``bundle``
    holds a copy of the manifest; its metadata names the published URI and version."""
    from startup_recs.pipeline import steps

    bundle.metadata.update(steps.publish(models.path, evaluation.path, snapshot.path, models_uri, use_case,
                                         margin=margin, record=bundle.path))
