"""TimeSplit: boundaries, defaults, JSON round trip, bad splits."""

import argparse

import numpy as np
import pandas as pd
import pytest

from startup_recs.core.errors import ConfigError, DataError
from startup_recs.data.split import TimeSplit

T0 = pd.Timestamp("2026-01-01", tz="UTC")
TS = pd.Series(T0 + pd.to_timedelta(np.arange(60), unit="D"))  # days 0..59


def test_defaults_are_last_event_minus_test_days_and_val_days():
    s = TimeSplit.resolve(TS)
    assert s.split_at == T0 + pd.Timedelta(days=59 - 14)
    assert s.val_start == T0 + pd.Timedelta(days=59 - 28)
    assert s.counts(TS) == {"train": 31, "val": 14, "test": 15}


def test_boundaries_are_half_open():
    s = TimeSplit(val_start=T0 + pd.Timedelta(days=40), split_at=T0 + pd.Timedelta(days=50))
    parts = s.part(TS)
    assert parts[39] == "train" and parts[40] == "val" and parts[49] == "val" and parts[50] == "test"
    assert s.part(T0 + pd.Timedelta(days=50)) == "test"
    assert s.part("2026-02-10") == "val"  # naive strings are UTC
    assert list(s.codes(TS[[0, 40, 50]])) == [0, 1, 2]
    assert s.before(TS, "train").sum() == 40 and s.before(TS, "trainval").sum() == 50
    assert s.cutoff("train") == s.val_start and s.cutoff("trainval") == s.split_at


def test_explicit_split_at_and_val_days():
    s = TimeSplit.resolve(TS, split_at="2026-02-15", val_days=7)
    assert s.split_at == pd.Timestamp("2026-02-15", tz="UTC")
    assert s.val_start == pd.Timestamp("2026-02-08", tz="UTC")


def test_json_round_trip():
    s = TimeSplit.resolve(TS, split_at="2026-02-15T12:30:00+02:00")
    back = TimeSplit.from_json(s.to_json())
    assert back == s and back.split_at == pd.Timestamp("2026-02-15T10:30:00", tz="UTC")
    assert TimeSplit.from_json(s.to_dict()) == s


def test_from_args_reads_cli_flags():
    args = argparse.Namespace(split_at=None, test_days=10.0, val_days=5.0)
    s = TimeSplit.from_args(args, pd.DataFrame({"ts": TS}))
    assert s.split_at == T0 + pd.Timedelta(days=49) and s.val_start == T0 + pd.Timedelta(days=44)


def test_bad_splits_raise_one_line_errors():
    with pytest.raises(DataError, match="no event before the validation start"):
        TimeSplit.resolve(TS, split_at="2025-06-01")
    with pytest.raises(DataError, match="empty validation window"):
        TimeSplit.resolve(TS, val_days=0)
    sparse = pd.Series([T0, T0 + pd.Timedelta(days=100)])
    with pytest.raises(DataError, match="empty validation"):
        TimeSplit.resolve(sparse, test_days=1, val_days=5)
    with pytest.raises(DataError, match="no events"):
        TimeSplit.resolve(pd.Series([], dtype="datetime64[us, UTC]"))
    with pytest.raises(ConfigError):
        TimeSplit.resolve(TS, split_at="not a date")
    with pytest.raises(ConfigError):
        TimeSplit(val_start="2026-02-10", split_at="2026-02-01")
    with pytest.raises(ConfigError):
        TimeSplit.from_json('{"split_at": "2026-01-01"}')


def test_empty_test_part_is_allowed():
    s = TimeSplit.resolve(TS, split_at="2026-06-01", val_days=150)
    assert s.counts(TS)["test"] == 0
