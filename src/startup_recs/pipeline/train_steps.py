"""Trainer steps: two-tower, ALS, item-to-item (each on one fit window) and the ranker (stage 1).

Every hyperparameter left ``None`` takes its trainer config's default (``TwoTowerConfig``,
``ALSConfig``, ``Item2ItemConfig``, ``RankerTrainConfig``): the dataclasses are the one place
defaults are written. A tuning step's ``best_params.json`` (``params_dir``) replaces the values;
a tuned key the trainer does not take raises :class:`~startup_recs.core.errors.ConfigError`.
"""

from __future__ import annotations

import logging
from typing import Any

from startup_recs.core import artifacts, storage
from startup_recs.core.usecases import get_use_case
from startup_recs.pipeline.folders import (
    copy_files,
    dir_digest,
    find_one,
    fresh_dir,
    provenance,
    scalars,
    time_split,
)
from startup_recs.pipeline.step import step
from startup_recs.pipeline.tune_steps import tuned_params

log = logging.getLogger(__name__)

# TwoTowerConfig fields the step sets itself; tuned values may set every other field.
TWO_TOWER_RUN_SETTINGS = ("use_case", "fit_on", "device", "progress")
# What the ALS and item-to-item steps hand on to their trainers (tuned values may set these).
ALS_TUNABLE = ("factors", "iterations", "regularization", "alpha", "weighting", "seed")
ITEM2ITEM_TUNABLE = ("method", "lam", "neighbours", "binary")


def _given(**values: Any) -> dict[str, Any]:
    """The arguments that were given (``None`` = the trainer config's default)."""
    return {k: v for k, v in values.items() if v is not None}


@step("train-two-tower")
def train_two_tower(dataset_dir: str, use_case: str, out_dir: str, *, window: str | None = None,
                    epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
                    embedding_dim: int | None = None, device: str | None = None, seed: int | None = None,
                    params_dir: str | None = None, stage1_dir: str | None = None) -> dict[str, Any]:
    """Fit on ``window`` (train = stage 1, trainval = final, all = the published refit); CUDA
    when present, else CPU. ``params_dir``: a tuning step's output; its chosen values replace the
    arguments. ``stage1_dir`` (a refit): the stage-1 model folder; the refit trains for its best
    epoch scaled to this window (:func:`startup_recs.train.two_tower.refit_epochs`, at most
    ``epochs``) instead of ``epochs`` blind."""
    from dataclasses import fields

    from startup_recs.train import two_tower as tt
    from startup_recs.train.params import from_params

    uc = get_use_case(use_case)
    data = find_one(storage.local(dataset_dir), artifacts.two_tower_dataset(uc))
    tuned = tuned_params(params_dir)
    tunable = {f.name for f in fields(tt.TwoTowerConfig)} - set(TWO_TOWER_RUN_SETTINGS)
    cfg = from_params(tt.TwoTowerConfig, tuned, tunable=tunable, use_case=use_case, progress=False,
                      **_given(fit_on=window, device=device, epochs=epochs, batch_size=batch_size, lr=lr,
                               embedding_dim=embedding_dim, seed=seed))
    refit: dict[str, Any] = {}
    if stage1_dir and cfg.fit_on != "train":
        best = tt.best_epoch_of(stage1_dir, uc.name)
        before, now = tt.stage1_positives(stage1_dir, uc.name), tt.fit_positives(str(data), cfg.fit_on)
        cfg.epochs = tt.refit_epochs(best, before, now, max_epochs=cfg.epochs)
        refit = {"stage1_best_epoch": best, "stage1_positives": before, "refit_positives": now,
                 "refit_epochs": cfg.epochs}
        log.info("two-tower %s refit on %s: stage-1 best epoch %d on %d positives -> %d epochs on %d positives",
                 use_case, cfg.fit_on, best, before, cfg.epochs, now)
    out = fresh_dir(out_dir)
    log.info("two-tower %s on %s: %s", use_case, cfg.fit_on,
             {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "embedding_dim", "seed", *tuned)})
    info = tt.train(cfg, str(data), str(out)) or {}
    return provenance(None, use_case, window=cfg.fit_on, model_version=dir_digest(out), **refit,
                      **_model_summary(info))


@step("train-als")
def train_als(dataset_dir: str, use_case: str, out_dir: str, *, factors: int | None = None,
              iterations: int | None = None, regularization: float | None = None, alpha: float | None = None,
              weighting: str | None = None, params_dir: str | None = None,
              track_loss: bool | None = None) -> dict[str, Any]:
    """ALS on the dataset's matrix (its fit window decides the stage); ``params_dir``: a tuning
    step's output, whose chosen values replace the arguments. ``track_loss``: record the loss
    per iteration (the report's training curve of the final models reads it)."""
    from startup_recs.datasets.als import als_names
    from startup_recs.train import als
    from startup_recs.train.params import from_params

    uc = get_use_case(use_case)
    d = storage.local(dataset_dir)
    names = als_names(uc.suffix)
    cfg = from_params(als.ALSConfig, tuned_params(params_dir), tunable=ALS_TUNABLE,
                      **_given(factors=factors, iterations=iterations, regularization=regularization, alpha=alpha,
                               weighting=weighting))
    out = fresh_dir(out_dir)
    kwargs = {k: getattr(cfg, k) for k in ALS_TUNABLE}
    log.info("ALS %s: %s", use_case, kwargs)
    info = als.train_als(str(d / names["matrix"]), str(d / names["user_mapping"]), str(d / names["item_mapping"]),
                         uc.name, str(out), track_loss=track_loss, **kwargs) or {}
    return provenance(None, use_case, model_version=dir_digest(out), rows=info.get("interactions"),
                      **{k: v for k, v in info.items() if k != "interactions"})


