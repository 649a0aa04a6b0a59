"""The ranker learns from earlier validation windows too (``ranker_windows``), each scored by
stage-1 retrievers fit again before it: the pipeline's own steps on the tiny marketplace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from startup_recs.core.errors import ConfigError, DataError
from startup_recs.data.split import TimeSplit
from startup_recs.pipeline import data_steps, train_steps
from startup_recs.pipeline.ranker_windows import window_bounds
from startup_recs.train.ranker_lists import ListData

UC = "startup_developer"
TT = {"epochs": 1, "batch_size": 256}


@pytest.fixture(scope="module")
def stage1(tiny_snapshot: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = tmp_path_factory.mktemp("ranker_windows")
    data_steps.dataset_two_tower(tiny_snapshot, UC, str(w / "tt_data"))
    train_steps.train_two_tower(str(w / "tt_data"), UC, str(w / "tt"), window="train", **TT)
    data_steps.dataset_als(tiny_snapshot, UC, str(w / "als_data"), fit_window="train")
    train_steps.train_als(str(w / "als_data"), UC, str(w / "als"), factors=16, iterations=5)
    train_steps.train_item2item(str(w / "als_data"), UC, str(w / "i2i"))
    data_steps.dataset_ranker(tiny_snapshot, UC, str(w / "rk"))
    return w


def _train(w: Path, snapshot: str, out: str, windows: int) -> dict:
    train_steps.train_ranker(str(w / "rk"), str(w / "tt"), str(w / "als"), snapshot, UC, str(w / out), epochs=3,
                             item2item_dir=str(w / "i2i"), windows=windows, window_options=dict(TT))
    return json.loads(next((w / out).glob("ranker_*_config.json")).read_text())


def test_a_second_window_adds_lists_scored_by_retrievers_fit_before_it(stage1: Path, tiny_snapshot: str) -> None:
    one = _train(stage1, tiny_snapshot, "one", 1)
    two = _train(stage1, tiny_snapshot, "two", 2)
    assert one["train"]["windows"] == 1 and "window_lists" not in one["train"]
    assert two["train"]["windows"] == 2
    windows = two["train"]["window_lists"]
    assert len(windows) == 2 and all(w["lists"] > 0 for w in windows)
    first, second = (pd.Timestamp(w["val_start"]) for w in windows)
    assert first == pd.Timestamp(one["train"]["val_start"])
    assert first - second == pd.Timedelta(days=14)  # the validation window's length, just before it
    for w in windows:  # no leak: each window's features stop where its labels begin
        assert pd.Timestamp(w["features_fit_until"]) <= pd.Timestamp(w["val_start"])
    lists = lambda c: c["train"]["metrics"]["train_lists"] + c["train"]["metrics"]["holdout_lists"]  # noqa: E731
    assert lists(two) > lists(one)
    assert two["features"] == one["features"]  # the same columns: serving is unchanged


def test_window_count_below_one_is_refused(stage1: Path, tiny_snapshot: str) -> None:
    with pytest.raises(ConfigError, match="ranker_windows must be >= 1"):
        _train(stage1, tiny_snapshot, "zero", 0)
    from startup_recs.pipeline.refit_steps import refit

    with pytest.raises(ConfigError, match="ranker_windows must be >= 1"):
        refit(tiny_snapshot, str(stage1 / "one"), str(stage1 / "tt_data"), str(stage1 / "tt"), UC,
              str(stage1 / "refit"), ranker_windows=0)


def test_window_bounds() -> None:
    split = TimeSplit(val_start=pd.Timestamp("2026-06-15", tz="UTC"), split_at=pd.Timestamp("2026-06-29", tz="UTC"))
    assert window_bounds(split, 1) == (pd.Timestamp("2026-06-01", tz="UTC"), pd.Timestamp("2026-06-15", tz="UTC"))
    assert window_bounds(split, 2) == (pd.Timestamp("2026-05-18", tz="UTC"), pd.Timestamp("2026-06-01", tz="UTC"))
    with pytest.raises(ConfigError):
        window_bounds(split, 0)
    with pytest.raises(ConfigError, match="validation window"):
        window_bounds(TimeSplit(val_start=split.split_at, split_at=split.split_at), 1)


def _lists(names: list[str], sizes: list[int], entities: list[str], fill: float) -> ListData:
    n = sum(sizes)
    return ListData(np.full((n, len(names)), fill, np.float32), np.arange(n, dtype=np.float32), np.ones(n, np.float32),
                    np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), np.array(entities), names,
                    np.arange(n), 3.0)


def test_concat_keeps_each_list_whole() -> None:
    a = _lists(["f", "g"], [2, 3], ["s1", "s2"], 1.0)
    b = _lists(["f", "g"], [1, 2], ["s1", "s3"], 2.0)
    c = a.concat(b)
    assert c.n_lists == 4 and c.offsets.tolist() == [0, 2, 5, 6, 8]
    assert c.entity.tolist() == ["s1", "s2", "s1", "s3"]
    assert c.X[5:].tolist() == [[2.0, 2.0]] * 3 and c.y[5:].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(DataError, match="different features"):
        a.concat(_lists(["f"], [1], ["s4"], 0.0))


def test_the_refit_ranker_learns_from_the_test_and_the_validation_window(stage1: Path, tiny_snapshot: str) -> None:
    """The published refit: the test window with the evaluated retrievers (here a folder fit until
    the validation start, which the leak check also accepts), then the validation window with the
    train-ranker step's folder."""
    from startup_recs.pipeline.refit_steps import refit

    one = _train(stage1, tiny_snapshot, "evaluated", 1)
    refit(tiny_snapshot, str(stage1 / "evaluated"), str(stage1 / "tt_data"), str(stage1 / "tt"), UC,
          str(stage1 / "refit2"), ranker_windows=2, ranker_dataset_dir=str(stage1 / "rk"),
          stage1_models_dir=str(stage1 / "evaluated"), **TT)
    config = json.loads(next((stage1 / "refit2").glob("ranker_*_config.json")).read_text())["train"]
    assert config["windows"] == 2
    test_window, val_window = config["window_lists"]
    val_start = pd.Timestamp(one["train"]["val_start"])
    assert pd.Timestamp(val_window["val_start"]) == val_start
    assert pd.Timestamp(test_window["val_start"]) == val_start + pd.Timedelta(days=14)  # split_at
    for w in (test_window, val_window):
        assert w["lists"] > 0 and pd.Timestamp(w["features_fit_until"]) <= pd.Timestamp(w["val_start"])


