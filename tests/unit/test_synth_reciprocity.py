"""Planted reciprocity: the approached side answers by its own affinity (tiny world, seconds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from startup_recs import synth
from startup_recs.synth import reciprocity
from startup_recs.synth.affinity import World, build_world, shortlist
from startup_recs.synth.sessions import simulate
from startup_recs.synth.world import DAY_US, FORWARD, REVERSE, T0_US, WINDOW_DAYS


@pytest.fixture(scope="module")
def world() -> tuple[World, dict]:
    w, rng = build_world("tiny", 0)
    lists = {uc: shortlist(w, uc, w.spec.shortlist_k, rng) for uc in (*REVERSE, *FORWARD)}
    return w, simulate(w, rng, lists)


def _pairs(side: dict[str, np.ndarray], event: str) -> set[tuple[int, int]]:
    m = side["event"] == event
    return set(zip(side["s"][m].tolist(), side["u"][m].tolist(), strict=True))


def test_every_reply_answers_an_earlier_first_move_once(world) -> None:
    w, sim = world
    out = reciprocity.add_replies(w, sim, seed=0)
    user_replies, startup_replies = _pairs(out["fwd"], "reply"), _pairs(out["rev"], "reply")
    assert user_replies and startup_replies
    assert user_replies <= _pairs(sim["rev"], "contact")  # a user answers a startup's contact
    assert startup_replies <= _pairs(sim["fwd"], "apply") | _pairs(sim["fwd"], "contact")
    assert (out["fwd"]["event"] == "reply").sum() == len(user_replies)  # one answer per pair
    for side, first in ((out["fwd"], sim["rev"]), (out["rev"], sim["fwd"])):
        m = side["event"] == "reply"
        assert np.all(side["session"][m] == -1)
        assert np.all(side["ts"][m] < T0_US + WINDOW_DAYS * DAY_US)
        assert np.all(np.diff(side["ts"]) >= 0)  # still sorted by time
        f = pd.DataFrame({"s": first["s"], "u": first["u"], "ts": first["ts"]}).groupby(["s", "u"])["ts"].min()
        later = [t > f[(s, u)] for s, u, t in zip(side["s"][m], side["u"][m], side["ts"][m], strict=True)
                 if (s, u) in f.index]
        assert later and all(later)
    # the rows that were there are untouched: replies only come on top
    for key in ("rev", "fwd"):
        keep = out[key]["event"] != "reply"
        for col in ("s", "u", "ts", "session"):
            np.testing.assert_array_equal(out[key][col][keep], sim[key][col])


def test_user_replies_follow_the_forward_affinity_not_the_startups(world, monkeypatch) -> None:
    w, sim = world
    base = reciprocity.add_replies(w, sim, seed=0)
    n_user, n_startup = (base["fwd"]["event"] == "reply").sum(), (base["rev"]["event"] == "reply").sum()
    original = World.affinity

    def colder_forward(self: World, use_case: str, s: np.ndarray, u: np.ndarray) -> np.ndarray:
        shift = -8.0 if use_case in FORWARD else 0.0  # users now dislike every startup
        return original(self, use_case, s, u) + shift

    monkeypatch.setattr(World, "affinity", colder_forward)
    cold = reciprocity.add_replies(w, sim, seed=0)
    assert (cold["fwd"]["event"] == "reply").sum() < 0.05 * n_user  # users stop answering
    assert (cold["rev"]["event"] == "reply").sum() == n_startup  # startups answer as before
    monkeypatch.undo()
    # and among the contacted pairs, the answered ones are those the user likes more
    s, u, _ = reciprocity._first_moves(sim["rev"], ("contact",))
    fwd = reciprocity._affinity(w, w.U.is_dev[u], "forward", s, u)
    replied = np.array([(a, b) in _pairs(base["fwd"], "reply") for a, b in zip(s, u, strict=True)])
    assert 0.3 < replied.mean() < 0.7
    assert fwd[replied].mean() > fwd[~replied].mean() + 0.3


def test_generate_keeps_reverse_rows_and_adds_the_mutual_ceiling() -> None:
    tables = synth.generate("tiny", 0)
    counts = synth.event_counts(tables)
    assert counts["user_interactions"]["reply"] > 0 and counts["startup_interactions"]["reply"] > 0
    w, rng = build_world("tiny", 0)
    lists = {uc: shortlist(w, uc, w.spec.shortlist_k, rng) for uc in (*REVERSE, *FORWARD)}
    sim = simulate(w, rng, lists)
    plain = {e: int((sim["rev"]["event"] == e).sum()) for e in set(sim["rev"]["event"].tolist())}
    assert {e: n for e, n in counts["startup_interactions"].items() if e != "reply"} == plain
    oracle = tables["oracle"].to_pandas()
    rev = oracle[oracle.use_case.isin(REVERSE)]
    assert rev["mutual_rank"].notna().all() and oracle[oracle.use_case.isin(FORWARD)]["mutual_rank"].isna().all()
    dev = rev[rev.use_case == "startup_developer"]
    one = dev[dev.entity_id == dev.entity_id.iloc[0]].sort_values("mutual_rank")
    assert one["mutual_rank"].tolist() == list(range(1, len(one) + 1))
    assert np.all(np.diff(one["mutual_affinity"].to_numpy()) <= 0)
