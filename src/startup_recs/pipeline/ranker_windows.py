"""Earlier validation windows for the ranker: more lists, each scored by retrievers fit before it.

What: with a split whose validation window is ``[val_start, split_at)`` (length ``L``), earlier
window ``j`` (``j = 1..n``) is ``[val_start - j L, val_start - (j - 1) L)``.
:func:`earlier_windows` fits the stage-1 retrievers again for each one, with the tuned values and
the stage-1 epochs, on the events before that window:

- the two-tower (its dataset's ``train`` split of the shifted split);
- ALS and item-to-item (the ALS matrix of that ``train`` window);
- their ``serving/`` data up to the window's start;
- the window's ranker dataset (its sessions are the shifted split's ``val`` rows).

It returns ``(ranker dataset file, retrievers folder)`` per window for
:func:`startup_recs.train.ranker.train` (``extra_windows``), which leak-checks every folder
against its own window, as it does the first. The train-ranker step keeps them in its folder
(``windows/window-<j>/{models,ranker_data}``, :data:`WINDOWS_DIR`), and the published refit reads
the ones it needs back with :func:`window_folders` instead of fitting them again.

Why: one window gives the ranker one list per entity active in it (about 2,000 at demo size).
The pipeline's ``ranker_windows`` parameter (default 1: off) adds windows. The cost is one more set
of stage-1 fits per window. Measured on the demo at seed 0 (README, "What limits the ranker"): a
second window lifts the developer ranker's holdout and leaves the investor's unchanged.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from startup_recs.core import artifacts
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.core.usecases import get_use_case
from startup_recs.pipeline import data_steps, train_steps
from startup_recs.pipeline.folders import copy_files, find_one

log = logging.getLogger(__name__)

WINDOWS_DIR = "windows"  # the earlier windows, under the train-ranker step's folder


def window_bounds(split: Any, j: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``(start, end)`` of earlier window ``j >= 1`` of ``split`` (``TimeSplit``): the validation
    window's length, ``j`` lengths before the validation window."""
    if j < 1:
        raise ConfigError(f"an earlier window is numbered from 1, not {j}")
    length = split.split_at - split.val_start
    if length <= pd.Timedelta(0):
        raise ConfigError("earlier ranker windows need a validation window (--val-days > 0)")
    end = split.val_start - (j - 1) * length
    return end - length, end


def earlier_windows(snapshot: str, use_case: str, split: Any, n: int, work: str | Path, *,
                    tuned_two_tower: str | None = None, tuned_als: str | None = None,
                    tuned_item2item: str | None = None, epochs: int | None = None, batch_size: int | None = None,
                    device: str | None = None, seed: int = 0, min_interactions: int = 1,
                    i2i_memory_gb: float | None = None, neg_ratio: float = 2.0,
                    propensity_clip: float = 0.05) -> list[tuple[str, str]]:
    """Fit ``n`` earlier windows' stage-1 folders under ``work`` (see the module docstring).

    Returns ``[(ranker dataset file, retrievers folder)]``, the most recent window first. Each
    folder holds the three retrievers and ``serving/``, all fit before the window starts.
    """
    from startup_recs.serving.data import ServingData

    uc = get_use_case(use_case)
    for j in range(1, n + 1):
        start, end = window_bounds(split, j)
        w = _window_dir(work, j)
        shifted = {"split_at": end.isoformat(), "val_days": (end - start) / pd.Timedelta(days=1)}
        log.info("ranker window %d: [%s, %s), retrievers fit before %s", j, start, end, start)
        data_steps.dataset_two_tower(snapshot, uc.name, str(w / "two_tower_data"), min_interactions=min_interactions,
                                     seed=seed, **shifted)
        train_steps.train_two_tower(str(w / "two_tower_data"), uc.name, str(w / "two_tower"), window="train",
                                    epochs=epochs, batch_size=batch_size, device=device, seed=seed,
                                    params_dir=tuned_two_tower)
        data_steps.dataset_als(snapshot, uc.name, str(w / "als_data"), fit_window="train",
                               min_interactions=min_interactions, **shifted)
        train_steps.train_als(str(w / "als_data"), uc.name, str(w / "als"), params_dir=tuned_als)
        train_steps.train_item2item(str(w / "als_data"), uc.name, str(w / "item2item"), memory_gb=i2i_memory_gb,
                                    params_dir=tuned_item2item)
        data_steps.dataset_ranker(snapshot, uc.name, str(w / "ranker_data"), neg_ratio=neg_ratio,
                                  propensity_clip=propensity_clip, seed=seed, **shifted)
        models = w / "models"
        models.mkdir(parents=True, exist_ok=True)
        for name in ("two_tower", "als", "item2item"):
            copy_files(w / name, models)
        ServingData.from_snapshot(snapshot, uc.name, start).save(str(models / artifacts.SERVING_DIR))
        for name in ("two_tower_data", "als_data", "two_tower", "als", "item2item"):  # kept: models, ranker_data
            shutil.rmtree(w / name)
    return window_folders(work, n, uc.name)


def window_folders(work: str | Path, n: int, use_case: str) -> list[tuple[str, str]]:
    """``[(ranker dataset file, retrievers folder)]`` of windows ``1..n`` that
    :func:`earlier_windows` fit under ``work``, the most recent first; a missing one is a
    :class:`DataError` naming it."""
    pattern = artifacts.ranker_dataset(get_use_case(use_case))
    out = []
    for j in range(1, n + 1):
        w = _window_dir(work, j)
        if not (w / "models").is_dir():
            raise DataError(f"{work}: no earlier ranker window {j}: the train-ranker step fit fewer windows "
                            f"than this step needs ({n + 1} or more)")
        out.append((str(find_one(w / "ranker_data", pattern)), str(w / "models")))
    return out


def _window_dir(work: str | Path, j: int) -> Path:
    return Path(work) / f"window-{j}"


__all__ = ["WINDOWS_DIR", "earlier_windows", "window_bounds", "window_folders"]
