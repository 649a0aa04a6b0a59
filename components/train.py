"""Trainers: two-tower (GPU image; CUDA when present, CPU otherwise), ALS, item-to-item, the ranker.
Tuned hyperparameters arrive as the tuning step's ``best_params.json`` (``tuned``).

The hyperparameter defaults below are literals because KFP ships only the function's source to
the pod; ``tests/unit/test_config_defaults.py`` checks each against its trainer config dataclass.
"""

from typing import Optional

from kfp import dsl

from components.glossary import shared_args
from components.images import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
@shared_args
def train_two_tower(dataset: dsl.Input[dsl.Dataset], tuned: dsl.Input[dsl.Artifact], use_case: str,
                    model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics], window: str = "train",
                    epochs: int = 50, batch_size: int = 256, device: str = "auto", seed: int = 0,
                    stage1: Optional[dsl.Input[dsl.Model]] = None):  # noqa: UP045 - KFP reads Optional[...]
    """Two-tower retrieval model fitted on one window (train = stage 1, trainval = final).

    Args:
        dataset: The two-tower dataset (pairs, sidecars, vocabulary).
        tuned: The two-tower tuning step's output; its ``best_params.json`` values (embedding dim,
            learning rate, temperature, hard negatives) replace the trainer's defaults.
        use_case: The use case of the dataset.
        window: ``train`` (stage 1: early stopping on validation) or ``trainval`` (final refit
            on train + validation).
        epochs: Maximum epochs (stage 1 stops early on validation Recall@K).
        batch_size: Pairs per step; the other pairs of a batch are the in-batch negatives.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        seed: Seed of initialisation, shuffling and negative sampling.
        stage1: For the trainval refit: the stage-1 model, whose best epoch (scaled to the larger
            window) replaces ``epochs``.

    Returns:
        model: The trainer's output folder: weights, encoder, entity and candidate embeddings,
            history and ``_config.json``.
        metrics: Best validation Recall@K and the epochs run, for the Kubeflow UI.
    """
    from startup_recs.pipeline import step, train_steps

    info = train_steps.train_two_tower(dataset.path, use_case, model.path, window=window, epochs=epochs,
                                       batch_size=batch_size, device=device, seed=seed, params_dir=tuned.path,
                                       stage1_dir=stage1.path if stage1 is not None else None)
    model.metadata.update(info)
    step.log_metrics(metrics, {k: v for k, v in info.items() if k.startswith(("best_val", "epochs_run"))})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
@shared_args
def train_als(dataset: dsl.Input[dsl.Dataset], tuned: dsl.Input[dsl.Artifact], use_case: str,
              model: dsl.Output[dsl.Model], track_loss: bool = False):
    """Implicit-feedback ALS on the dataset's CSR matrix (its fit window decides the stage).

    Args:
        dataset: The ALS dataset of one fit window (matrix and id mappings).
        tuned: The ALS tuning step's output; its ``best_params.json`` values (factors,
            regularization, alpha, iterations, weighting) are the hyperparameters.
        use_case: The use case of the dataset.
        track_loss: Record the training loss per iteration (~15-20 % of the fit): the final
            model's, which the evaluation report plots.

    Returns:
        model: ``als{sfx}_v1_*``: user and item factors, id mappings and ``_config.json``.
    """
    from startup_recs.pipeline import train_steps

    model.metadata.update(train_steps.train_als(dataset.path, use_case, model.path, params_dir=tuned.path,
                                                track_loss=track_loss))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
