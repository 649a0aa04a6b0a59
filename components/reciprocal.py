"""Reciprocal: every reverse use case's scorer fitted with its forward twin, then republished."""

from kfp import dsl

from components.glossary import shared_args
from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
@shared_args
def reciprocal(snapshot: dsl.Input[dsl.Dataset], models: dsl.Input[list[dsl.Model]],
               stage1: dsl.Input[list[dsl.Model]], evaluations: dsl.Input[list[dsl.Artifact]],
               evaluation: dsl.Output[dsl.Artifact], k: str = "10,20,50", split_at: str = "",
               test_days: float = 14.0, val_days: float = 14.0):
    """Fits each reverse use case's reciprocal scorer on validation (both directions' stage-1
    models) and scores it on test as the ``reciprocal`` model.

    Args:
        snapshot: (shared)
        models: Every use case's evaluated models folder (final retrievers, ranker, serving data).
        stage1: Every use case's stage-1 folder (the ranker step's output).
        evaluations: Every use case's evaluation folder.
        k: Comma-separated cut-offs of the ranking metrics.
        split_at: (shared)
        test_days: (shared)
        val_days: Length of the validation window in days (the scorer is fitted on it).

    Returns:
        evaluation: ``<use_case>/evaluation/`` of every use case (reverse ones with the
            ``reciprocal`` row) and ``<use_case>/reciprocal.json`` of the reverse ones.
    """
    from startup_recs.pipeline import reciprocal_steps

    info = reciprocal_steps.fit_reciprocal(snapshot.path, [m.path for m in models], [s.path for s in stage1],
                                           [e.path for e in evaluations], evaluation.path, k=k, split_at=split_at,
                                           test_days=test_days, val_days=val_days)
    evaluation.metadata.update({uc: v.get("method") for uc, v in info.items()})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
@shared_args
def publish_reciprocal(evaluation: dsl.Input[dsl.Artifact], models_uri: str, margin: float = 0.02) -> str:
    """Adds each reverse use case's fitted scorer to the bundle this run published for it.

    Args:
        evaluation: The reciprocal step's output.
        models_uri: Where bundles are published (``<models_uri>/<use_case>/v<N>``).
        margin: The gate's margin (checked again on publishing).

    Returns:
        Output: JSON ``{use_case: new version or null}``.
    """
    import json

    from startup_recs.pipeline import reciprocal_steps

    return json.dumps(reciprocal_steps.publish_reciprocal(evaluation.path, models_uri, margin=margin))
