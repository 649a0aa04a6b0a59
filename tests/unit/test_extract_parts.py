"""Extract's pure pieces: timestamp parsing, JSON lists, the watermark multiset rule."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pyarrow as pa
import pytest

from startup_recs.core.errors import ConfigError, DataError
from startup_recs.data import schema
from startup_recs.data.extract import _decode_lists
from startup_recs.data.snapshot_parts import drop_seen, parse_time, to_timestamps

UTC = dt.UTC


def test_parse_time_naive_is_utc_and_offsets_convert():
    assert parse_time("2026-03-01") == dt.datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_time("2026-03-01T12:00:00Z") == dt.datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert parse_time("2026-03-01T12:00:00+02:00") == dt.datetime(2026, 3, 1, 10, tzinfo=UTC)
    with pytest.raises(ConfigError, match="--since: unparseable timestamp 'soon'"):
        parse_time("soon")


@pytest.mark.parametrize(("values", "expected"), [
    (pa.array(["2026-01-01 00:00:00.250000", None]), [dt.datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC), None]),
    (pa.array(["2026-01-01T02:00:00+02:00"]), [dt.datetime(2026, 1, 1, tzinfo=UTC)]),
    (pa.array([1_767_225_600, 1_767_225_601]), [dt.datetime(2026, 1, 1, tzinfo=UTC),
                                                 dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)]),
    (pa.array([1_767_225_600.5]), [dt.datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)]),
    (pa.array([dt.datetime(2026, 1, 1)]), [dt.datetime(2026, 1, 1, tzinfo=UTC)]),
    (pa.array([None, None]), [None, None]),
])
def test_to_timestamps(values, expected):
    out = to_timestamps(values, "t", "ts")
    assert out.type == schema.TS
    assert out.to_pylist() == expected


def test_to_timestamps_names_the_bad_value():
    with pytest.raises(DataError, match=r"^events\.when: unparseable timestamp 'never'$"):
        to_timestamps(pa.array(["2026-01-01", "never"]), "events", "when")


def test_decode_lists():
    out = _decode_lists(['["a", "b"]', None, ["x"], "[]", "[1]"], "users", "skills")
    assert out.to_pylist() == [["a", "b"], None, ["x"], [], ["1"]]
    with pytest.raises(DataError, match="users.skills: expected a JSON list, got 'python'"):
        _decode_lists(["python"], "users", "skills")
    with pytest.raises(DataError, match="expected a JSON list"):
        _decode_lists(['{"a": 1}'], "users", "skills")


def test_rows_at_the_watermark_are_compared_as_a_multiset():
    """Two identical events at the watermark, one already extracted: exactly one is new."""
    wm = dt.datetime(2026, 6, 1, tzinfo=UTC)
    later = wm + dt.timedelta(seconds=1)
    chunk = pa.table({
        "startup_id": ["s1", "s1", "s2", "s3"],
        "user_id": ["u1", "u1", "u2", "u3"],
        "event": ["view"] * 4,
        "ts": pa.array([wm, wm, wm, later], schema.TS),
        "session_id": pa.array([None] * 4, pa.string()),
    })
    seen = Counter({("s1", "u1", "view", wm, None): 1, ("s2", "u2", "view", wm, None): 1})
    kept = drop_seen(chunk, "ts", wm, seen)
    assert kept.column("startup_id").to_pylist() == ["s1", "s3"]
    assert sum(seen.values()) == 0