@step("train-item2item")
def train_item2item(dataset_dir: str, use_case: str, out_dir: str, *, method: str | None = None,
                    lam: float | None = None, neighbours: int | None = None, memory_gb: float | None = None,
                    params_dir: str | None = None) -> dict[str, Any]:
    """Item-to-item retriever (EASE, or item-kNN past EASE's memory limit, set by ``memory_gb``)
    on the ALS dataset's matrix of one fit window; ``params_dir`` as for :func:`train_als`."""
    from startup_recs.datasets.als import als_names
    from startup_recs.train import item2item
    from startup_recs.train.params import from_params

    uc = get_use_case(use_case)
    d = storage.local(dataset_dir)
    names = als_names(uc.suffix)
    settings = _given(method=method, lam=lam, neighbours=neighbours)
    if memory_gb is not None:
        settings["memory_budget"] = int(memory_gb * 1024**3)
    cfg = from_params(item2item.Item2ItemConfig, tuned_params(params_dir), tunable=ITEM2ITEM_TUNABLE,
                      use_case=uc.name, **settings)
    out = fresh_dir(out_dir)
    kwargs = {"method": cfg.method, "lam": cfg.lam, "neighbours": cfg.neighbours}
    if kwargs["method"] == "ease":  # as in the tuning objective: EASE where it fits, BM25 item-kNN past that
        kwargs["method"] = "auto"
    log.info("item2item %s: %s", use_case, kwargs)
    info = item2item.train_item2item(str(d / names["matrix"]), str(d / names["user_mapping"]),
                                     str(d / names["item_mapping"]), uc.name, str(out),
                                     binary=cfg.binary, memory_budget=cfg.memory_budget, **kwargs) or {}
    return provenance(None, use_case, model_version=dir_digest(out), **info)


@step("train-ranker")
def train_ranker(dataset_dir: str, two_tower_dir: str, als_dir: str, snapshot: str, use_case: str, out_dir: str,
                 *, epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
                 split_at: str = "", test_days: float = 14.0, val_days: float = 14.0,
                 item2item_dir: str | None = None, windows: int | None = None,
                 window_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stage-1 folder: stage-1 retrievers (train window) side by side, their serving data
    (``serving/``, fit until the validation start), and the ranker trained among them on the
    validation pairs. It is evaluate's ``val_models``.

    ``windows > 1``: the ranker also learns from the ``windows - 1`` validation-length windows
    before the validation window, each scored by stage-1 retrievers fit again before it
    (:func:`startup_recs.pipeline.ranker_windows.earlier_windows`, with ``window_options``: the
    tuning outputs and the two-tower / item-to-item / ranker-dataset settings of stage 1), kept in
    ``out_dir/windows/`` for the published refit."""
    from startup_recs.pipeline.ranker_windows import WINDOWS_DIR, earlier_windows
    from startup_recs.serving.data import ServingData
    from startup_recs.train import ranker

    uc = get_use_case(use_case)
    cfg = ranker.RankerTrainConfig(use_case=uc.name, **_given(epochs=epochs, batch_size=batch_size, lr=lr,
                                                              windows=windows))
    data = find_one(storage.local(dataset_dir), artifacts.ranker_dataset(uc))
    out = fresh_dir(out_dir)
    for src in (two_tower_dir, als_dir, item2item_dir):
        if src:
            copy_files(src, out)
    split = time_split(snapshot, use_case, split_at, test_days, val_days)
    ServingData.from_snapshot(snapshot, use_case, split.val_start).save(str(out / artifacts.SERVING_DIR))
    extra = earlier_windows(snapshot, uc.name, split, cfg.windows - 1, out / WINDOWS_DIR, **(window_options or {}))
    info = ranker.train(cfg, str(data), str(out), str(out), extra_windows=extra) or {}
    metrics = (info.get("train") or {}).get("metrics") or {}
    return provenance(snapshot, use_case, model_version=dir_digest(out), val_start=split.val_start.isoformat(),
                      windows=cfg.windows, **{k: v for k, v in metrics.items() if isinstance(v, int | float)})


def _model_summary(info: dict[str, Any]) -> dict[str, Any]:
    """The scalar facts of a trainer's config JSON worth showing as artifact metadata."""
    flat = scalars({k: v for k, v in (info or {}).items() if k not in ("history",)})
    keep = ("best", "metric", "ndcg", "recall", "loss", "epoch", "n_", "nnz", "fit_seconds", "device",
            "diagnostics.", "factors", "embedding_dim")
    return {k: v for k, v in flat.items() if any(t in k for t in keep)}
