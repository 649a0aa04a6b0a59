"""Dataset builders: snapshot -> two-tower pairs, ALS matrix (one fit window), ranker pairs."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def dataset_two_tower(snapshot: dsl.Input[dsl.Dataset], use_case: str, dataset: dsl.Output[dsl.Dataset],
                      negative_samples: int = 5, min_interactions: int = 1, seed: int = 0,
                      split_at: str = "", test_days: float = 14.0, val_days: float = 14.0):
    """Pairs with hard negatives and a time-split column (Parquet) + vocabularies fitted on train."""
    from startup_recs.pipeline import steps

    dataset.metadata.update(steps.dataset_two_tower(
        snapshot.path, use_case, dataset.path, negative_samples=negative_samples,
        min_interactions=min_interactions, seed=seed, split_at=split_at, test_days=test_days,
        val_days=val_days))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def dataset_als(snapshot: dsl.Input[dsl.Dataset], use_case: str, dataset: dsl.Output[dsl.Dataset],
                fit_window: str = "trainval", min_interactions: int = 1, split_at: str = "",
                test_days: float = 14.0, val_days: float = 14.0):
    """Entity x candidate CSR matrix (.npz) of one fit window (train | trainval) + id mappings."""
    from startup_recs.pipeline import steps

    dataset.metadata.update(steps.dataset_als(
        snapshot.path, use_case, dataset.path, fit_window=fit_window, min_interactions=min_interactions,
        split_at=split_at, test_days=test_days, val_days=val_days))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def dataset_ranker(snapshot: dsl.Input[dsl.Dataset], use_case: str, dataset: dsl.Output[dsl.Dataset],
                   neg_ratio: float = 2.0, propensity_clip: float = 0.05, seed: int = 0, split_at: str = "",
                   test_days: float = 14.0, val_days: float = 14.0):
    """Session pairs with inverse-propensity weights (Parquet) + the position-bias curve."""
    from startup_recs.pipeline import steps

    dataset.metadata.update(steps.dataset_ranker(
        snapshot.path, use_case, dataset.path, neg_ratio=neg_ratio, propensity_clip=propensity_clip,
        seed=seed, split_at=split_at, test_days=test_days, val_days=val_days))
