"""Per-request candidate filters: parsing, every returned candidate satisfies them, the widened
fallback, short answers, and 400-class errors naming the bad value (tiny marketplace, content and
popularity retrievers only: seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from startup_recs.data.snapshot import load_snapshot
from startup_recs.data.split import TimeSplit
from startup_recs.serving.api import InvalidRequest
from startup_recs.serving.data import ServingData
from startup_recs.serving.filters import CandidateFilter, allowed, parse_filters
from startup_recs.serving.recommender import Recommender
from startup_recs.serving.retrievers import load_retrievers


@pytest.fixture(scope="module")
def recs(tiny_snapshot: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Recommender]:
    snap = load_snapshot(tiny_snapshot)
    out = {}
    for uc in ("startup_developer", "startup_investor", "developer_startup"):
        split = TimeSplit.resolve(snap.events(uc)["ts"])
        data = ServingData.from_snapshot(snap, uc, until=split.split_at)
        empty = tmp_path_factory.mktemp(f"models-{uc}")  # no learned model: content and popularity
        out[uc] = Recommender(data, load_retrievers(str(empty), data))
    return out


def _busy(rec: Recommender) -> str:
    return max(rec.data.entity_counts, key=rec.data.entity_counts.get)


def _row(rec: Recommender, cid: str) -> dict:
    return rec.data.candidate_features.loc[cid].to_dict()


def test_parse_filters_splits_commas_lists_and_checks_the_use_case() -> None:
    f = parse_filters({"location": "berlin, remote", "skills": ["python", "go,rust"], "exclude": "u1"},
                      "startup_developer")
    assert f == CandidateFilter(location=("berlin", "remote"), skills=("python", "go", "rust"), exclude=("u1",))
    assert f.to_dict() == {"location": ["berlin", "remote"], "skills": ["python", "go", "rust"], "exclude": ["u1"]}
    assert not parse_filters({}, "startup_developer")
    with pytest.raises(InvalidRequest, match="filter 'skills' does not apply to startup_investor"):
        parse_filters({"skills": "python"}, "startup_investor")
    with pytest.raises(InvalidRequest, match="filter 'sector' does not apply to startup_developer"):
        parse_filters({"sector": "ai"}, "startup_developer")
    with pytest.raises(InvalidRequest, match="filter 'location' has no value"):
        parse_filters({"location": " , "}, "startup_developer")
    with pytest.raises(InvalidRequest, match="comma-separated"):
        parse_filters({"stage": 3}, "investor_startup")


def test_every_returned_candidate_satisfies_the_filters(recs) -> None:
    rec = recs["startup_developer"]
    sid = _busy(rec)
    plain = rec.recommend(sid, 20)
    excluded = plain["candidates"][0]["id"]
    f = parse_filters({"location": "london,berlin", "skills": "python,sql", "exclude": excluded}, rec.use_case)
    ans = rec.recommend(sid, 20, filters=f)
    assert ans["candidates"], ans
    for c in ans["candidates"]:
        row = _row(rec, c["id"])
        assert row["location"] in ("london", "berlin")
        assert {"python", "sql"} & set(row["skills"])
        assert c["id"] != excluded
    assert ans["filters"]["applied"] == f.to_dict()
    assert ans["filters"]["matching"] == int(allowed(rec.data, f).sum())
    assert [c["rank"] for c in ans["candidates"]] == list(range(1, len(ans["candidates"]) + 1))
    excluded = set(rec.data.candidate_ids[rec.data.exclusions(sid)])
    assert not excluded & {c["id"] for c in ans["candidates"]}
    assert "filters" not in plain  # no filter: the default shape


def test_investor_and_forward_filters_read_their_own_columns(recs) -> None:
    inv = recs["startup_investor"]
    f = parse_filters({"sector": "fintech", "stage": "seed"}, inv.use_case)
    ans = inv.recommend(_busy(inv), 10, filters=f)
    assert ans["candidates"]
    for c in ans["candidates"]:
        row = _row(inv, c["id"])
        assert "fintech" in list(row["sectors"]) and "seed" in list(row["stages"])
    fwd = recs["developer_startup"]
    f = parse_filters({"sector": "ai,saas", "stage": "seed"}, fwd.use_case)
    ans = fwd.recommend(_busy(fwd), 10, filters=f)
    assert ans["candidates"]
    for c in ans["candidates"]:
        row = _row(fwd, c["id"])
        assert row["sector"] in ("ai", "saas") and row["stage"] == "seed"


def test_a_filter_that_empties_the_pool_widens_the_retrieval(recs) -> None:
    rec = recs["startup_developer"]
    sid = _busy(rec)
    pool = {c["id"] for c in rec.recommend(sid, 100)["candidates"]}
    data = rec.data
    # the rarest location among the candidates outside the routed pool: the pool holds none of it
    outside = [c for c in data.candidate_ids if c not in pool]
    locs = data.candidate_features.loc[outside, "location"].value_counts()
    pool_locs = set(data.candidate_features.loc[list(pool), "location"])
    rare = next(loc for loc in locs.index[::-1] if loc not in pool_locs)
    small = rec.n_retrieve
    rec.n_retrieve = 100  # the pool = the 100 shown above
    try:
        ans = rec.recommend(sid, 5, filters=parse_filters({"location": rare}, rec.use_case))
    finally:
        rec.n_retrieve = small
    assert ans["filters"]["widened"] is True
    assert ans["candidates"], "a filter that removes the whole pool must not give an empty answer"
    assert all(_row(rec, c["id"])["location"] == rare for c in ans["candidates"])
    matching = ans["filters"]["matching"]
    assert ans["filters"]["short"] is (ans["total"] < 5)
    assert ans["total"] <= matching


def test_short_answers_say_so(recs) -> None:
    rec = recs["startup_developer"]
    sid = _busy(rec)
    ok = allowed(rec.data, parse_filters({"skills": "python"}, rec.use_case))
    keep = rec.data.candidate_ids[ok][:3].tolist()  # exclude every python developer but three
    rest = rec.data.candidate_ids[ok][3:].tolist()
    ans = rec.recommend(sid, 10, filters=parse_filters({"skills": "python", "exclude": rest}, rec.use_case))
    assert ans["filters"]["short"] is True and ans["total"] < 10
    assert {c["id"] for c in ans["candidates"]} <= set(keep)


def test_unknown_values_are_invalid_requests_naming_the_value(recs) -> None:
    rec = recs["startup_developer"]
    sid = _busy(rec)
    with pytest.raises(InvalidRequest, match="unknown location 'atlantis'"):
        rec.recommend(sid, 5, filters=parse_filters({"location": "atlantis"}, rec.use_case))
    with pytest.raises(InvalidRequest, match="unknown skills 'cobol'"):
        rec.recommend(sid, 5, filters=parse_filters({"skills": "python,cobol"}, rec.use_case))
    # case does not matter; unknown exclude ids are simply not there to exclude
    upper = rec.recommend(sid, 5, filters=parse_filters({"location": "LONDON", "exclude": "nobody"}, rec.use_case))
    assert all(_row(rec, c["id"])["location"] == "london" for c in upper["candidates"])
    assert np.all(allowed(rec.data, CandidateFilter()))
