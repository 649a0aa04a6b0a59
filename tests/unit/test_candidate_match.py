"""serving/candidate_match.py: the pre-encoded candidate side gives exactly what the original
``match_features`` / ``match_reasons_batch`` give on pandas rows, for every use case of the tiny
synthetic marketplace and for awkward values (nulls, ``a|b`` strings, numbers as tokens, tokens
that collide once made ``str``, imported tables' generic terms)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from startup_recs.core.usecases import USE_CASES
from startup_recs.features.match import match_features, match_reasons_batch
from startup_recs.serving.candidate_match import MatchTable, match_table
from startup_recs.serving.data import ServingData


def _data(uc: str, ef: pd.DataFrame, cf: pd.DataFrame) -> ServingData:
    ev = pd.DataFrame({"entity_id": [ef.index[0]], "candidate_id": [cf.index[0]],
                       "ts": [pd.Timestamp("2026-01-01", tz="UTC")], "weight": [1.0]})
    return ServingData.from_events(ev, uc, None, entity_features=ef, candidate_features=cf)


def _assert_same(data: ServingData, entity_ids: list[str], lists: list[np.ndarray]) -> None:
    table = MatchTable(data)
    for e in entity_ids:
        row = data.entity_features.loc[e]
        for cand in lists:
            want, names = match_features(data.use_case, row, data.candidate_features.iloc[cand])
            got, got_names = table.features(e, cand)
            assert got_names == names
            assert got.dtype == want.dtype == np.float32
            np.testing.assert_array_equal(got, want)
            assert table.reasons(e, cand) == match_reasons_batch(data.use_case, row, data.candidate_features.iloc[cand])


@pytest.fixture(scope="module")
def snap(tiny_snapshot: str):
    from startup_recs.data.snapshot import load_snapshot

    return load_snapshot(tiny_snapshot)


@pytest.mark.parametrize("uc", sorted(USE_CASES))
def test_same_as_original_on_the_tiny_marketplace(snap, uc: str) -> None:
    data = ServingData.from_snapshot(snap, uc)
    rng = np.random.default_rng(0)
    ents = rng.choice(data.entity_features.index.to_numpy(), 12, replace=False).tolist()
    n = data.n_candidates
    lists = [rng.choice(n, min(200, n), replace=False), rng.choice(n, 10, replace=False), np.array([3]),
             np.array([], np.int64), np.array([5, 5, 7])]
    _assert_same(data, ents, lists)
    assert match_table(data) is match_table(data)


def _developer_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    ef = pd.DataFrame({
        "sector": ["ai", "fin", None, "ai"],
        "stage": ["seed", "a", "seed", None],
        "location": ["Berlin", None, "Paris", "Berlin"],
        "skills_needed": [["python", "ml"], "go|rust|go", None, [1, "1", 2]],
        "funding_usd": [2e6, np.nan, 0.0, 5e5],
    }, index=pd.Index(["s0", "s1", "s2", "s3"], name="entity_id"))
    cf = pd.DataFrame({
        "location": ["Berlin", "Paris", None, "Berlin", "Rome", "Paris"],
        "skills": [["python"], ["ml", "python", None], [], "rust|go", [1, 2], np.nan],
        "experience_years": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0],
    }, index=pd.Index([f"u{i}" for i in range(6)], name="candidate_id"))
    return ef, cf


def _investor_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    ef = pd.DataFrame({
        "sector": ["ai", "fin", None, 3],
        "stage": ["seed", "a", "seed", None],
        "location": ["Berlin", None, "Paris", "Berlin"],
        "skills_needed": [["python"], [], None, ["go"]],
        "funding_usd": [2e6, np.nan, 0.0, 5e5],
    }, index=pd.Index(["s0", "s1", "s2", "s3"], name="entity_id"))
    cf = pd.DataFrame({
        "location": ["Berlin", "Paris", None, "Berlin", "Rome"],
        "sectors": [["ai", "fin"], "fin|bio", None, [3, "ai"], []],
        "stages": [["seed"], ["a", "b"], ["seed"], None, "a"],
        "check_size_usd": [1e5, 5e4, np.nan, 2e6, 0.0],
    }, index=pd.Index([f"i{i}" for i in range(5)], name="candidate_id"))
    return ef, cf


@pytest.mark.parametrize("frames", [_developer_frames, _investor_frames])
@pytest.mark.parametrize("reverse", [True, False])
def test_same_as_original_on_awkward_values(frames, reverse: bool) -> None:
    ef, cf = frames()
    role = "developer" if frames is _developer_frames else "investor"
    if reverse:
        uc, e_df, c_df = f"startup_{role}", ef, cf
    else:  # the forward use case: the user is the entity, startups are the candidates
        uc = f"{role}_startup"
        e_df = cf.rename_axis("entity_id")
        c_df = ef.rename_axis("candidate_id")
    data = _data(uc, e_df, c_df)
    n = data.n_candidates
    lists = [np.arange(n), np.arange(n)[::-1], np.array([0]), np.array([n - 1]), np.array([1, 1, 0])]
    _assert_same(data, data.entity_features.index.tolist(), lists)


def test_generic_terms_of_imported_tables_use_the_original_functions() -> None:
    ef = pd.DataFrame({"tags": [["a", "b"], ["c"]], "city": ["x", "y"]}, index=pd.Index(["e0", "e1"]))
    cf = pd.DataFrame({"tags": [["a"], "b|c", None], "city": ["x", None, "y"]}, index=pd.Index(["c0", "c1", "c2"]))
    data = _data("startup_developer", ef, cf)
    _assert_same(data, ["e0", "e1"], [np.array([0, 1, 2]), np.array([2]), np.array([1, 0])])


def test_entity_without_feature_row_gives_zeros_block() -> None:
    ef, cf = _developer_frames()
    data = _data("startup_developer", ef, cf)
    table = match_table(data)
    assert not table.knows("nobody")
    assert table.block("nobody", np.array([0, 1]), len(table.names)).sum() == 0
    blk = table.block("s0", np.array([0, 1]), len(table.names))
    assert blk.shape == (2, 1 + len(table.names)) and (blk[:, 0] == 1).all()
    assert table.reasons("nobody", np.array([0, 1])) == [[], []]


def test_vectorised_tokeniser_equals_the_original(snap) -> None:
    from startup_recs.features.values import _exploded
    from startup_recs.serving.candidate_match import exploded

    cols = []
    for uc in ("startup_developer", "startup_investor"):
        for df in (snap.entity_features(uc), snap.candidate_features(uc)):
            cols += [df[c] for c in df.columns if df[c].dtype == object]
    ef, cf = _developer_frames()
    cols += [ef["skills_needed"], cf["skills"]]
    arr = np.empty(4, dtype=object)
    arr[:] = [np.array(["a", "b"], dtype=object), np.array(["b", "b"], dtype=object), np.array([], dtype=object),
              np.array(["c"], dtype=object)]
    cols += [pd.Series(arr), pd.Series([["x"], [], ["y", "z"]]), pd.Series([[], []]), pd.Series([["a"], None]),
             pd.Series([[1, 2], ["3"]]), pd.Series(["a|b", "c"])]
    for col in cols:
        r0, t0 = _exploded(col)
        r1, t1 = exploded(col)
        np.testing.assert_array_equal(r1, r0)
        assert t1.dtype == t0.dtype == object and t1.tolist() == t0.tolist()
