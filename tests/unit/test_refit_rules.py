"""The rules the published refit rests on: the two-tower's refit epochs (the stage-1 step budget),
the shifted split (the ranker learns one window later) and the leak check that lets the evaluated
retrievers feed that ranker but never a validation-window one."""

from __future__ import annotations

import pandas as pd
import pytest

from startup_recs.core.errors import DataError
from startup_recs.data.split import TimeSplit
from startup_recs.train.ranker_inputs import _leaks
from startup_recs.train.two_tower import refit_epochs


def test_refit_epochs_keep_the_stage1_step_budget() -> None:
    assert refit_epochs(10, 1000, 1000) == 10
    assert refit_epochs(10, 1000, 1080) == 9  # 8 % more positives per epoch: one epoch fewer
    assert refit_epochs(10, 1000, 2000) == 5
    assert refit_epochs(2, 1000, 1150) == 2 and refit_epochs(1, 1000, 5000) == 1  # never below one pass
    assert refit_epochs(10, 1000, 1000, max_epochs=4) == 4
    assert refit_epochs(7, 0, 1000) == 7  # nothing recorded: the best epoch as it is
    with pytest.raises(DataError):
        refit_epochs(0, 10, 10)


def test_shifted_split_validates_on_the_old_test_window() -> None:
    ts = pd.Series(pd.date_range("2026-01-01", "2026-04-30", freq="D", tz="UTC"))
    split = TimeSplit.resolve(ts, test_days=14, val_days=14)
    shifted = split.shifted(ts.max())
    assert shifted.val_start == split.split_at
    assert shifted.split_at > ts.max() and shifted.counts(ts)["test"] == 0
    assert shifted.counts(ts)["val"] == split.counts(ts)["test"]
    assert shifted.cutoff("train") == split.cutoff("trainval")  # the evaluated retrievers' window


def test_a_recorded_fit_end_vouches_for_the_window_name() -> None:
    split_at = pd.Timestamp("2026-04-16", tz="UTC")
    val_start = pd.Timestamp("2026-04-02", tz="UTC")
    final = {"hyperparameters": {"fit_on": "trainval"},
             "data": {"fit_on": "trainval", "fit_until": split_at.isoformat()}}
    assert _leaks(final, split_at) is None  # features of a ranker that learns after split_at
    assert "fit_until" in _leaks(final, val_start)  # never of one that learns on validation
    old = {"data": {"fit_on": "trainval"}}  # no fit end recorded: the name decides
    assert _leaks(old, split_at) == "data.fit_on = 'trainval'"
    every = {"data": {"fit_on": "all", "fit_until": None}}
    assert _leaks(every, split_at) == "data.fit_on = 'all'"
    stage1 = {"data": {"fit_on": "train", "fit_until": val_start.isoformat()}}
    assert _leaks(stage1, val_start) is None
