"""Dataset builders: snapshot -> two-tower pairs, ALS matrix (one fit window), ranker pairs."""

from kfp import dsl

from components.glossary import shared_args
from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
@shared_args
def dataset_two_tower(snapshot: dsl.Input[dsl.Dataset], use_case: str, dataset: dsl.Output[dsl.Dataset],
                      negative_samples: int = 5, min_interactions: int = 1, seed: int = 0,
                      split_at: str = "", test_days: float = 14.0, val_days: float = 14.0) -> str:
    """Pairs with hard negatives and a time-split column (Parquet) + vocabularies fitted on train.

    Args:
        snapshot: (shared)
        use_case: The use case to build for (``startup_developer``, ``startup_investor``, ...).
        negative_samples: Negatives per positive (hard ones first, then random), per part.
        min_interactions: Entities with fewer train-window events are dropped from every split.
        seed: Seed of the per-row negative draws (same seed, same file).
        split_at: (shared)
        test_days: (shared)
        val_days: (shared)

    Returns:
        dataset: ``two_tower{sfx}.parquet`` with its entity/candidate sidecars, the train-window
            vocabulary and ``_meta.json``.
        Output: The dataset's object-store URI, recorded in the published bundle's manifest
            (what a PyTorchJob outside the pipeline trains on).
    """
    from startup_recs.pipeline import data_steps

    dataset.metadata.update(data_steps.dataset_two_tower(
        snapshot.path, use_case, dataset.path, negative_samples=negative_samples,
        min_interactions=min_interactions, seed=seed, split_at=split_at, test_days=test_days,
        val_days=val_days))
    return dataset.uri


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
@shared_args
def dataset_als(snapshot: dsl.Input[dsl.Dataset], use_case: str, dataset: dsl.Output[dsl.Dataset],
                fit_window: str = "trainval", min_interactions: int = 1, split_at: str = "",
                test_days: float = 14.0, val_days: float = 14.0):
    """Entity x candidate CSR matrix (.npz) of one fit window (train | trainval) + id mappings.

    Args:
        snapshot: (shared)
        use_case: The use case to build for.
        fit_window: ``train`` (events before the validation start: stage 1) or ``trainval``
            (events before ``split_at``: the final refit).
        min_interactions: Entities with fewer fit-window events are left out.
        split_at: (shared)
        test_days: (shared)
        val_days: (shared)

    Returns:
        dataset: ``als_interactions{sfx}.npz`` and the entity/candidate id mappings of the window.
    """
    from startup_recs.pipeline import data_steps

    dataset.metadata.update(data_steps.dataset_als(
        snapshot.path, use_case, dataset.path, fit_window=fit_window, min_interactions=min_interactions,
        split_at=split_at, test_days=test_days, val_days=val_days))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
@shared_args
def dataset_ranker(snapshot: dsl.Input[dsl.Dataset], use_case: str, dataset: dsl.Output[dsl.Dataset],
                   neg_ratio: float = 2.0, propensity_clip: float = 0.05, seed: int = 0, split_at: str = "",
                   test_days: float = 14.0, val_days: float = 14.0):
    """Session pairs with inverse-propensity weights (Parquet) + the position-bias curve.

    Args:
        snapshot: (shared)
        use_case: The use case to build for.
        neg_ratio: Shown-but-not-acted negatives kept per positive, within a session.
        propensity_clip: Lower clip of the position propensity (bounds the inverse weights).
        seed: Seed of the per-row negative draws.
        split_at: (shared)
        test_days: (shared)
        val_days: (shared)

    Returns:
        dataset: ``ranker{sfx}.parquet``, its ``_propensity.json`` curve and ``_meta.json``.
    """
    from startup_recs.pipeline import data_steps

    dataset.metadata.update(data_steps.dataset_ranker(
        snapshot.path, use_case, dataset.path, neg_ratio=neg_ratio, propensity_clip=propensity_clip,
        seed=seed, split_at=split_at, test_days=test_days, val_days=val_days))
