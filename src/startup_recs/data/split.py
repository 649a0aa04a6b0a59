"""The temporal split shared by every dataset builder, trainer, tuner and the evaluation.

Three parts by event time::

    train  : ts <  val_start
    val    : val_start <= ts < split_at
    test   : ts >= split_at

Defaults: ``split_at`` = last event - ``test_days``; ``val_start`` = ``split_at`` - ``val_days``.
Tuning and model choice use train -> val; the chosen setting is refit on train + val and scored
once on test. A (entity, candidate) *pair* belongs to the part of its first event, so a pair
seen in training is never "new" in test. Everything fitted (vocabularies, popularity, id
mappings, the position-bias model) reads only the window it trains on: :meth:`TimeSplit.cutoff`.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from startup_recs.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PARTS: tuple[str, str, str] = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2
_PART_ARRAY = np.array(PARTS, dtype=object)


def _utc(value: Any) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"bad timestamp {value!r}: {exc}") from None
    if ts is pd.NaT:
        raise ConfigError(f"bad timestamp {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def ts_values(ts: Any) -> np.ndarray:
    """UTC datetime64[us] values of a Series / Index / array / scalar, without copies where possible."""
    if isinstance(ts, pd.DataFrame):
        ts = ts["ts"]
    s = pd.Series(ts) if not isinstance(ts, pd.Series) else ts
    if not pd.api.types.is_datetime64_any_dtype(s):
        s = pd.to_datetime(s, utc=True)
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy(dtype="datetime64[us]")


@dataclass(frozen=True)
class TimeSplit:
    """``val_start <= split_at`` (UTC). See the module doc for the three parts."""

    val_start: pd.Timestamp
    split_at: pd.Timestamp

    def __post_init__(self) -> None:
        object.__setattr__(self, "val_start", _utc(self.val_start))
        object.__setattr__(self, "split_at", _utc(self.split_at))
        if self.val_start > self.split_at:
            raise ConfigError(f"validation start {self.val_start} is after the split {self.split_at}")

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def resolve(cls, ts: Any, split_at: Any = None, test_days: float = 14.0,
                val_days: float = 14.0, *, check: bool = True) -> TimeSplit:
        """The split for event times ``ts``: ``split_at`` given or last event - ``test_days``.

        With ``check`` (default) raises :class:`DataError` when the train part is empty or the
        validation part holds no event; an empty test part is allowed (a production refit on
        everything), and logged.
        """
        if test_days < 0 or val_days < 0:
            raise ConfigError(f"--test-days and --val-days must be >= 0 (got {test_days}, {val_days})")
        values = ts_values(ts)
        if not len(values):
            raise DataError("no events to split")
        last = pd.Timestamp(values.max(), tz="UTC")
        at = _utc(split_at) if split_at is not None else last - pd.Timedelta(days=test_days)
        split = cls(val_start=at - pd.Timedelta(days=val_days), split_at=at)
        if check:
            split.check(values)
        return split

    @classmethod
    def from_args(cls, args: argparse.Namespace, events: Any) -> TimeSplit:
        """From the CLI flags ``--split-at``, ``--test-days``, ``--val-days`` and the events' ``ts``."""
        return cls.resolve(events, getattr(args, "split_at", None),
                           float(getattr(args, "test_days", 14.0)), float(getattr(args, "val_days", 14.0)))

    def check(self, ts: Any) -> dict[str, int]:
        """Count events per part; :class:`DataError` if train or validation is empty."""
        counts = self.counts(ts)
        if counts["train"] == 0:
            raise DataError(f"bad split: no event before the validation start {self.val_start.isoformat()}")
        if counts["val"] == 0:
            raise DataError(
                f"bad split: empty validation window [{self.val_start.isoformat()}, {self.split_at.isoformat()})"
            )
        if counts["test"] == 0:
            log.info("split at %s leaves the test part empty", self.split_at.isoformat())
        return counts

    def shifted(self, last_event: Any) -> TimeSplit:
        """The split of the published refit: validation = this split's test window
        ``[split_at, last_event]``, train = everything before it, nothing left for test. Models
        fit on this split's ``train`` window are this split's ``trainval`` ones; its ``trainval``
        window holds every event (:mod:`startup_recs.pipeline.refit_steps`)."""
        return TimeSplit(val_start=self.split_at, split_at=_utc(last_event) + pd.Timedelta(microseconds=1))

    # --- parts ----------------------------------------------------------------------------------
    def codes(self, ts: Any) -> np.ndarray:
        """int8 part per timestamp: 0 train, 1 val, 2 test (vectorised)."""
        v = ts_values(ts)
        vs = np.datetime64(self.val_start.tz_localize(None), "us")
        sa = np.datetime64(self.split_at.tz_localize(None), "us")
        return (v >= vs).astype(np.int8) + (v >= sa).astype(np.int8)

    def part(self, ts: Any) -> np.ndarray:
        """``'train' | 'val' | 'test'`` per timestamp (object array); a scalar gives a str."""
        if np.isscalar(ts) or isinstance(ts, pd.Timestamp | str):
            return PARTS[int(self.codes([_utc(ts)])[0])]
        return _PART_ARRAY[self.codes(ts)]

    def counts(self, ts: Any) -> dict[str, int]:
        c = np.bincount(self.codes(ts), minlength=3)
        return {p: int(n) for p, n in zip(PARTS, c, strict=True)}

    def cutoff(self, window: str) -> pd.Timestamp | None:
        """Exclusive end of a fit window: ``train`` -> val_start, ``trainval`` -> split_at, ``all`` -> None."""
        if window == "train":
            return self.val_start
        if window == "trainval":
            return self.split_at
        if window == "all":
            return None
        raise ConfigError(f"unknown fit window {window!r}; expected train, trainval or all")

    def before(self, ts: Any, window: str) -> np.ndarray:
        """Boolean mask: timestamps inside the fit ``window`` (``train``/``trainval``/``all``)."""
        code = self.codes(ts)
        limit = {"train": TRAIN, "trainval": VAL, "all": TEST}.get(window)
        if limit is None:
            self.cutoff(window)  # raises the one-line error
        return code <= limit

    @staticmethod
    def pair_first(events: pd.DataFrame, keys: tuple[str, str] = ("entity_id", "candidate_id")) -> pd.Series:
        """First event time of each (entity, candidate) pair: the time that decides its part."""
        return events.groupby(list(keys), sort=False, observed=True)["ts"].min()

    # --- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, str]:
        return {"val_start": self.val_start.isoformat(), "split_at": self.split_at.isoformat()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, data: str | dict[str, Any]) -> TimeSplit:
        obj = json.loads(data) if isinstance(data, str) else data
        try:
            return cls(val_start=obj["val_start"], split_at=obj["split_at"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"bad split JSON (need val_start and split_at): {exc}") from None
