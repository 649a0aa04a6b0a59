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


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_mutual_score_is_the_whole_contact_cascade_times_the_answer(world) -> None:
    """By hand: view (bias 0), click (-2.8) and contact (-3.6) by the startup's affinity, then
    the answer (-3.8) by the candidate's own affinity, multiplied (summed in log)."""
    w, _ = world
    s = np.array([0, 0, 3, 7])
    u = w.dev[[0, 5, 9, 11]]
    got = reciprocity.mutual_scores(w, "startup_developer", s, u[:, None])
    rev = w.affinity("startup_developer", s, u).astype(np.float64)
    fwd = w.affinity("developer_startup", s, u).astype(np.float64)
    want = np.log(_sig(rev) * _sig(rev - 2.8) * _sig(rev - 3.6) * _sig(fwd - 3.8))
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-5)


def test_within_a_startup_the_forward_affinity_is_the_reverse_one_less_candidate_quality(world) -> None:
    """Why one startup's pool gains nothing from knowing the candidates' side (docs/contracts.md):
    the planted match and taste are symmetric, so ``fwd - rev`` is the startup's constant minus
    the candidate's quality term; only the reply's and the exposure's curvature differ."""
    from startup_recs.synth.world import C_QUAL

    w, _ = world
    for rev_uc, fwd_uc, users in (("startup_developer", "developer_startup", w.dev),
                                  ("startup_investor", "investor_startup", w.inv)):
        for s in (0, 17, 101):
            ss = np.full(len(users), s)
            diff = w.affinity(fwd_uc, ss, users) - w.affinity(rev_uc, ss, users) + C_QUAL * w.U.quality[users]
            assert np.ptp(diff) < 1e-4
