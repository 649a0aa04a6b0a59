"""ALS matrix: known values per fit window, mappings round trip, filters, id-only import."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from startup_recs.core.errors import ConfigError, DataError
from startup_recs.datasets.als import build_als, load_als
from tests.unit.dataset_helpers import day, db_snapshot, events_snapshot

SPLIT = dict(split_at=day(50), val_days=10)


def dense(out, sfx="_reverse"):
    m, users, items = load_als(out, sfx)
    arr = m.toarray()
    return {(u, i): float(arr[r, c]) for u, r in users.items() for i, c in items.items() if arr[r, c]}, m, users, items


def test_trainval_matrix_known_values(tmp_path):
    out = str(tmp_path / "als")
    stats = build_als(db_snapshot(tmp_path / "snap"), "startup_developer", out, **SPLIT)
    cells, m, users, items = dense(out)
    assert isinstance(m, sp.csr_matrix) and m.dtype == np.float32
    assert users == {"s1": 0, "s2": 1, "s3": 2}  # sorted ids; s4 only has test events
    assert items == {"d1": 0, "d2": 1, "d3": 2, "d5": 3, "d6": 4}  # d4 only in test
    assert cells == {("s1", "d1"): 7.0, ("s1", "d2"): 1.0, ("s1", "d3"): 2.0, ("s1", "d6"): 5.0,
                     ("s2", "d2"): 7.0, ("s2", "d5"): 10.0, ("s3", "d3"): 5.0}
    assert stats["shape"] == [3, 5] and stats["nnz"] == 7 and stats["cutoff"] == day(50).isoformat()
    meta = json.loads((tmp_path / "als" / "als_reverse_meta.json").read_text())
    assert meta["fit_window"] == "trainval" and meta["files"]["matrix"] == "als_interactions_reverse.npz"


def test_train_window_excludes_validation(tmp_path):
    out = str(tmp_path / "als")
    build_als(db_snapshot(tmp_path / "snap"), "startup_developer", out, fit_window="train", **SPLIT)
    cells, _, users, items = dense(out)
    assert cells == {("s1", "d1"): 7.0, ("s1", "d2"): 1.0, ("s2", "d2"): 2.0, ("s2", "d5"): 10.0, ("s3", "d3"): 5.0}
    assert "d6" not in items


def test_mapping_round_trip_is_consistent_with_matrix(tmp_path):
    out = str(tmp_path / "als")
    build_als(db_snapshot(tmp_path / "snap"), "startup_developer", out, **SPLIT)
    m, users, items = load_als(out, "_reverse")
    assert sorted(users.values()) == list(range(m.shape[0])) and sorted(items.values()) == list(range(m.shape[1]))
    np.load(tmp_path / "als" / "als_interactions_reverse.npz", allow_pickle=False)  # no pickled objects


def test_forward_names_drop_reverse_and_min_interactions(tmp_path):
    uri = db_snapshot(tmp_path / "snap")
    out = str(tmp_path / "fwd")
    build_als(uri, "developer_startup", out, **SPLIT)
    assert (tmp_path / "fwd" / "als_interactions.npz").exists() and (tmp_path / "fwd" / "als_user_mapping.json").exists()
    # fit-window (trainval) events: s1 5, s2 4, s3 1
    build_als(uri, "startup_developer", str(tmp_path / "m"), min_interactions=5, **SPLIT)
    _, users, _ = load_als(str(tmp_path / "m"), "_reverse")
    assert set(users) == {"s1"}
    with pytest.raises(DataError, match="at least 6"):
        build_als(uri, "startup_developer", str(tmp_path / "e"), min_interactions=6, **SPLIT)
    assert not (tmp_path / "e").exists()
    with pytest.raises(ConfigError, match="fit-window"):
        build_als(uri, "startup_developer", str(tmp_path / "e"), fit_window="everything", **SPLIT)
    # all: every event (the published refit), no cutoff
    stats = build_als(uri, "startup_developer", str(tmp_path / "all"), fit_window="all", **SPLIT)
    trainval = build_als(uri, "startup_developer", str(tmp_path / "tv"), **SPLIT)
    assert stats["cutoff"] is None and stats["fit_window"] == "all" and stats["events"] > trainval["events"]


def test_id_only_import(tmp_path):
    rows = [("u1", "c1", 1.0, "interaction", 2.0), ("u1", "c1", 2.0, "purchase", 1.0), ("u2", "c2", 3.0, "interaction", 1.0),
            ("u2", "c3", 45.0, "interaction", 1.0), ("u3", "c3", 55.0, "interaction", 1.0)]
    out = str(tmp_path / "als")
    stats = build_als(events_snapshot(tmp_path / "ev", rows), "startup_developer", out, **SPLIT)
    cells, *_ = dense(out)
    assert cells == {("u1", "c1"): 2.0 + 4.0, ("u2", "c2"): 1.0, ("u2", "c3"): 1.0}
    assert stats["source"] == "events"
