"""The content scorer's token bitsets (serving/content.py): one entity's overlap with every
candidate as a popcount gives bit for bit the scores and top lists of the sparse product."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from startup_recs.serving.content import CandidateMatcher, ContentRetriever
from startup_recs.serving.data import ServingData


@pytest.fixture(scope="module")
def snap(tiny_snapshot):
    from startup_recs.data.snapshot import load_snapshot

    return load_snapshot(tiny_snapshot)


def _without_bits(r: ContentRetriever) -> ContentRetriever:
    slow = ContentRetriever(r.data)
    for c in slow._matcher._cand:
        if "bits" in c:
            c["bits"] = None
    return slow


@pytest.mark.parametrize("uc", ["startup_developer", "startup_investor", "developer_startup", "investor_startup"])
def test_bitset_overlap_equals_the_sparse_product(snap, uc) -> None:
    data = ServingData.from_snapshot(snap, uc, None)
    fast = ContentRetriever(data)
    slow = _without_bits(fast)
    if "overlap" in fast._matcher.kinds:
        assert any(c.get("bits") is not None for c in fast._matcher._cand)
    ids = [str(e) for e in data.entity_features.index[:40]]
    np.testing.assert_array_equal(fast.score(ids), slow.score(ids))
    fi, fs = fast.top(ids, 50)
    si, ss = slow.top(ids, 50)
    np.testing.assert_array_equal(fs, ss)
    np.testing.assert_array_equal(fi, si)


def test_a_row_holding_a_token_twice_keeps_the_sparse_product() -> None:
    # [1, "1"] is one token twice once made str: the product counts it twice, a bitset once
    cf = pd.DataFrame({"skills": [[1, "1"], ["b"]], "location": ["x", "y"]}, index=pd.Index(["u0", "u1"]))
    ef = pd.DataFrame({"skills_needed": [["1", "b"]], "location": ["x"]}, index=pd.Index(["s0"]))
    m = CandidateMatcher("startup_developer", ef, cf)
    assert m._cand[0]["bits"] is None
    ev = pd.DataFrame({"entity_id": ["s0"], "candidate_id": ["u0"], "ts": pd.Timestamp("2026-01-01", tz="UTC"),
                       "weight": 1.0})
    data = ServingData.from_events(ev, "startup_developer", None, entity_features=ef, candidate_features=cf)
    r = ContentRetriever(data)
    np.testing.assert_array_equal(r.score(["s0"]), _without_bits(r).score(["s0"]))


@pytest.mark.parametrize("uc", ["startup_developer", "investor_startup"])
def test_score_at_from_the_match_table_equals_match_features(snap, uc) -> None:
    from startup_recs.features.match import match_features

    data = ServingData.from_snapshot(snap, uc, None)
    r = ContentRetriever(data)
    cand = np.array([0, 7, 3, len(data.candidate_ids) - 1, 7])
    for e in [str(x) for x in data.entity_features.index[:15]]:
        ref, names = match_features(uc, data.entity_row(e), data.candidate_features.iloc[cand])
        got, got_names = r.match_matrix(e, cand)
        assert got_names == names
        np.testing.assert_array_equal(got, np.nan_to_num(np.asarray(ref, np.float32)))
        np.testing.assert_array_equal(r.score_at(e, cand), r._combine(got, names, r._prior[cand]))
