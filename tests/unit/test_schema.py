"""Schema contracts: validation casts good tables and names the offending column/value."""

import pyarrow as pa
import pytest

from startup_recs.core.config import event_weights, segment_of
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.core.usecases import get_use_case
from startup_recs.data.schema import SCHEMAS, validate


def _inter(**over):
    cols = {"startup_id": ["s1", "s2"], "user_id": ["u1", "u2"], "event": ["view", "contact"],
            "ts": ["2026-01-01T10:00:00", "2026-01-02T11:30:00"]}
    cols.update(over)
    return pa.table(cols)


def test_valid_table_is_cast_to_contract() -> None:
    t = validate(_inter(), "startup_interactions")
    assert t.schema == SCHEMAS["startup_interactions"]
    assert t.column("session_id").null_count == 2  # optional column added as nulls
    assert t.column("ts")[1].as_py().isoformat() == "2026-01-02T11:30:00+00:00"


def test_integer_ids_become_strings_and_extra_columns_drop() -> None:
    t = validate(_inter(startup_id=[1, 2], extra=[0, 0]), "startup_interactions")
    assert t.column("startup_id").to_pylist() == ["1", "2"] and "extra" not in t.column_names


@pytest.mark.parametrize(("over", "message"), [
    ({"user_id": ["u1", None]}, r"startup_interactions\.user_id: 1 null value"),
    ({"event": ["view", "like"]}, r"startup_interactions\.event: unknown value 'like'"),
    ({"ts": ["2026-01-01", "not a date"]}, r"startup_interactions\.ts: unparseable timestamp 'not a date'"),
    ({"ts": [1.5, 2.5]}, r"startup_interactions\.ts: cannot convert double"),
])
def test_bad_values_are_named(over, message) -> None:
    with pytest.raises(DataError, match=message):
        validate(_inter(**over), "startup_interactions")


def test_missing_required_column_is_named() -> None:
    with pytest.raises(DataError, match="missing required column 'event'"):
        validate(_inter().drop(["event"]), "startup_interactions")


def test_user_role_enum_and_lists() -> None:
    users = pa.table({"user_id": ["u1"], "role": ["founder"], "skills": [["python"]]})
    with pytest.raises(DataError, match=r"users\.role: unknown value 'founder'"):
        validate(users, "users")
    ok = validate(users.set_column(1, "role", pa.array(["developer"])), "users")
    assert ok.column("skills").to_pylist() == [["python"]]


def test_imported_events_use_configured_vocabulary() -> None:
    ev = pa.table({"entity_id": ["a"], "candidate_id": ["b"], "ts": ["2026-01-01"], "event": ["purchase"],
                   "weight": [1.0]})
    with pytest.raises(DataError, match="unknown value 'purchase'"):
        validate(ev, "events", allowed_events=frozenset({"view"}))
    assert validate(ev, "events", allowed_events=frozenset({"purchase"})).num_rows == 1


def test_use_cases_and_config() -> None:
    uc = get_use_case("startup_developer")
    assert uc.artifact("two_tower") == "two_tower_reverse" and get_use_case("developer_startup").suffix == ""
    with pytest.raises(ConfigError, match="unknown use case 'startup_founder'"):
        get_use_case("startup_founder")
    assert [segment_of(n) for n in (0, 4, 5, 19, 20)] == ["cold", "cold", "warm", "warm", "hot"]
    assert event_weights('{"view": 0.5}')["view"] == 0.5
    with pytest.raises(ConfigError):
        event_weights('{"view": -1}')
