"""Content-based scorer: the vectorised all-candidate path equals features.match_features, the
score ranks matching profiles first, and id-only data falls back to popularity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from startup_recs.features import match_features
from startup_recs.serving.content import CandidateMatcher, ContentRetriever
from startup_recs.serving.data import ServingData


@pytest.fixture(scope="module")
def snap(tiny_snapshot):
    from startup_recs.data.snapshot import load_snapshot

    return load_snapshot(tiny_snapshot)


@pytest.mark.parametrize("uc", ["startup_developer", "startup_investor", "developer_startup", "investor_startup"])
def test_vectorised_match_equals_match_features(snap, uc):
    data = ServingData.from_snapshot(snap, uc, None)
    m = CandidateMatcher(uc, data.entity_features, data.candidate_features)
    assert m.supported
    ents = data.entity_features.iloc[:7]
    fast = m.features(ents)
    for i, (_, row) in enumerate(ents.iterrows()):
        ref, names = match_features(uc, row, data.candidate_features)
        assert names == m.names
        np.testing.assert_allclose(fast[i], ref, rtol=1e-5, atol=1e-5)
    r = ContentRetriever(data)
    ids = [str(e) for e in ents.index[:3]]
    full = r.score(ids)
    idx = np.array([0, 5, 9, len(data.candidate_ids) - 1])
    for i, e in enumerate(ids):  # the per-request path (match_features on a few candidates) agrees
        np.testing.assert_allclose(r.score_at(e, idx), full[i, idx], rtol=1e-5, atol=1e-5)


def test_content_ranks_matching_profiles_first():
    cf = pd.DataFrame({"skills": [["go"], ["py", "ml"], ["py"], ["js"]], "location": ["Oslo", "Rome", "Oslo", "Oslo"]},
                      index=pd.Index(["u0", "u1", "u2", "u3"], name="candidate_id"))
    ef = pd.DataFrame({"skills_needed": [["py", "ml"]], "location": ["Rome"]}, index=pd.Index(["s"], name="entity_id"))
    ev = pd.DataFrame({"entity_id": ["x"], "candidate_id": ["u3"], "ts": [pd.Timestamp("2026-01-01", tz="UTC")],
                       "weight": [1.0]})
    data = ServingData.from_events(ev, "startup_developer", None, entity_features=ef, candidate_features=cf)
    r = ContentRetriever(data)
    order = np.argsort(-r.score(["s"])[0]).tolist()
    assert order[0] == 1  # both skills and the location
    assert order[1] == 2  # one skill
    assert order[-1] == 0  # nothing in common and no popularity (u3 has popularity)
    assert r.score(["unknown"])[0].argmax() == 3  # no profile: popularity


def test_id_only_content_is_popularity():
    ev = pd.DataFrame({"entity_id": ["a", "b", "b"], "candidate_id": ["x", "y", "y"],
                       "ts": pd.Timestamp("2026-01-01", tz="UTC"), "weight": 1.0})
    data = ServingData.from_events(ev, "developer_startup", None)
    s = ContentRetriever(data).score(["a", "zz"])
    assert (s[:, 1] > s[:, 0]).all()