def test_an_earlier_window_scored_by_a_folder_that_saw_it_is_refused(stage1: Path, tiny_snapshot: str) -> None:
    """Each window is leak-checked against its own start, as the first one is."""
    import shutil

    from startup_recs.pipeline.folders import time_split
    from startup_recs.serving.data import ServingData
    from startup_recs.train import ranker

    one = _train(stage1, tiny_snapshot, "checked", 1)
    leaky = stage1 / "leaky"
    shutil.copytree(stage1 / "checked", leaky, dirs_exist_ok=True)
    shutil.rmtree(leaky / "serving")
    ServingData.from_snapshot(tiny_snapshot, UC, time_split(tiny_snapshot, UC).split_at).save(str(leaky / "serving"))
    data = next((stage1 / "rk").glob("ranker_*.parquet"))
    cfg = ranker.RankerTrainConfig(use_case=UC, epochs=2, windows=2)
    with pytest.raises(DataError, match="would leak"):
        ranker.train(cfg, str(data), str(stage1 / "checked"), str(stage1 / "leak_out"),
                     extra_windows=[(str(data), str(leaky))])
    assert one["train"]["windows"] == 1
    with pytest.raises(ConfigError, match="2 windows configured, 1 given"):
        ranker.train(cfg, str(data), str(stage1 / "checked"), str(stage1 / "leak_out"))


def test_the_refit_reads_the_earlier_windows_the_train_ranker_step_kept(stage1: Path, tiny_snapshot: str) -> None:
    """With three windows the refit's third one is the train-ranker step's first earlier window,
    read back from its folder (the same lists, not a fit of its own); a folder that kept fewer
    windows than the refit needs is refused, naming the missing one."""
    from startup_recs.pipeline.ranker_windows import WINDOWS_DIR
    from startup_recs.pipeline.refit_steps import refit

    three = _train(stage1, tiny_snapshot, "three", 3)
    kept = sorted(p.name for p in (stage1 / "three" / WINDOWS_DIR).iterdir())
    assert kept == ["window-1", "window-2"]
    assert sorted(p.name for p in (stage1 / "three" / WINDOWS_DIR / "window-1").iterdir()) == ["models", "ranker_data"]
    refit(tiny_snapshot, str(stage1 / "three"), str(stage1 / "tt_data"), str(stage1 / "tt"), UC,
          str(stage1 / "refit3"), ranker_windows=3, ranker_dataset_dir=str(stage1 / "rk"),
          stage1_models_dir=str(stage1 / "three"), **TT)
    refit_windows = json.loads(next((stage1 / "refit3").glob("ranker_*_config.json")).read_text())["train"]["window_lists"]
    assert len(refit_windows) == 3
    assert refit_windows[2] == three["train"]["window_lists"][1]  # the same window, the same lists
    _train(stage1, tiny_snapshot, "kept_none", 1)
    with pytest.raises(DataError, match="no earlier ranker window 1"):
        refit(tiny_snapshot, str(stage1 / "kept_none"), str(stage1 / "tt_data"), str(stage1 / "tt"), UC,
              str(stage1 / "refit_missing"), ranker_windows=3, ranker_dataset_dir=str(stage1 / "rk"),
              stage1_models_dir=str(stage1 / "kept_none"), **TT)
