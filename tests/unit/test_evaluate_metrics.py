"""Metric functions against hand-computed cases; the test-window protocol on hand-made events."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from startup_recs.core.errors import ConfigError, DataError
from startup_recs.evaluation.metrics import catalog_coverage, hits_matrix, metrics_from_hits, summarize
from startup_recs.evaluation.protocol import oracle_top, target_window
from startup_recs.serving.data import ServingData

L2, L3, L4, L5 = (math.log2(x) for x in (2, 3, 4, 5))


def test_hits_and_metrics_hand_computed():
    top = np.array([[3, 1, 7, 5], [2, -1, -1, -1]])
    rel = [np.array([1, 5, 9]), np.array([2])]
    hits = hits_matrix(top, rel, n_candidates=10)
    assert hits.tolist() == [[False, True, False, True], [True, False, False, False]]
    m = metrics_from_hits(hits, np.array([3, 1]), [3, 4])
    # entity 0, K=3: one hit at rank 2 of 3 relevant
    idcg3 = 1 / L2 + 1 / L3 + 1 / L4
    assert m["recall@3"][0] == pytest.approx(1 / 3)
    assert m["ndcg@3"][0] == pytest.approx((1 / L3) / idcg3)
    assert m["map@3"][0] == pytest.approx((1 / 2) / 3)
    assert m["hitrate@3"][0] == 1.0
    # K=4: hits at ranks 2 and 4; ideal DCG still over min(3, 4) = 3 positions
    assert m["recall@4"][0] == pytest.approx(2 / 3)
    assert m["ndcg@4"][0] == pytest.approx((1 / L3 + 1 / L5) / idcg3)
    assert m["map@4"][0] == pytest.approx((1 / 2 + 2 / 4) / 3)
    # entity 1: its only relevant item first
    for k in (3, 4):
        assert m[f"recall@{k}"][1] == m[f"ndcg@{k}"][1] == m[f"map@{k}"][1] == 1.0
    assert catalog_coverage(top, 3, 10) == pytest.approx(4 / 10)  # {3, 1, 7, 2}


def test_unreachable_relevant_items_count_as_misses():
    top = np.array([[0, 1]])
    hits = hits_matrix(top, [np.array([0])], 5)
    m = metrics_from_hits(hits, np.array([2]), [2])  # a second relevant item outside the catalogue
    assert m["recall@2"][0] == pytest.approx(0.5)
    assert m["ndcg@2"][0] == pytest.approx(1.0 / (1 + 1 / L3))
    with pytest.raises(DataError):
        metrics_from_hits(hits, np.array([0]), [2])


def test_summarize_segments():
    top = np.array([[0, 1], [1, 0], [2, 3]])
    rel = [np.array([0]), np.array([0]), np.array([9])]
    s = summarize(top, rel, 10, [1, 2], np.array(["cold", "hot", "hot"], dtype=object))
    assert s["all"]["users"] == 3 and s["warm"] == {"users": 0}
    assert s["cold"]["ndcg@1"] == 1.0 and s["hot"]["ndcg@1"] == 0.0
    assert s["hot"]["recall@2"] == pytest.approx(0.5)
    assert s["all"]["coverage@1"] == pytest.approx(3 / 10)


T0 = pd.Timestamp("2026-03-01", tz="UTC")


def _events():
    rows = [  # (entity, candidate, day offset, event)
        ("a", "x", -3, "view"), ("a", "y", -2, "contact"),
        ("a", "y", 1, "contact"),  # already contacted before the split: excluded, not relevant
        ("a", "z", 2, "contact"),  # relevant
        ("a", "w", 2, "view"),  # not a positive event
        ("b", "x", 3, "contact"),  # b: cold (no training events), relevant x
        ("c", "y", 1, "contact"), ("c", "y", -1, "click"),  # c clicked y, contacts it after: relevant
        ("d", "new", 4, "apply_received"),  # unknown candidate: counted, never findable
    ]
    return pd.DataFrame({"entity_id": [r[0] for r in rows], "candidate_id": [r[1] for r in rows],
                         "ts": [T0 + pd.Timedelta(days=r[2]) for r in rows], "event": [r[3] for r in rows],
                         "weight": 1.0})


def test_target_window_protocol_and_no_leak():
    ev = _events()
    data = ServingData.from_events(ev, "startup_developer", T0)
    # nothing at or after the split is in the serving data
    assert set(data.candidate_ids) == {"x", "y"}
    assert data.entity_counts == {"a": 2, "c": 1}
    t = target_window(ev, data, T0, None)
    assert t.entity_ids == ["a", "b", "c", "d"]  # a click (or view) does not exclude: c's contact counts
    idx = {c: i for i, c in enumerate(data.candidate_ids)}
    assert [r.tolist() for r in t.relevant] == [[], [idx["x"]], [idx["y"]], []]
    assert t.n_relevant.tolist() == [1, 1, 1, 1]  # a: z (unknown candidate) ; b: x ; c: y ; d: new
    assert t.segments.tolist() == ["cold", "cold", "cold", "cold"]
    assert data.exclude_events == ("contact", "apply_received")
    assert {e: c.tolist() for e, c in data.excluded.items()} == {"a": [idx["y"]]}
    with pytest.raises(ConfigError):
        target_window(ev, data, T0 + pd.Timedelta(days=1), None)


def test_oracle_ranking_excludes_contacted():
    ev = _events()
    data = ServingData.from_events(ev, "startup_developer", T0)
    oracle = pd.DataFrame({"entity_id": ["a", "a", "a"], "candidate_id": ["y", "x", "zz"], "rank": [1, 2, 3]})
    top = oracle_top(oracle, data, ["a", "b"], 3)
    x, y = data.candidate_index["x"], data.candidate_index["y"]
    assert top.tolist() == [[x, -1, -1], [-1, -1, -1]]  # a contacted y (excluded), only viewed x; zz is unknown
    top = oracle_top(oracle, data, ["c"], 2)
    assert top.tolist() == [[-1, -1]]
    oracle2 = pd.DataFrame({"entity_id": ["c", "c"], "candidate_id": ["y", "x"], "rank": [1, 2]})
    assert oracle_top(oracle2, data, ["c"], 2).tolist() == [[y, x]]  # c only clicked y
