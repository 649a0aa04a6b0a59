"""``reverse_recommendation_training``: extract -> datasets -> retrievers -> ranker -> evaluate ->
gated publish, once per use case (a ``ParallelFor``); by default for all four use cases, the reverse
ones (startups find developers / investors) and their forward twins (developers / investors find
startups). The name is the legacy one, kept so existing runs and schedules stay recognisable.
After the loop, ``reciprocal`` fits each reverse use case's reciprocal scorer with its forward twin
and ``publish-reciprocal`` adds it to the bundle the loop published.

Fitting windows (docs/contracts.md): stage-1 retrievers fit on *train* (``< val_start``) score the
ranker's validation pairs and choose the warm route; final retrievers are refit on *train + val*
(``< split_at``) and scored once on *test* by evaluate; the published bundle serves them.

Cluster settings that are not run parameters (the GPU pool's node label and taint, resource
requests, fan-out) are :class:`CompileOptions`, applied when the pipeline is built.

The trainers' hyperparameter defaults are literals in the signature below (KFP reads them from
there); ``tests/unit/test_config_defaults.py`` checks each against its trainer config dataclass.
"""

from dataclasses import asdict, dataclass, fields
from typing import Any

from kfp import dsl, kubernetes

import components as c

PIPELINE_NAME = "reverse-recommendation-training"
DEFAULT_USE_CASES = ["startup_developer", "startup_investor", "developer_startup", "investor_startup"]


@dataclass(frozen=True)
class CompileOptions:
    """Where and how big the pods are; baked into the compiled YAML, not run parameters.

    The GPU pool defaults follow the NVIDIA GPU operator (node label ``nvidia.com/gpu.present=true``,
    taint ``nvidia.com/gpu=present:NoSchedule``); GKE users pass e.g.
    ``gpu_node_label_key=cloud.google.com/gke-accelerator``, ``gpu_node_label_value=nvidia-l4``.
    """

    gpu_accelerator: str = "nvidia.com/gpu"
    gpu_count: int = 1
    gpu_node_label_key: str = "nvidia.com/gpu.present"
    gpu_node_label_value: str = "true"
    gpu_toleration_key: str = "nvidia.com/gpu"
    gpu_toleration_value: str = "present"  # empty -> operator Exists
    gpu_toleration_effect: str = "NoSchedule"
    trainer_cpu: str = "4"
    trainer_memory: str = "16G"
    step_cpu: str = "1"
    step_memory: str = "4G"
    parallelism: int = 0  # use cases trained at once; 0 = all
    # > 1: each two-tower fit is a Kubeflow Training Operator PyTorchJob of this many GPU-pool pods
    # (DDP under torchrun; gpu_count GPUs each), created and waited on by a CPU step; 1 = one pod.
    tt_workers: int = 1
    # S3 access of every step (bundles, s3:// inputs): env from a Secret and a ConfigMap, both
    # optional (IRSA / Workload Identity need neither); "" leaves them out of the YAML.
    s3_secret: str = "recs-s3"  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    storage_config_map: str = "recs-storage"  # AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, S3_USE_HTTPS, ...
    # the app database URL (with its password) of the steps that read it, as RECS_DB_URL from this
    # Secret (key RECS_DB_URL; optional): the db_url parameter may then stay empty, and no password
    # is stored in the run's spec or shown in the UI. "" leaves it out of the YAML.
    db_secret: str = "recs-db"

    @classmethod
    def from_pairs(cls, pairs: list[str] | None) -> "CompileOptions":
        """``["gpu_node_label_key=x", ...]`` (CLI ``--option``) -> options; unknown keys are an error."""
        from startup_recs.core.errors import ConfigError

        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for pair in pairs or []:
            key, sep, value = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in known:
                raise ConfigError(f"bad compile option {pair!r}; expected KEY=VALUE with KEY one of: {', '.join(known)}")
            values[key] = int(value) if key in ("gpu_count", "parallelism", "tt_workers") else value
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
STORAGE_CONFIG_KEYS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "S3_USE_HTTPS", "S3_VERIFY_SSL")


