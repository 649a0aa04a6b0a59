"""The reciprocal scorer: fusion and calibration computed by hand, forward percentiles, the
logistic fit, the file round trip, and a reciprocal answer of a real recommender (tiny data)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from startup_recs.evaluation.reciprocal_fit import _ranked, fit_logistic
from startup_recs.serving.reciprocal import (
    Calibration,
    ReciprocalScorer,
    forward_percentiles,
    fuse,
    logit,
    pool_z,
)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_fusions_by_hand() -> None:
    p, q = np.array([0.5, 0.9, 0.2]), np.array([0.25, 0.1, 0.2])
    np.testing.assert_allclose(fuse("harmonic", p, q), [2 * 0.125 / 0.75, 2 * 0.09 / 1.0, 0.2])
    np.testing.assert_allclose(fuse("product", p, q), [0.125, 0.09, 0.04])
    w = (-1.0, 2.0, 0.5)
    by_hand = [_sig(-1.0 + 2.0 * math.log(pi / (1 - pi)) + 0.5 * math.log(qi / (1 - qi)))
               for pi, qi in zip(p, q, strict=True)]
    np.testing.assert_allclose(fuse("learned", p, q, w), by_hand)
    # the harmonic mean punishes one-sided interest: (0.9, 0.1) ranks below (0.5, 0.25)
    assert np.argsort(-fuse("harmonic", p, q)).tolist()[0] == 0
    with pytest.raises(Exception, match="unknown reciprocal fusion"):
        fuse("max", p, q)


def test_calibration_pool_z_and_logit_by_hand() -> None:
    cal = Calibration(a=2.0, b=-1.0, prior=0.3)
    np.testing.assert_allclose(cal(np.array([0.0, 1.0, np.nan])), [_sig(-1.0), _sig(1.0), 0.3])
    np.testing.assert_allclose(pool_z(np.array([1.0, 2.0, 3.0])), [-1.224744871, 0.0, 1.224744871])
    assert pool_z(np.array([5.0])).tolist() == [0.0] and pool_z(np.array([2.0, 2.0])).tolist() == [0.0, 0.0]
    np.testing.assert_allclose(logit(np.array([0.5, 0.75])), [0.0, math.log(3)])
    assert np.isfinite(logit(np.array([0.0, 1.0]))).all()  # clipped


class _Retriever:
    def __init__(self, rows: dict[str, list[float]]) -> None:
        self.rows = rows

    def score(self, ids: list[str]) -> np.ndarray:
        return np.array([self.rows[i] for i in ids], np.float32)


def _forward() -> SimpleNamespace:
    """A forward recommender of two users over five startups; u2 takes another route."""
    startups = ["s0", "s1", "s2", "s3", "s4"]
    data = SimpleNamespace(n_candidates=5, candidate_positions=lambda ids: np.array(
        [startups.index(i) if i in startups else -1 for i in ids], np.int64))
    routes = {"u1": ("hot", "als"), "u2": ("cold", "content")}
    return SimpleNamespace(data=data, router=SimpleNamespace(route=lambda u: routes[u]), retrievers={
        "als": _Retriever({"u1": [0.1, 0.5, 0.9, 0.3, 0.5]}),
        "content": _Retriever({"u2": [4.0, 3.0, 2.0, 1.0, 0.0]})})


def test_forward_percentiles_by_hand() -> None:
    pct = forward_percentiles(_forward(), ["u1", "u1", "u2", "u2", "u1"], ["s2", "s1", "s0", "s4", "nope"])
    # u1: s2 (0.9) beats all 4 others -> 4/4; s1 (0.5) beats 0.1, 0.3, ties s4 -> (2 + 0.5) / 4
    # u2: s0 is its best -> 1; s4 its worst -> 0; an unknown startup -> NaN
    np.testing.assert_allclose(pct[:4], [1.0, 2.5 / 4, 1.0, 0.0])
    assert np.isnan(pct[4])


def test_reciprocal_rank_of_a_pool_by_hand() -> None:
    scorer = ReciprocalScorer("product", Calibration(1.0, 0.0), Calibration(1.0, 0.0, prior=0.5))
    order, fused, p, q = scorer.rank(_forward(), "s2", ["u1", "u2"], np.array([1.0, 3.0]))
    # reverse: z = [-1, 1] -> p = sigmoid; forward: u1 ranks s2 first (pct 1 -> clipped), u2 in the middle
    np.testing.assert_allclose(p, [_sig(-1.0), _sig(1.0)])
    np.testing.assert_allclose(q, [1 - 1e-4, 0.5], rtol=1e-6)
    np.testing.assert_allclose(fused, p * q)
    assert order.tolist() == [1, 0]


def test_a_segment_chosen_one_sided_keeps_the_reverse_order() -> None:
    """u1 is lukewarm about s4 (q = 0.625), u2 ranks it last (q ~ 0): the product puts u1 first;
    a segment whose validation kept the one-sided order ranks by p alone (u2's higher reverse
    score first)."""
    scorer = ReciprocalScorer("product", Calibration(1.0, 0.0), Calibration(1.0, 0.0, prior=0.5),
                              by_segment={"cold": "reverse_only", "hot": "product"})
    pool = (_forward(), "s4", ["u1", "u2"], np.array([2.9, 3.0]))
    assert scorer.rank(*pool, segment="hot")[0].tolist() == [0, 1]
    assert scorer.rank(*pool)[0].tolist() == [0, 1]  # no segment: the overall method
    order, fused, p, _ = scorer.rank(*pool, segment="cold")
    assert order.tolist() == [1, 0] and np.array_equal(fused, p)
    assert scorer.method_for("warm") == "product" and scorer.method_for("cold") == "reverse_only"
    with pytest.raises(Exception, match="unknown segment fusion"):
        ReciprocalScorer.from_dict({**scorer.to_dict(), "by_segment": {"cold": "max"}})


def test_fit_logistic_recovers_weights_and_handles_one_class() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 2))
    y = rng.random(20_000) < 1 / (1 + np.exp(-(-0.5 + 1.5 * X[:, 0] - 1.0 * X[:, 1])))
    np.testing.assert_allclose(fit_logistic(X, y, l2=0.0), [-0.5, 1.5, -1.0], atol=0.08)
    w = fit_logistic(X[:10], np.zeros(10))
    assert w[1:].tolist() == [0.0, 0.0] and w[0] < -5


def test_ranked_orders_each_pool_by_score() -> None:
    idx = np.array([[7, 8, 9], [3, 4, -1]])
    rows = np.array([0, 0, 0, 1, 1])
    out = _ranked(idx, rows, np.array([0.1, 0.9, 0.5, 0.2, 0.8]), 2, 2)
    assert out.tolist() == [[8, 9], [4, 3]]


def test_scorer_file_round_trip(tmp_path) -> None:
    s = ReciprocalScorer("learned", Calibration(0.5, -2.0, 0.01), Calibration(0.3, -4.0, 0.02), (0.1, 1.0, 2.0),
                         "developer_startup", True, {"chosen": "learned"}, {"cold": "reverse_only", "hot": "learned"})
    s.save(str(tmp_path))
    t = ReciprocalScorer.load(str(tmp_path))
    assert t == s
    assert ReciprocalScorer.load(str(tmp_path / "none")) is None


def test_a_reverse_answer_with_the_forward_bundle_is_two_sided(tiny_snapshot: str, tmp_path) -> None:
    from startup_recs.data.snapshot import load_snapshot
    from startup_recs.data.split import TimeSplit
    from startup_recs.serving.data import ServingData
    from startup_recs.serving.recommender import Recommender
    from startup_recs.serving.retrievers import load_retrievers

    snap = load_snapshot(tiny_snapshot)
    recs = {}
    for uc in ("startup_developer", "developer_startup"):
        data = ServingData.from_snapshot(snap, uc, until=TimeSplit.resolve(snap.events(uc)["ts"]).split_at)
        (tmp_path / uc).mkdir()
        recs[uc] = Recommender(data, load_retrievers(str(tmp_path / uc), data))
    rev, fwd = recs["startup_developer"], recs["developer_startup"]
    sid = max(rev.data.entity_counts, key=rev.data.entity_counts.get)
    plain = rev.recommend(sid, 10)
    both = rev.recommend(sid, 10, forward=fwd)
    assert "reciprocal" not in plain and "scores" not in plain["candidates"][0]
    assert both["reciprocal"] == {"method": "harmonic", "fitted": False, "forward_model_version": "unversioned"}
    assert len(both["candidates"]) == 10
    for c in both["candidates"]:
        assert set(c["scores"]) == {"reverse", "forward"} and 0 < c["scores"]["forward"] < 1
        assert c["score"] == pytest.approx(2 * c["scores"]["reverse"] * c["scores"]["forward"]
                                           / (c["scores"]["reverse"] + c["scores"]["forward"]), rel=1e-5)
        assert isinstance(c["match_reasons_forward"], list)
    assert [c["score"] for c in both["candidates"]] == sorted((c["score"] for c in both["candidates"]), reverse=True)
    assert any(c["match_reasons_forward"] for c in both["candidates"])
