"""ServingData, the top-N index and the retriever registry on hand-made data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from startup_recs.core.errors import DataError, ModelMismatchError
from startup_recs.serving.data import ServingData
from startup_recs.serving.index import ExactIndex, top_k
from startup_recs.serving.retrievers import load_retrievers

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def _events() -> pd.DataFrame:
    rows = [
        ("s1", "u1", 0, 1.0), ("s1", "u2", 1, 5.0), ("s1", "u1", 2, 2.0),
        ("s2", "u2", 3, 1.0), ("s2", "u3", 4, 1.0),
        ("s1", "u3", 20, 5.0),  # after the cut: must not count anywhere
        ("s3", "u4", 21, 5.0),
    ]
    return pd.DataFrame({
        "entity_id": [r[0] for r in rows], "candidate_id": [r[1] for r in rows],
        "ts": [T0 + pd.Timedelta(days=r[2]) for r in rows], "weight": [r[3] for r in rows],
        "event": "click",
    })


def _data() -> ServingData:
    cf = pd.DataFrame({"skills": [["py"], ["go"], ["py", "go"], ["js"], ["c"]]},
                      index=pd.Index(["u1", "u2", "u3", "u4", "u5"], name="candidate_id"))
    ef = pd.DataFrame({"skills_needed": [["py"], ["go"], ["js"], ["c"]]},
                      index=pd.Index(["s1", "s2", "s3", "s4"], name="entity_id"))
    return ServingData.from_events(_events(), "startup_developer", T0 + pd.Timedelta(days=10),
                                   entity_features=ef, candidate_features=cf)


def test_fit_window_statistics_exclude_future_events():
    d = _data()
    assert d.candidate_ids.tolist() == ["u1", "u2", "u3", "u4", "u5"]
    np.testing.assert_allclose(d.popularity, [3.0, 6.0, 1.0, 0.0, 0.0])
    assert d.entity_counts == {"s1": 3, "s2": 2}  # s3's only event is after the cut
    assert d.seen_of("s1").tolist() == [0, 1]  # u3 (day 20) is not seen
    assert d.seen_of("s3").tolist() == []
    np.testing.assert_allclose(d.recency_days[:3], [8.0, 7.0, 6.0])
    assert d.recency_days[3] == pytest.approx(3650.0)
    assert d.knows_entity("s4") and not d.knows_entity("nope")


def test_save_load_round_trip(tmp_path):
    d = _data()
    d.save(str(tmp_path / "serving"))
    e = ServingData.load(str(tmp_path / "serving"))
    assert e.candidate_ids.tolist() == d.candidate_ids.tolist()
    np.testing.assert_array_equal(e.popularity, d.popularity)
    np.testing.assert_array_equal(e.recency_days, d.recency_days)
    assert e.entity_counts == d.entity_counts
    assert {k: v.tolist() for k, v in e.seen.items()} == {k: v.tolist() for k, v in d.seen.items()}
    assert e.until == d.until and e.use_case == d.use_case
    assert e.candidate_features["skills"].map(list).tolist() == d.candidate_features["skills"].map(list).tolist()
    with pytest.raises(DataError, match="not a serving data folder"):
        ServingData.load(str(tmp_path))


def test_top_k_exact_with_exclusions():
    s = np.array([[0.1, 0.9, 0.5, 0.7], [1.0, 0.0, 0.2, 0.3]], np.float32)
    idx, sc = top_k(s, 2, [np.array([1]), np.array([], np.int64)])
    assert idx.tolist() == [[3, 2], [0, 3]]
    np.testing.assert_allclose(sc, [[0.7, 0.5], [1.0, 0.3]])
    idx, sc = top_k(s, 10)  # k larger than the catalogue: everything, sorted
    assert idx.tolist()[0] == [1, 3, 2, 0]


def test_exact_index_matches_brute_force():
    rng = np.random.default_rng(0)
    c, q = rng.normal(size=(500, 8)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    ix = ExactIndex(c)
    idx, sc = ix.search(q, 5, [np.array([0, 1, 2])] * 3)
    full = q @ c.T
    full[:, :3] = -np.inf
    ref = np.argsort(-full, axis=1)[:, :5]
    assert idx.tolist() == ref.tolist()
    np.testing.assert_allclose(sc, np.take_along_axis(full, ref, 1), rtol=1e-5)
    # the generic (ANN-style) path of the base class gives the same answer
    base_i, _ = super(ExactIndex, ix).search(q, 5, [np.array([0, 1, 2])] * 3)
    assert base_i.tolist() == ref.tolist()


def _write_als(d, name="als_reverse_v1", use_case="startup_developer", dim=3):
    users = np.array([[1, 0, 0], [0, 1, 0]], np.float32)[:, :dim]
    items = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 1], [3, 0, 0]], np.float32)[:, :dim]  # u1,u2,u3,u9
    np.save(d / f"{name}_user_factors.npy", users)
    np.save(d / f"{name}_item_factors.npy", items)
    (d / f"{name}_user_mapping.json").write_text(json.dumps({"s1": 0, "s2": 1}))
    (d / f"{name}_item_mapping.json").write_text(json.dumps({"u1": 0, "u2": 1, "u3": 2, "u9": 3}))
    (d / f"{name}_config.json").write_text(json.dumps({"use_case": use_case, "factors": dim}))


def test_load_retrievers_als_aligns_candidates(tmp_path):
    _write_als(tmp_path)
    d = _data()
    rs = load_retrievers(str(tmp_path), d)
    assert {"als", "popularity"} <= set(rs)
    als = rs["als"]
    assert als.knows("s1") and not als.knows("s3")
    s = als.score(["s1", "s2", "s3"])
    # candidate order u1..u5; u9 is not in the candidate space, u4/u5 unknown to the model -> 0
    np.testing.assert_allclose(s, [[1, 0, 0, 0, 0], [0, 2, 0, 0, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_allclose(als.score_at("s2", np.array([1, 0])), [2, 0])
    idx, _ = als.top(["s1"], 2)
    assert 0 not in idx[0] and 1 not in idx[0]  # u1, u2 already seen by s1
    pop = rs["popularity"].score(["x"])[0]
    assert np.argmax(pop) == 1


def test_model_of_another_use_case_is_refused(tmp_path):
    _write_als(tmp_path, use_case="startup_investor")
    with pytest.raises(ModelMismatchError, match="startup_investor"):
        load_retrievers(str(tmp_path), _data(), names=["als"])
