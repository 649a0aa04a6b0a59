"""The publish path's refit: once the gate passes, every model is fit again on *all* events up to the
data watermark, with the choices validation made, and that folder is what gets published.

Why: the evaluated models (docs/contracts.md "Fitting windows") stop at ``split_at``, so the
freshest ``test_days`` of data would never reach the served retrievers, ranker or ``serving/``
data (interaction counts, already-contacted pairs). The evaluation of record stays the
test-window one of the evaluated models: the refit has no held-out window left to be scored on.
The manifest records both (``metrics`` of the evaluated models, ``fit_until`` of the served ones).

What is refit, with which choices (nothing is chosen again):

- two-tower on every pair of its dataset (``fit_on="all"``), the tuned hyperparameters, for the
  stage-1 best epoch scaled to the larger window
  (:func:`startup_recs.train.two_tower.refit_epochs`);
- ALS and item-to-item on the ALS matrix of every event (``fit_window="all"``), tuned values;
- the ranker on the window after ``split_at`` (the evaluation's test window: the freshest
  labelled sessions) with features from the *evaluated* retrievers, which were fit until
  ``split_at`` and never saw those labels: stage 1 one window later
  (:meth:`startup_recs.data.split.TimeSplit.shifted`), re-ranking the routing chosen on validation,
  with the learner (LightGBM or MLP) the stage-1 ranker chose on its holdout;
- ``serving/`` from every event (``until=None``); ``routing.json`` copied from the evaluated folder.

The output folder has the evaluated folder's layout plus ``refit.json``
(:data:`startup_recs.core.artifacts.REFIT`): ``{"fit_until": watermark, "evaluated": {...},
"two_tower": {...}, "als": {...}, "item2item": {...}, "ranker": {...}}``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import ConfigError
from startup_recs.core.usecases import get_use_case
from startup_recs.pipeline import data_steps, train_steps
from startup_recs.pipeline.folders import (
    copy_files,
    dir_digest,
    find_one,
    fresh_dir,
    provenance,
    time_split,
    watermark_of,
)
from startup_recs.pipeline.ranker_windows import WINDOWS_DIR, window_folders
from startup_recs.pipeline.step import step

log = logging.getLogger(__name__)


@step("refit")
def refit(snapshot: str, models_dir: str, two_tower_dataset_dir: str, stage1_dir: str, use_case: str,
          out_dir: str, *, tuned_two_tower: str | None = None, tuned_als: str | None = None,
          tuned_item2item: str | None = None, epochs: int | None = None, batch_size: int | None = None,
          device: str | None = None, seed: int = 0, min_interactions: int = 1, i2i_memory_gb: float | None = None,
          ranker_epochs: int | None = None, ranker_batch_size: int | None = None, ranker_lr: float | None = None,
          neg_ratio: float = 2.0, propensity_clip: float = 0.05, split_at: str = "", test_days: float = 14.0,
          val_days: float = 14.0, ranker_windows: int | None = None, ranker_dataset_dir: str | None = None,
          stage1_models_dir: str | None = None) -> dict[str, Any]:
    """Refit ``models_dir`` (evaluate's servable folder) on every event of ``snapshot`` into
    ``out_dir`` (see the module docstring). ``stage1_dir``: the stage-1 two-tower model (its best
    epoch); ``tuned_*``: the tuning steps' outputs; ``epochs``: the two-tower's cap. Returns the
    step's provenance (``fit_until``, the two-tower epochs, ranker holdout NDCG, version).

    ``ranker_windows > 1``: after the test window, the ranker also learns from the validation window
    (``ranker_dataset_dir`` scored by ``stage1_models_dir``, the train-ranker step's folder) and from
    the ``ranker_windows - 2`` windows before it that the train-ranker step fit and kept there."""
    from startup_recs.train.ranker import RankerTrainConfig

    uc = get_use_case(use_case)
    # the config holds the default and refuses a bad count, before any fit
    windows = RankerTrainConfig(use_case=uc.name, **({} if ranker_windows is None else
                                                     {"windows": int(ranker_windows)})).windows
    extra: list[tuple[str, str]] = []  # the earlier windows' (lists, retrievers), found before any fit
    if windows > 1:
        if not ranker_dataset_dir or not stage1_models_dir:
            raise ConfigError("ranker_windows > 1: the refit needs the ranker dataset and the stage-1 folder")
        extra.append((str(find_one(Path(ranker_dataset_dir), artifacts.ranker_dataset(uc))), stage1_models_dir))
        extra += window_folders(Path(stage1_models_dir) / WINDOWS_DIR, windows - 2, uc.name)
    out = fresh_dir(out_dir)
    split = time_split(snapshot, use_case, split_at, test_days, val_days)
    watermark = watermark_of(snapshot)
    record: dict[str, Any] = {
        "fit_until": watermark,
        "evaluated": {"fit_until": split.split_at.isoformat(), "scored_on": [split.split_at.isoformat(), watermark],
                      "note": "metrics.json scores the models fit until split_at on the test window; "
                              "the published models are refit on every event until fit_until with the same choices"},
    }
    with tempfile.TemporaryDirectory(prefix="recs-refit-") as tmp:
        work = Path(tmp)
        record["two_tower"] = train_steps.train_two_tower(
            two_tower_dataset_dir, use_case, str(work / "two_tower"), window="all", epochs=epochs,
            batch_size=batch_size, device=device, seed=seed, params_dir=tuned_two_tower, stage1_dir=stage1_dir)
        data_steps.dataset_als(snapshot, use_case, str(work / "als_data"), fit_window="all",
                               min_interactions=min_interactions, split_at=split_at, test_days=test_days,
                               val_days=val_days)
        record["als"] = train_steps.train_als(str(work / "als_data"), use_case, str(work / "als"), params_dir=tuned_als)
        record["item2item"] = train_steps.train_item2item(str(work / "als_data"), use_case, str(work / "item2item"),
                                                          memory_gb=i2i_memory_gb, params_dir=tuned_item2item)
        record["ranker"] = _ranker(snapshot, models_dir, use_case, work, split, seed=seed, neg_ratio=neg_ratio,
                                   propensity_clip=propensity_clip, epochs=ranker_epochs,
                                   batch_size=ranker_batch_size, lr=ranker_lr, extra_windows=extra)
        for name in ("two_tower", "als", "item2item", "ranker"):
            copy_files(work / name, out)
    routing = Path(models_dir) / artifacts.ROUTING
    if routing.is_file():
        shutil.copy2(routing, out / artifacts.ROUTING)
    from startup_recs.serving.data import ServingData

    ServingData.from_snapshot(snapshot, uc.name, until=None).save(str(out / artifacts.SERVING_DIR))
    storage.write_json(str(out / artifacts.REFIT), record)
    log.info("refit %s on every event until %s (evaluated models: until %s); two-tower %s epochs", use_case,
             watermark, split.split_at.isoformat(), record["two_tower"].get("refit_epochs"))
    return provenance(snapshot, use_case, fit_until=watermark, evaluated_fit_until=split.split_at.isoformat(),
                      tt_refit_epochs=record["two_tower"].get("refit_epochs"),
                      ranker_holdout_ndcg=record["ranker"].get("holdout_ndcg@10"), model_version=dir_digest(out))


def _ranker(snapshot: str, models_dir: str, use_case: str, work: Path, split: Any, *, seed: int, neg_ratio: float,
            propensity_clip: float, epochs: int | None, batch_size: int | None, lr: float | None,
            extra_windows: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The ranker learnt on the window after ``split_at`` with the evaluated retrievers' features
    (``models_dir``: fit until ``split_at``, ``serving/`` until then), into ``work/ranker``;
    ``extra_windows`` as for :func:`startup_recs.train.ranker.train`."""
    from startup_recs.data.snapshot import load_snapshot
    from startup_recs.datasets.ranker import build_ranker
    from startup_recs.train import ranker

    uc = get_use_case(use_case)
    shifted = split.shifted(load_snapshot(snapshot).events(uc.name)["ts"].max())
    data = work / "ranker_data" / artifacts.ranker_dataset(uc)
    build_ranker(snapshot, uc.name, str(data), neg_ratio=neg_ratio, propensity_clip=propensity_clip, seed=seed,
                 split=shifted)
    given = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr}.items() if v is not None}
    given["windows"] = 1 + len(extra_windows or ())
    learner = _stage1_learner(models_dir, uc.name)
    if learner:  # a choice validation made: not fitted (and compared) again
        given["learner"] = learner
    cfg = ranker.RankerTrainConfig(use_case=uc.name, seed=seed, **given)
    (work / "ranker").mkdir()
    config = ranker.train(cfg, str(data), models_dir, str(work / "ranker"), snapshot=snapshot,
                          extra_windows=extra_windows or ())
    metrics = (config.get("train") or {}).get("metrics") or {}
    return {"val_start": shifted.val_start.isoformat(), "until": shifted.split_at.isoformat(),
            "features_fit_until": (config.get("train") or {}).get("features_fit_until"),
            **{k: v for k, v in metrics.items() if isinstance(v, int | float)}}


def _stage1_learner(models_dir: str, use_case: str) -> str | None:
    """The learner of the ranker in the evaluated folder (``lightgbm`` | ``mlp``), if it has one."""
    from startup_recs.models.ranker import load_config

    uc = get_use_case(use_case)
    has = storage.exists(storage.join(models_dir, artifacts.ranker_files(uc).config))
    return load_config(models_dir, uc.name).learner if has else None


__all__ = ["refit"]