@shared_args
def train_item2item(dataset: dsl.Input[dsl.Dataset], tuned: dsl.Input[dsl.Artifact], use_case: str,
                    model: dsl.Output[dsl.Model], memory_gb: float = 4.0):
    """Item-to-item retriever (EASE where its n x n solve fits ``memory_gb``, else item-kNN) on the
    ALS dataset's matrix of one fit window.

    Args:
        dataset: The ALS dataset of one fit window (matrix and id mappings).
        tuned: The item-to-item tuning step's output; its ``best_params.json`` values (method,
            lambda, neighbours) are the hyperparameters.
        use_case: The use case of the dataset.
        memory_gb: Memory budget of the EASE solve in GiB; past the candidate count it allows,
            BM25 item-kNN is fitted instead.

    Returns:
        model: ``item2item{sfx}_v1_*``: EASE weights or the kNN similarity, the candidate mapping
            and ``_config.json``.
    """
    from startup_recs.pipeline import train_steps

    model.metadata.update(train_steps.train_item2item(dataset.path, use_case, model.path, memory_gb=memory_gb,
                                                      params_dir=tuned.path))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
@shared_args
def train_ranker(dataset: dsl.Input[dsl.Dataset], two_tower: dsl.Input[dsl.Model], als: dsl.Input[dsl.Model],
                 item2item: dsl.Input[dsl.Model], snapshot: dsl.Input[dsl.Dataset],
                 tuned_two_tower: dsl.Input[dsl.Artifact], tuned_als: dsl.Input[dsl.Artifact],
                 tuned_item2item: dsl.Input[dsl.Artifact], use_case: str,
                 model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics], epochs: int = 20,
                 batch_size: int = 128, lr: float = 0.001, windows: int = 1, tt_epochs: int = 50,
                 tt_batch_size: int = 256, device: str = "auto", seed: int = 0, min_interactions: int = 1,
                 memory_gb: float = 4.0, neg_ratio: float = 2.0, propensity_clip: float = 0.05,
                 split_at: str = "", test_days: float = 14.0, val_days: float = 14.0):
    """Re-ranker on validation-window pairs scored by the stage-1 retrievers (never saw the labels).
    The output folder holds the stage-1 retrievers, their serving data and the ranker: evaluate's
    validation models.

    Args:
        dataset: The ranker dataset (session pairs with propensities).
        two_tower: The stage-1 two-tower model (fitted on the train window).
        als: The stage-1 ALS model (train window).
        item2item: The stage-1 item-to-item model (train window).
        snapshot: The extract step's snapshot folder (serving data until the validation start).
        tuned_two_tower: The two-tower tuning step's output (the earlier windows' two-tower).
        tuned_als: The ALS tuning step's output (the earlier windows' ALS).
        tuned_item2item: The item-to-item tuning step's output (the earlier windows' item-to-item).
        use_case: The use case of the dataset.
        epochs: Maximum training epochs (early stopping on a held-out set of entities).
        batch_size: Lists per optimiser step.
        lr: Adam learning rate.
        windows: Validation-length windows the ranker learns from: 1 = the validation window only;
            each more one is the window before, scored by stage-1 retrievers fit again before it.
        tt_epochs: Earlier windows: two-tower epochs (the stage-1 value).
        tt_batch_size: Earlier windows: two-tower pairs per step.
        device: Earlier windows: two-tower device, ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        seed: Earlier windows: seed of the fits and of the ranker dataset's negative draws.
        min_interactions: Earlier windows: ALS and two-tower minimum events per entity.
        memory_gb: Earlier windows: item-to-item EASE memory budget in GiB.
        neg_ratio: Earlier windows: ranker dataset negatives per positive within a session.
        propensity_clip: Earlier windows: lower clip of the position propensity.
        split_at: (shared)
        test_days: (shared)
        val_days: Length of the validation window in days (the ranker learns from it).

    Returns:
        model: The stage-1 folder: the three stage-1 retrievers, their ``serving/`` data and the
            ranker (``ranker{sfx}_v1*``).
        metrics: The ranker's holdout NDCG values, for the Kubeflow UI.
    """
    from startup_recs.pipeline import step, train_steps

    options = {"tuned_two_tower": tuned_two_tower.path, "tuned_als": tuned_als.path,
               "tuned_item2item": tuned_item2item.path, "epochs": tt_epochs, "batch_size": tt_batch_size,
               "device": device, "seed": seed, "min_interactions": min_interactions, "i2i_memory_gb": memory_gb,
               "neg_ratio": neg_ratio, "propensity_clip": propensity_clip}
    info = train_steps.train_ranker(dataset.path, two_tower.path, als.path, snapshot.path, use_case, model.path,
                                    epochs=epochs, batch_size=batch_size, lr=lr, split_at=split_at,
                                    test_days=test_days, val_days=val_days, item2item_dir=item2item.path,
                                    windows=windows, window_options=options)
    model.metadata.update(info)
    step.log_metrics(metrics, {k: v for k, v in info.items() if "ndcg" in k})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