def _db_env(task: dsl.PipelineTask, opts: CompileOptions) -> dsl.PipelineTask:
    """``RECS_DB_URL`` from the ``db_secret`` Secret, on the steps that read the app database."""
    if opts.db_secret:
        kubernetes.use_secret_as_env(task, opts.db_secret, {"RECS_DB_URL": "RECS_DB_URL"}, optional=True)
    return task


def _storage_env(task: dsl.PipelineTask, opts: CompileOptions) -> None:
    if opts.s3_secret:
        kubernetes.use_secret_as_env(task, opts.s3_secret, {k: k for k in S3_SECRET_KEYS}, optional=True)
    if opts.storage_config_map:
        kubernetes.use_config_map_as_env(task, opts.storage_config_map, {k: k for k in STORAGE_CONFIG_KEYS},
                                         optional=True)


def _cpu_step(task: dsl.PipelineTask, opts: CompileOptions, name: str, cache: bool = True) -> dsl.PipelineTask:
    task.set_display_name(name).set_caching_options(cache)
    task.set_cpu_request(opts.step_cpu).set_memory_request(opts.step_memory)
    _storage_env(task, opts)
    return task


def _gpu_step(task: dsl.PipelineTask, opts: CompileOptions, name: str) -> dsl.PipelineTask:
    """Two-tower on the GPU pool: accelerator limit, requests, node selector and toleration.
    ``gpu_count=0`` (a laptop cluster) leaves all four out: the trainer then runs on CPU."""
    task.set_display_name(name).set_caching_options(True)
    task.set_cpu_request(opts.trainer_cpu).set_memory_request(opts.trainer_memory)
    _storage_env(task, opts)
    if opts.gpu_count > 0:
        task.set_accelerator_type(opts.gpu_accelerator).set_accelerator_limit(opts.gpu_count)
        kubernetes.add_node_selector(task, label_key=opts.gpu_node_label_key,
                                     label_value=opts.gpu_node_label_value)
        kubernetes.add_toleration(
            task, key=opts.gpu_toleration_key, operator="Equal" if opts.gpu_toleration_value else "Exists",
            value=opts.gpu_toleration_value or None, effect=opts.gpu_toleration_effect)
    return task


def _job_args(opts: CompileOptions) -> dict[str, Any]:
    """The two-tower PyTorchJob's pods: trainer image, the GPU pool's node selector and toleration
    (the same as :func:`_gpu_step`'s), size and S3 access."""
    import json

    from components.images import GPU_IMAGE

    selector, tolerations = {}, []
    if opts.gpu_count > 0:
        selector = {opts.gpu_node_label_key: opts.gpu_node_label_value}
        tol = {"key": opts.gpu_toleration_key, "operator": "Equal" if opts.gpu_toleration_value else "Exists",
               "effect": opts.gpu_toleration_effect}
        if opts.gpu_toleration_value:
            tol["value"] = opts.gpu_toleration_value
        tolerations = [tol]
    return {"workers": opts.tt_workers, "image": GPU_IMAGE, "gpus_per_worker": opts.gpu_count,
            "node_selector": json.dumps(selector), "tolerations": json.dumps(tolerations),
            "cpu": opts.trainer_cpu, "memory": opts.trainer_memory, "s3_secret": opts.s3_secret,
            "storage_config_map": opts.storage_config_map}


