"""Refit: after the gate, every model again on all events up to the watermark (what is published)."""

from kfp import dsl

from components.glossary import shared_args
from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
@shared_args
def refit(snapshot: dsl.Input[dsl.Dataset], models: dsl.Input[dsl.Model], two_tower_dataset: dsl.Input[dsl.Dataset],
          two_tower_stage1: dsl.Input[dsl.Model], tuned_two_tower: dsl.Input[dsl.Artifact],
          tuned_als: dsl.Input[dsl.Artifact], tuned_item2item: dsl.Input[dsl.Artifact],
          ranker_dataset: dsl.Input[dsl.Dataset], stage1_models: dsl.Input[dsl.Model], use_case: str,
          refitted: dsl.Output[dsl.Model], epochs: int = 50, batch_size: int = 256, device: str = "auto",
          seed: int = 0, min_interactions: int = 1, memory_gb: float = 4.0, ranker_epochs: int = 20,
          ranker_batch_size: int = 128, ranker_lr: float = 0.001, ranker_windows: int = 1, neg_ratio: float = 2.0,
          propensity_clip: float = 0.05, split_at: str = "", test_days: float = 14.0, val_days: float = 14.0):
    """Every model of the evaluated folder fit again on all events up to the data watermark, with the
    choices validation made; the evaluation of record stays the evaluated folder's (test window).

    Args:
        snapshot: (shared)
        models: The evaluate step's servable folder (retrievers fit until ``split_at``): the
            ranker's features on the window after ``split_at`` and the routing.
        two_tower_dataset: The two-tower dataset (every split is fit).
        two_tower_stage1: The stage-1 two-tower model: its best epoch, scaled to the larger window.
        tuned_two_tower: The two-tower tuning step's output (chosen hyperparameters).
        tuned_als: The ALS tuning step's output.
        tuned_item2item: The item-to-item tuning step's output.
        ranker_dataset: The ranker dataset (its validation window, with ``ranker_windows > 1``).
        stage1_models: The train-ranker step's folder: the validation window's features.
        use_case: The use case to refit.
        epochs: Two-tower: the most epochs the scaled best epoch may reach.
        batch_size: Two-tower: pairs per step.
        device: Two-tower: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        seed: Seed of every fit and of the ranker dataset's negative draws.
        min_interactions: ALS: entities with fewer events are left out.
        memory_gb: Item-to-item: memory budget of the EASE solve in GiB.
        ranker_epochs: Ranker: maximum epochs (early stopping on held-out entities).
        ranker_batch_size: Ranker: lists per optimiser step.
        ranker_lr: Ranker: learning rate.
        ranker_windows: Ranker: windows it learns from: the test window, then (2+) the validation
            window with the stage-1 features, then (3+) the earlier ones the train-ranker step kept.
        neg_ratio: Ranker dataset: negatives per positive within a session.
        propensity_clip: Ranker dataset: lower clip of the position propensity.
        split_at: (shared)
        test_days: (shared)
        val_days: Length of the validation window in days.

    Returns:
        refitted: The folder to publish: refit two-tower, ALS, item-to-item and ranker,
            ``routing.json``, ``serving/`` of every event and ``refit.json`` (``fit_until``).
    """
    from startup_recs.pipeline import refit_steps

    refitted.metadata.update(refit_steps.refit(
        snapshot.path, models.path, two_tower_dataset.path, two_tower_stage1.path, use_case, refitted.path,
        tuned_two_tower=tuned_two_tower.path, tuned_als=tuned_als.path, tuned_item2item=tuned_item2item.path,
        epochs=epochs, batch_size=batch_size, device=device, seed=seed, min_interactions=min_interactions,
        i2i_memory_gb=memory_gb, ranker_epochs=ranker_epochs, ranker_batch_size=ranker_batch_size,
        ranker_lr=ranker_lr, neg_ratio=neg_ratio, propensity_clip=propensity_clip, split_at=split_at,
        test_days=test_days, val_days=val_days, ranker_windows=ranker_windows, ranker_dataset_dir=ranker_dataset.path,
        stage1_models_dir=stage1_models.path))