@shared_args
def train_two_tower_ddp(dataset: dsl.Input[dsl.Dataset], tuned: dsl.Input[dsl.Artifact], use_case: str,
                        model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics], workers: int, image: str,
                        window: str = "train", epochs: int = 50, batch_size: int = 256, device: str = "auto",
                        seed: int = 0, gpus_per_worker: int = 1, node_selector: str = "{}", tolerations: str = "[]",
                        cpu: str = "4", memory: str = "16Gi", s3_secret: str = "recs-s3",
                        storage_config_map: str = "recs-storage", namespace: str = "",
                        timeout_s: float = 21600.0):
    """The two-tower fit of :func:`train_two_tower` across ``workers`` nodes: a Kubeflow Training
    Operator PyTorchJob (DDP under torchrun) created through the Kubernetes API and waited on.

    Args:
        dataset: The two-tower dataset; the job's pods read it from its object-store URI.
        tuned: The two-tower tuning step's output (``best_params.json``), read the same way.
        use_case: The use case of the dataset.
        workers: Pods (nodes) of the job, the Master included (2 or more).
        image: The trainer image of the job's pods (the GPU image).
        window: ``train`` (stage 1) or ``trainval`` (final refit).
        epochs: Maximum epochs.
        batch_size: Pairs per step on each process.
        device: ``auto``, ``cpu`` or ``cuda``.
        seed: Seed of initialisation, shuffling and negative sampling.
        gpus_per_worker: GPUs (torchrun processes) per pod; 0 = CPU pods (gloo).
        node_selector: JSON object: the GPU pool's node labels.
        tolerations: JSON list: the GPU pool's taints tolerated.
        cpu: CPU request and limit of each pod.
        memory: Memory request and limit of each pod.
        s3_secret: Secret with the object store's credentials ("" = none, e.g. IRSA).
        storage_config_map: ConfigMap with AWS_ENDPOINT_URL and friends ("" = none).
        namespace: Where the job runs ("" = this step's own namespace).
        timeout_s: Longest wait before the job is deleted and the step fails.

    Returns:
        model: The same folder the one-node step writes (global rank 0's output).
        metrics: Best validation Recall@K and the epochs run, for the Kubeflow UI.
    """
    import json

    from startup_recs.pipeline import step, two_tower_job

    settings = two_tower_job.JobSettings(
        use_case=use_case, dataset_uri=dataset.uri, tuned_uri=tuned.uri, output_uri=model.uri.rstrip("/") + "_ddp",
        image=image, workers=workers, gpus=gpus_per_worker,
        train={"window": window, "epochs": epochs, "batch_size": batch_size, "device": device, "seed": seed},
        node_selector=json.loads(node_selector or "{}"), tolerations=json.loads(tolerations or "[]"), cpu=cpu,
        memory=memory, secret=s3_secret, config_map=storage_config_map)
    info = two_tower_job.train_distributed(settings, model.path, namespace=namespace, timeout_s=timeout_s)
    model.metadata.update(info)
    step.log_metrics(metrics, {k: v for k, v in info.items() if k.startswith(("best_val", "epochs_run"))})
