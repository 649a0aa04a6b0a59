"""Mutual relevance (both sides acted) on a hand-made log, and mutual NDCG / recall computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from startup_recs.evaluation.metrics import summarize
from startup_recs.evaluation.mutual import mutual_pairs, mutual_target, prefixed
from startup_recs.serving.data import ServingData

T0 = pd.Timestamp("2026-03-01", tz="UTC")


def _frame(rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": [r[0] for r in rows], "candidate_id": [r[1] for r in rows],
                         "ts": [T0 + pd.Timedelta(days=r[2]) for r in rows], "event": [r[3] for r in rows],
                         "weight": 1.0, "session_id": None})


class _Snap:
    """The two sides' event views of a DB snapshot (what ``Snapshot.events`` returns)."""

    source = "db"

    def __init__(self) -> None:
        self.views = {
            # startup -> developer (startup_interactions)
            "startup_developer": _frame([
                ("s1", "u1", -5, "view"), ("s1", "u9", -4, "contact"),  # training window
                ("s1", "u2", 1, "contact"),  # answered below: mutual
                ("s1", "u3", 1, "contact"),  # never answered: one-sided only
                ("s1", "u4", 2, "apply_received"), ("s1", "u4", 3, "reply"),  # u4 applied, s1 answered: mutual
                ("s1", "u9", 2, "contact"),  # u9 answers, but s1 had contacted u9 before the split: not new
                ("s2", "u5", 2, "view"),  # u5 applied to s2, s2 never answered: not mutual
                ("s2", "u6", 1, "contact"),  # u6 answers: mutual, and u6 is unknown to the model
            ]),
            # developer -> startup (user_interactions)
            "developer_startup": _frame([
                ("u2", "s1", 2, "reply"), ("u4", "s1", 2, "apply"), ("u9", "s1", 3, "reply"),
                ("u5", "s2", 2, "apply"), ("u6", "s2", 2, "reply"),
                ("u3", "s1", -1, "view"),  # a view is not an act
            ]),
        }

    def events(self, use_case: str) -> pd.DataFrame:
        return self.views[use_case]


def test_mutual_pairs_need_both_sides_in_the_window() -> None:
    pairs = mutual_pairs(_Snap(), "startup_developer", T0)
    assert list(map(tuple, pairs.to_numpy())) == [("s1", "u2"), ("s1", "u4"), ("s1", "u9"), ("s2", "u6")]
    assert mutual_pairs(_Snap(), "startup_developer", T0, T0 + pd.Timedelta(days=2)).empty  # answers come later
    assert mutual_pairs(_Snap(), "developer_startup", T0) is None  # a forward use case: no mutual target


def test_mutual_ndcg_and_recall_by_hand() -> None:
    snap = _Snap()
    known = pd.DataFrame({"location": "berlin"}, index=pd.Index([f"u{i}" for i in (1, 2, 3, 4, 5, 9)],
                                                                   name="candidate_id"))  # u6: not known
    data = ServingData.from_events(snap.views["startup_developer"], "startup_developer", T0, candidate_features=known)
    t = mutual_target(snap, data, T0)
    assert t.entity_ids == ["s1", "s2"]
    idx = {c: i for i, c in enumerate(data.candidate_ids)}
    assert sorted(t.relevant[0].tolist()) == sorted([idx["u2"], idx["u4"]])  # u9 seen before the split
    assert t.n_relevant.tolist() == [2, 1]  # s2: u6 is outside the candidate space, still counted
    # a ranking: s1 gets [u3, u2, u1, ...] (u2 at rank 2, u4 missing); s2 gets anything (u6 unfindable)
    top = np.full((2, 10), -1, np.int64)
    top[0, :3] = [idx["u3"], idx["u2"], idx["u1"]]
    top[1, :2] = [idx["u5"], idx["u3"]]
    m = prefixed(summarize(top, t.relevant, data.n_candidates, [10], t.segments, t.n_relevant))
    ndcg_s1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))  # one hit at rank 2 of an ideal two
    assert m["all"]["mutual_ndcg@10"] == pytest.approx((ndcg_s1 + 0.0) / 2)
    assert m["all"]["mutual_recall@10"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["all"]["mutual_users"] == 2