def build_pipeline(opts: CompileOptions | None = None) -> Any:
    """The pipeline function (a KFP ``GraphComponent``) built with ``opts``."""
    opts = opts or CompileOptions()

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def reverse_recommendation_training(
        models_uri: str,
        use_cases: list = DEFAULT_USE_CASES,  # noqa: B006 - KFP reads the default from the signature
        db_url: str = "",
        events_uri: str = "",
        events_use_case: str = "",
        entity_col: str = "entity_id",
        candidate_col: str = "candidate_id",
        time_col: str = "ts",
        event_col: str = "event",
        weight_col: str = "weight",
        event_weights: str = "",
        split_at: str = "",
        test_days: float = 14.0,
        val_days: float = 14.0,
        seed: int = 0,
        negative_samples: int = 5,
        min_interactions: int = 1,
        neg_ratio: float = 2.0,
        propensity_clip: float = 0.05,
        tt_epochs: int = 50,
        tt_batch_size: int = 256,
        tt_lr: float = 0.001,
        embedding_dim: int = 128,
        device: str = "auto",
        als_factors: int = 128,
        als_iterations: int = 10,
        als_regularization: float = 0.01,
        als_alpha: float = 1.0,
        als_weighting: str = "linear",
        tt_temperature: float = 0.2,
        tt_hard_negatives: int = 2,
        i2i_method: str = "auto",
        i2i_lam: float = 200.0,
        i2i_neighbours: int = 100,
        i2i_memory_gb: float = 4.0,
        tune_two_tower_trials: int = 0,
        tune_als_trials: int = 8,
        tune_item2item_trials: int = 4,
        tune_timeout_s: float = 600.0,
        ranker_epochs: int = 20,
        ranker_batch_size: int = 128,
        ranker_lr: float = 0.001,
        ranker_windows: int = 1,
        eval_k: str = "10,20,50",
        gate_margin: float = 0.02,
        oracle_uri: str = "",
        monitor_online: bool = False,
        monitor_window_days: float = 7.0,
        snapshot_uri: str = "",
    ) -> dsl.Artifact:
        """Trains, evaluates and (gated) publishes the recommenders of every use case in ``use_cases``.

        Args:
            models_uri: Where bundles are published: ``<models_uri>/<use_case>/v<N>`` and its
                ``latest`` pointer (local path or ``s3://``).
            use_cases: The use cases to train, one DAG each (``startup_developer``,
                ``startup_investor``, ``developer_startup``, ``investor_startup``).
            db_url: SQLAlchemy URL of the app database (``postgresql+psycopg://...`` or
                ``sqlite:///file``); give it or ``events_uri``. Messages mask its password. Empty:
                ``RECS_DB_URL`` from the ``db_secret`` Secret (keeps the password out of the run).
            events_uri: An interaction log to import instead (Parquet or CSV, local or ``s3://``).
            events_use_case: The use case the imported log's events belong to (with ``events_uri``).
            entity_col: The imported log's entity id column.
            candidate_col: The imported log's candidate id column.
            time_col: The imported log's event-time column.
            event_col: The imported log's event-name column.
            weight_col: The imported log's per-event weight column.
            event_weights: JSON object ``{event: weight}`` replacing the default event weights.
            split_at: Start of the test window (ISO-8601); empty = ``test_days`` before the
                newest event.
            test_days: Length of the test window in days when ``split_at`` is empty.
            val_days: Length of the validation window in days, just before the test window.
            seed: Seed of the datasets' negative draws, the tuners and the two-tower trainer.
            negative_samples: Two-tower dataset: negatives per positive.
            min_interactions: Entities with fewer training events are dropped from the datasets.
            neg_ratio: Ranker dataset: negatives per positive within a session.
            propensity_clip: Ranker dataset: lower clip of the position propensity.
            tt_epochs: Two-tower: maximum epochs (stage 1 stops early on validation).
            tt_batch_size: Two-tower: pairs per step (in-batch negatives).
            tt_lr: Two-tower: learning rate (the tuner's starting value).
            embedding_dim: Two-tower: embedding size (the tuner's starting value).
            device: Two-tower: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
            als_factors: ALS: latent factors (the tuner's starting value).
            als_iterations: ALS: sweeps (the tuner's starting value).
            als_regularization: ALS: L2 regularization (the tuner's starting value).
            als_alpha: ALS: confidence scale, confidence = 1 + alpha * f(weight).
            als_weighting: ALS: confidence weighting ``linear``, ``binary``, ``log`` or ``bm25``.
            tt_temperature: Two-tower: softmax temperature (the tuner's starting value).
            tt_hard_negatives: Two-tower: hard negatives per positive (the tuner's starting value).
            i2i_method: Item-to-item: ``auto`` (EASE where it fits in ``i2i_memory_gb``, BM25
                item-kNN past that), ``cosine`` or ``bm25``.
            i2i_lam: Item-to-item: EASE L2 strength.
            i2i_neighbours: Item-to-item: item-kNN neighbours (K).
            i2i_memory_gb: Item-to-item: memory budget of the EASE solve in GiB.
            tune_two_tower_trials: Two-tower tuning trials; 0 passes the values above through.
            tune_als_trials: ALS tuning trials; 0 passes the values above through.
            tune_item2item_trials: Item-to-item tuning trials; 0 passes the values above through.
            tune_timeout_s: Wall-clock budget of each tuning step in seconds; 0 = no limit.
            ranker_epochs: Ranker: maximum epochs (early stopping on held-out entities).
            ranker_batch_size: Ranker: lists per optimiser step.
            ranker_lr: Ranker: learning rate.
            ranker_windows: Ranker: validation-length windows it learns from (1 = the validation
                window; each more one is the window before, scored by stage-1 retrievers fit again
                before it: one more set of stage-1 fits per window).
            eval_k: Comma-separated cut-offs of the ranking metrics.
            gate_margin: How far (relative) routed_ranked NDCG@10 may fall below the published
                bundle's and still be published.
            oracle_uri: ``oracle.parquet`` of a synthetic marketplace: the report adds the
                planted-affinity ceiling; empty for real data.
            snapshot_uri: The persistent snapshot extract appends each run's new rows to (from its
                own watermarks; entity tables rewritten); empty = ``<models_uri>/_snapshot/<source>``.
            monitor_online: Add the monitor step: online contact rate per served model version
                (sessions logged by the predictor since the previous run's data watermark).
            monitor_window_days: The monitor's attribution window after a session, in days.

        Returns:
            Output: Every use case's evaluation folder, ``<use_case>/evaluation/`` (metrics.json,
                report.md, plots; reverse use cases with the ``reciprocal`` model).
        """
        split = {"split_at": split_at, "test_days": test_days, "val_days": val_days}
        probe = _db_env(_cpu_step(c.probe_source(db_url=db_url, events_uri=events_uri, time_col=time_col),
                                  opts, "probe-source", cache=False), opts)
        # extract's cache key: the newest event and a digest of the entity tables (both never cached)
        profiles = _db_env(_cpu_step(c.probe_entities(db_url=db_url, events_uri=events_uri), opts,
                                     "probe-entities", cache=False), opts)
        ex = _cpu_step(c.extract(
            watermark=probe.output, db_url=db_url, events_uri=events_uri, events_use_case=events_use_case,
            entity_col=entity_col, candidate_col=candidate_col, time_col=time_col, event_col=event_col,
            weight_col=weight_col, event_weights=event_weights, entities=profiles.output,
            snapshot_uri=snapshot_uri, models_uri=models_uri), opts, "extract")
        _db_env(ex, opts)
        snapshot = ex.outputs["snapshot"]

        with dsl.ParallelFor(use_cases, parallelism=opts.parallelism) as uc:
            with dsl.If(monitor_online == True, name="monitor-enabled"):  # noqa: E712 - a KFP condition
                _db_env(_cpu_step(c.monitor(snapshot=snapshot, db_url=db_url, use_case=uc, models_uri=models_uri,
                                            window_days=monitor_window_days), opts, "monitor", cache=False), opts)
            ds_tt = _cpu_step(c.dataset_two_tower(
                snapshot=snapshot, use_case=uc, negative_samples=negative_samples,
                min_interactions=min_interactions, seed=seed, **split), opts, "dataset-two-tower")
            ds_als = {
                window: _cpu_step(c.dataset_als(snapshot=snapshot, use_case=uc, fit_window=window,
                                                min_interactions=min_interactions, **split),
                                  opts, f"dataset-als-{window}")
                for window in ("train", "trainval")
            }
            ds_rk = _cpu_step(c.dataset_ranker(
                snapshot=snapshot, use_case=uc, neg_ratio=neg_ratio, propensity_clip=propensity_clip,
                seed=seed, **split), opts, "dataset-ranker")

            # a tuning step before each trainer (train -> validation); 0 trials = the values above
            tune = {
                "two_tower": _gpu_step(c.tune_two_tower(
                    snapshot=snapshot, use_case=uc, embedding_dim=embedding_dim, lr=tt_lr,
                    temperature=tt_temperature, hard_negatives=tt_hard_negatives, trials=tune_two_tower_trials,
                    timeout_s=tune_timeout_s, seed=seed, **split), opts, "tune-two-tower"),
                "als": _cpu_step(c.tune_als(
                    snapshot=snapshot, use_case=uc, factors=als_factors, regularization=als_regularization,
                    alpha=als_alpha, iterations=als_iterations, weighting=als_weighting, trials=tune_als_trials,
                    timeout_s=tune_timeout_s, seed=seed, **split), opts, "tune-als"),
                "item2item": _cpu_step(c.tune_item2item(
                    snapshot=snapshot, use_case=uc, method=i2i_method, lam=i2i_lam, neighbours=i2i_neighbours,
                    trials=tune_item2item_trials, timeout_s=tune_timeout_s, seed=seed, **split),
                    opts, "tune-item2item"),
            }
            tuned = {name: t.outputs["best"] for name, t in tune.items()}

            tt, als, i2i = {}, {}, {}
            for window, stage in (("train", "stage1"), ("trainval", "final")):
                if opts.tt_workers > 1:  # past one node: a PyTorchJob on the GPU pool, waited on here
                    tt[window] = _cpu_step(c.train_two_tower_ddp(
                        dataset=ds_tt.outputs["dataset"], tuned=tuned["two_tower"], use_case=uc, window=window,
                        epochs=tt_epochs, batch_size=tt_batch_size, device=device, seed=seed, **_job_args(opts)),
                        opts, f"train-two-tower-{stage}")
                else:
                    # the final refit trains for the stage-1 best epoch (scaled), not tt_epochs blind
                    refit_of = {"stage1": tt["train"].outputs["model"]} if window == "trainval" else {}
                    tt[window] = _gpu_step(c.train_two_tower(
                        dataset=ds_tt.outputs["dataset"], tuned=tuned["two_tower"], use_case=uc, window=window,
                        epochs=tt_epochs, batch_size=tt_batch_size, device=device, seed=seed, **refit_of),
                        opts, f"train-two-tower-{stage}")
                als[window] = _cpu_step(c.train_als(  # the report plots the final ALS's loss curve
                    dataset=ds_als[window].outputs["dataset"], tuned=tuned["als"], use_case=uc,
                    track_loss=window == "trainval"),
                    opts, f"train-als-{stage}")
                i2i[window] = _cpu_step(c.train_item2item(
                    dataset=ds_als[window].outputs["dataset"], tuned=tuned["item2item"], use_case=uc,
                    memory_gb=i2i_memory_gb),
                    opts, f"train-item2item-{stage}")

            rk = _cpu_step(c.train_ranker(
                dataset=ds_rk.outputs["dataset"], two_tower=tt["train"].outputs["model"],
                als=als["train"].outputs["model"], item2item=i2i["train"].outputs["model"], snapshot=snapshot,
                tuned_two_tower=tuned["two_tower"], tuned_als=tuned["als"], tuned_item2item=tuned["item2item"],
                use_case=uc, epochs=ranker_epochs, batch_size=ranker_batch_size, lr=ranker_lr,
                windows=ranker_windows, tt_epochs=tt_epochs, tt_batch_size=tt_batch_size, device=device, seed=seed,
                min_interactions=min_interactions, memory_gb=i2i_memory_gb, neg_ratio=neg_ratio,
                propensity_clip=propensity_clip, **split),
                opts, "train-ranker")

            ev = _cpu_step(c.evaluate(
                snapshot=snapshot, two_tower=tt["trainval"].outputs["model"], als=als["trainval"].outputs["model"],
                item2item=i2i["trainval"].outputs["model"], stage1=rk.outputs["model"],
                tuned_two_tower=tuned["two_tower"], tuned_als=tuned["als"], tuned_item2item=tuned["item2item"],
                use_case=uc, k=eval_k, oracle_uri=oracle_uri, **split), opts, "evaluate")

            decision = _cpu_step(c.gate(evaluation=ev.outputs["evaluation"], models_uri=models_uri, use_case=uc,
                                        margin=gate_margin), opts, "gate", cache=False)
            with dsl.If(decision.output == "publish", name="gate-passed"):
                # what is published: every model refit on all events up to the watermark with the
                # choices validation made; the evaluation of record stays ev's (test window)
                fresh = _gpu_step(c.refit(
                    snapshot=snapshot, models=ev.outputs["models"], two_tower_dataset=ds_tt.outputs["dataset"],
                    two_tower_stage1=tt["train"].outputs["model"], tuned_two_tower=tuned["two_tower"],
                    tuned_als=tuned["als"], tuned_item2item=tuned["item2item"], use_case=uc, epochs=tt_epochs,
                    batch_size=tt_batch_size, device=device, seed=seed, min_interactions=min_interactions,
                    memory_gb=i2i_memory_gb, ranker_epochs=ranker_epochs, ranker_batch_size=ranker_batch_size,
                    ranker_lr=ranker_lr, ranker_windows=ranker_windows, neg_ratio=neg_ratio,
                    propensity_clip=propensity_clip, ranker_dataset=ds_rk.outputs["dataset"],
                    stage1_models=rk.outputs["model"], **split),
                    opts, "refit")
                pub = _cpu_step(c.publish(models=fresh.outputs["refitted"], evaluation=ev.outputs["evaluation"],
                                    snapshot=snapshot, models_uri=models_uri, use_case=uc, margin=gate_margin,
                                    tuned_two_tower=tuned["two_tower"],
                                    two_tower_dataset_uri=ds_tt.outputs["Output"]),
                          opts, "publish", cache=False)

        # After every use case: the reverse ones' reciprocal scorers, fitted with their forward
        # twins (both directions' stage-1 models on validation, final ones on test), added to the
        # bundles this run published (startup_recs.pipeline.reciprocal_steps).
        rc = _cpu_step(c.reciprocal(
            snapshot=snapshot, models=dsl.Collected(ev.outputs["models"]), stage1=dsl.Collected(rk.outputs["model"]),
            evaluations=dsl.Collected(ev.outputs["evaluation"]), k=eval_k, **split), opts, "reciprocal")
        _cpu_step(c.publish_reciprocal(evaluation=rc.outputs["evaluation"], models_uri=models_uri, margin=gate_margin),
                  opts, "publish-reciprocal", cache=False).after(pub)  # after every use case's publish
        # Every use case's evaluation folder (<use_case>/evaluation/: metrics.json, report.md):
        # run-local copies them out.
        return rc.outputs["evaluation"]

    return reverse_recommendation_training


reverse_recommendation_training = build_pipeline()


def compile_pipeline(path: str, opts: CompileOptions | None = None) -> str:
    """Write the IR YAML that a user uploads in the Kubeflow UI; returns ``path``."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(opts), package_path=path)
    return path
