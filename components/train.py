"""Trainers: two-tower (GPU image; CUDA when present, CPU otherwise), ALS, item-to-item, the ranker.
Tuned hyperparameters arrive as the tuning step's ``best_params.json`` (``tuned``)."""

from kfp import dsl

from components.images import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_two_tower(dataset: dsl.Input[dsl.Dataset], tuned: dsl.Input[dsl.Artifact], use_case: str,
                    model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics], window: str = "train",
                    epochs: int = 50, batch_size: int = 256, device: str = "auto", seed: int = 0):
    """Two-tower retrieval model fitted on one window (train = stage 1, trainval = final)."""
    from startup_recs.pipeline import steps

    info = steps.train_two_tower(dataset.path, use_case, model.path, window=window, epochs=epochs,
                                 batch_size=batch_size, device=device, seed=seed, params_dir=tuned.path)
    model.metadata.update(info)
    steps.log_metrics(metrics, {k: v for k, v in info.items() if k.startswith(("best_val", "epochs_run"))})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train_als(dataset: dsl.Input[dsl.Dataset], tuned: dsl.Input[dsl.Artifact], use_case: str,
              model: dsl.Output[dsl.Model]):
    """Implicit-feedback ALS on the dataset's CSR matrix (its fit window decides the stage)."""
    from startup_recs.pipeline import steps

    model.metadata.update(steps.train_als(dataset.path, use_case, model.path, params_dir=tuned.path))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train_item2item(dataset: dsl.Input[dsl.Dataset], tuned: dsl.Input[dsl.Artifact], use_case: str,
                    model: dsl.Output[dsl.Model], memory_gb: float = 4.0):
    """Item-to-item retriever (EASE where its n x n solve fits ``memory_gb``, else item-kNN) on the
    ALS dataset's matrix of one fit window."""
    from startup_recs.pipeline import steps

    model.metadata.update(steps.train_item2item(dataset.path, use_case, model.path, memory_gb=memory_gb,
                                                params_dir=tuned.path))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train_ranker(dataset: dsl.Input[dsl.Dataset], two_tower: dsl.Input[dsl.Model], als: dsl.Input[dsl.Model],
                 item2item: dsl.Input[dsl.Model], snapshot: dsl.Input[dsl.Dataset], use_case: str,
                 model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics], epochs: int = 20,
                 batch_size: int = 128, lr: float = 0.001, split_at: str = "", test_days: float = 14.0,
                 val_days: float = 14.0):
    """Re-ranker on validation-window pairs scored by the stage-1 retrievers (never saw the labels).
    The output folder holds the stage-1 retrievers, their serving data and the ranker: evaluate's
    validation models."""
    from startup_recs.pipeline import steps

    info = steps.train_ranker(dataset.path, two_tower.path, als.path, snapshot.path, use_case, model.path,
                              epochs=epochs, batch_size=batch_size, lr=lr, split_at=split_at,
                              test_days=test_days, val_days=val_days, item2item_dir=item2item.path)
    model.metadata.update(info)
    steps.log_metrics(metrics, {k: v for k, v in info.items() if "ndcg" in k})
