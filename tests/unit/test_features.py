"""Feature specs, the encoder (train-only vocabularies, JSON round trip) and match features."""

import json

import numpy as np
import pandas as pd
import pytest

from startup_recs.core.errors import ModelMismatchError
from startup_recs.features.encoders import (
    FeatureEncoder,
    PairEncoder,
    encode_side,
    load_encoders,
    save_encoders,
)
from startup_recs.features.match import match_features, match_reasons
from startup_recs.features.specs import SPECS, infer_spec, spec_for

STARTUPS = pd.DataFrame({
    "sector": ["fintech", "ai", None, "bio"],
    "stage": ["seed", "series_a", "seed", "seed"],
    "location": ["Berlin", "Paris", "Berlin", "Lisbon"],
    "skills_needed": [["python", "ml"], ["go"], None, ["rust", "python", "sql"]],
    "funding_usd": [1e6, 1e7, np.nan, 1e5],
}, index=pd.Index(["s1", "s2", "s3", "s4"], name="entity_id"))
DEVS = pd.DataFrame({
    "skills": [["python", "ml", "sql"], ["go", "python"], [], ["haskell"]],
    "location": ["Berlin", None, "Paris", "Berlin"],
    "experience_years": [3.0, 10.0, 1.0, 5.0],
}, index=pd.Index(["d1", "d2", "d3", "d4"], name="candidate_id"))
INVESTORS = pd.DataFrame({
    "sectors": [["fintech", "ai"], ["bio"]],
    "stages": [["seed"], ["series_a"]],
    "location": ["Paris", "Berlin"],
    "check_size_usd": [1e5, 1e6],
}, index=["i1", "i2"])


def test_fit_uses_only_train_ids_and_index_zero_is_unknown():
    enc = FeatureEncoder.fit(STARTUPS, SPECS["startup"], ids=["s1", "s2"])
    assert enc.ids == ["s1", "s2"] and enc.n_ids == 3
    assert sorted(enc.vocab["sector"]) == ["ai", "fintech"]  # "bio" only on s4: not a train id
    assert "rust" not in enc.vocab["skills_needed"]
    out = enc.transform(STARTUPS)
    assert out["id"].tolist() == [1, 2, 0, 0]  # s3, s4 unseen in training -> 0
    assert out["sector"].dtype == np.int64 and out["sector"][3] == 0 and out["sector"][2] == 0
    assert out["skills_needed"].shape == (4, 2)  # max train list length
    # s4 [rust, python, sql]: rust and sql unknown -> dropped, python kept, padded with 0
    py = enc.vocab["skills_needed"].index("python") + 1
    assert out["skills_needed"][3].tolist() == [py, 0]
    assert out["skills_needed"][2].tolist() == [0, 0]


def test_numeric_log1p_standardised_on_train_rows():
    enc = FeatureEncoder.fit(STARTUPS, SPECS["startup"], ids=["s1", "s2"])
    x = np.log1p([1e6, 1e7])
    st = enc.numeric["funding_usd"]
    assert st["log1p"] and st["mean"] == pytest.approx(x.mean()) and st["std"] == pytest.approx(x.std())
    f = enc.transform(STARTUPS)["funding_usd"]
    assert f.dtype == np.float32
    assert f[:2].tolist() == pytest.approx([-1.0, 1.0], abs=1e-5)
    assert f[2] == 0.0  # missing -> the train mean
    dev = FeatureEncoder.fit(DEVS, SPECS["developer"]).transform(DEVS)["experience_years"]
    e = np.array([3.0, 10, 1, 5])
    assert dev.tolist() == pytest.approx(((e - e.mean()) / e.std()).tolist(), abs=1e-5)


def test_json_round_trip_gives_identical_arrays_and_no_pickle():
    enc = FeatureEncoder.fit(STARTUPS, SPECS["startup"], ids=["s1", "s2", "s4"])
    text = enc.to_json()
    json.loads(text)  # plain JSON
    back = FeatureEncoder.from_json(text)
    a, b = enc.transform(STARTUPS), back.transform(STARTUPS)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert FeatureEncoder.from_json(json.loads(text)).vocab == enc.vocab
    with pytest.raises(ModelMismatchError):
        FeatureEncoder.from_json('{"format": "other"}')


def test_transform_by_ids_missing_rows_are_unknown():
    enc = FeatureEncoder.fit(STARTUPS, SPECS["startup"], ids=["s1", "s2"])
    out = enc.transform(STARTUPS, ids=["s2", "zz"])
    assert out["id"].tolist() == [2, 0]
    assert out["sector"][1] == 0 and out["funding_usd"][1] == 0.0
    assert enc.encode_ids(np.array(["s1", "nope"], dtype=object)).tolist() == [1, 0]


def test_id_only_encoder():
    enc = FeatureEncoder.fit(None, None, ids=["b", "a"])
    assert enc.ids == ["a", "b"] and enc.spec.empty
    out = enc.transform(None, ids=["a", "c", "b"])
    assert out == {"id": out["id"]} and out["id"].tolist() == [1, 0, 2]


def test_pair_encoder_and_encode_side_accept_sidecar_layout(tmp_path):
    side = STARTUPS.reset_index()  # entity_id column, as the X_entities.parquet sidecar has it
    pair = PairEncoder.fit(side, DEVS, ["s1", "s2"], ["d1", "d2"], entity_kind="startup", candidate_kind="developer")
    assert pair.entity.spec == SPECS["startup"] and pair.candidate.spec == SPECS["developer"]
    ids, feats = encode_side(pair, "entity", side)
    assert ids.tolist() == [1, 2, 0, 0] and set(feats) == set(SPECS["startup"].columns)
    save_encoders(str(tmp_path / "v.json"), pair)
    back = load_encoders(str(tmp_path / "v.json"))
    ids2, feats2 = encode_side(back, "entity", side)
    assert np.array_equal(ids, ids2) and all(np.array_equal(feats[k], feats2[k]) for k in feats)


def test_infer_spec_of_imported_tables():
    df = pd.DataFrame({"city": ["a", "b"], "tags": [["x"], ["y", "z"]], "pipe": ["x|y", "z"],
                       "price": [1.0, 2e6], "age": [3, 4], "when": pd.to_datetime(["2026-01-01", "2026-01-02"]),
                       "empty": [None, None]})
    spec = infer_spec(df)
    assert spec.categorical == ("city",) and spec.multi == ("tags", "pipe") and spec.numeric == ("price", "age")
    assert spec.log1p == ("price",)
    enc = FeatureEncoder.fit(df, spec)
    out = enc.transform(df)
    assert out["pipe"].shape == (2, 2) and (out["pipe"][0] > 0).all()
    assert spec_for(DEVS, "developer") == SPECS["developer"]
    assert spec_for(df, "developer").kind == "imported" and spec_for(df, "developer").multi == ("tags", "pipe")


def test_match_features_developer_known_values():
    X, names = match_features("startup_developer", STARTUPS.loc["s1"], DEVS)
    assert names == ["skills_overlap", "skills_jaccard", "skills_coverage", "same_location"]
    assert X.dtype == np.float32 and X.shape == (4, 4)
    np.testing.assert_allclose(X[0], [2, 2 / 3, 1.0, 1.0], rtol=1e-6)  # {python, ml} vs {python, ml, sql}, Berlin
    np.testing.assert_allclose(X[1], [1, 1 / 3, 0.5, 0.0], rtol=1e-6)  # python; location unknown
    np.testing.assert_allclose(X[2], [0, 0, 0, 0])
    np.testing.assert_allclose(X[3], [0, 0, 0, 1])
    # forward twin: the developer is the entity, startups the candidates; same numbers per pair
    Xf, names_f = match_features("developer_startup", DEVS.loc["d1"], STARTUPS)
    assert names_f == names
    np.testing.assert_allclose(Xf[0], X[0])
    np.testing.assert_allclose(Xf[3], [2, 0.5, 2 / 3, 0])  # {rust, python, sql} vs {python, ml, sql}


def test_match_features_investor_and_aligned_rows():
    X, names = match_features("startup_investor", STARTUPS.loc["s1"], INVESTORS)
    assert names == ["sector_match", "stage_match", "same_location", "check_log_ratio", "check_fit"]
    np.testing.assert_allclose(X[0], [1, 1, 0, np.log(0.1), 1], rtol=1e-6)
    np.testing.assert_allclose(X[1], [0, 0, 1, 0, 0], atol=1e-6)  # check = funding: ratio 1 -> no fit
    # one entity per candidate row (evaluation scoring many pairs at once)
    Xa, _ = match_features("startup_investor", STARTUPS.loc[["s2", "s4"]], INVESTORS)
    np.testing.assert_allclose(Xa[0], [1, 0, 1, np.log(0.01), 1], rtol=1e-6)
    np.testing.assert_allclose(Xa[1], [1, 0, 0, np.log(10), 0], rtol=1e-6)
    # per-pair rows equal the broadcast computation
    for i, s in enumerate(["s2", "s4"]):
        Xb, _ = match_features("startup_investor", STARTUPS.loc[s], INVESTORS)
        np.testing.assert_allclose(Xa[i], Xb[i])
    with pytest.raises(ValueError):
        match_features("startup_investor", STARTUPS.iloc[:3], INVESTORS)


def test_match_features_vectorised_matches_pairwise_on_many_rows():
    rng = np.random.default_rng(0)
    skills = ["a", "b", "c", "d", "e"]
    cands = pd.DataFrame({"skills": [list(rng.choice(skills, rng.integers(0, 4), replace=False)) for _ in range(200)],
                          "location": rng.choice(["x", "y", None], 200), "experience_years": 1.0})
    ent = pd.Series({"skills_needed": ["a", "c"], "location": "x"})
    X, _ = match_features("startup_developer", ent, cands)
    for i in range(0, 200, 17):
        ov = len({"a", "c"} & set(cands.skills[i]))
        union = len({"a", "c"} | set(cands.skills[i]))
        assert X[i, 0] == ov and X[i, 1] == pytest.approx(ov / union if union else 0)
        assert X[i, 3] == (cands.location[i] == "x")


def test_match_reasons_from_the_same_terms():
    assert match_reasons("startup_developer", STARTUPS.loc["s1"], DEVS.loc["d1"]) == [
        "skills: ml, python", "same location: Berlin"]
    assert match_reasons("startup_developer", STARTUPS.loc["s1"], DEVS.loc["d3"]) == []
    assert match_reasons("startup_investor", STARTUPS.loc["s1"], INVESTORS.loc["i1"]) == [
        "sector: fintech", "stage: seed", "check size $100k fits funding $1.0M"]
    assert match_reasons("investor_startup", INVESTORS.loc["i1"], STARTUPS.loc["s1"]) == [
        "sector: fintech", "stage: seed", "check size $100k fits funding $1.0M"]
    assert match_reasons("startup_developer", None, DEVS.loc["d1"]) == []


def test_id_only_and_generic_imported_features():
    X, names = match_features("startup_developer", None, DEVS)
    assert X.shape == (4, 0) and names == []
    ents = pd.DataFrame({"city": ["x"], "tags": [["p", "q"]]}, index=["e1"])
    cands = pd.DataFrame({"city": ["x", "y"], "tags": [["q"], ["r"]], "price": [1.0, 2.0]}, index=["c1", "c2"])
    X, names = match_features("startup_developer", ents.loc["e1"], cands)
    assert names == ["same_city", "tags_overlap", "tags_jaccard", "tags_coverage"]
    np.testing.assert_allclose(X[0], [1, 1, 0.5, 0.5])
    np.testing.assert_allclose(X[1], [0, 0, 0, 0])
    assert match_reasons("startup_developer", ents.loc["e1"], cands.loc["c1"]) == ["same city: x", "tags: q"]
    X, names = match_features("startup_developer", pd.Series({"a": 1.0}), pd.DataFrame({"b": [1.0]}))
    assert X.shape == (1, 0)


def test_transform_with_missing_feature_column_is_a_mismatch():
    enc = FeatureEncoder.fit(STARTUPS, SPECS["startup"])
    with pytest.raises(ModelMismatchError, match="lack column"):
        enc.transform(STARTUPS.drop(columns=["stage"]))
    pair = PairEncoder.fit(STARTUPS, DEVS, entity_kind="startup", candidate_kind="developer")
    with pytest.raises(ModelMismatchError, match="PairEncoder"):
        FeatureEncoder.from_json(pair.to_json())


def test_match_reasons_batch_equals_per_pair():
    from startup_recs.features.match import match_reasons_batch

    for uc, ent, cands in (("startup_developer", STARTUPS.loc["s1"], DEVS), ("startup_investor", STARTUPS.loc["s1"], INVESTORS),
                           ("developer_startup", DEVS.loc["d1"], STARTUPS), ("investor_startup", INVESTORS.loc["i1"], STARTUPS)):
        batch = match_reasons_batch(uc, ent, cands)
        assert batch == [match_reasons(uc, ent, cands.iloc[i]) for i in range(len(cands))]
    assert match_reasons_batch("startup_developer", None, DEVS) == [[], [], [], []]


def test_token_column_pairs_follow_the_match_terms_in_both_directions():
    from startup_recs.features import token_column_pairs

    startup_cols, dev_cols = ["sector", "stage", "location", "skills_needed"], ["location", "skills"]
    assert token_column_pairs("startup_developer", startup_cols, dev_cols) == [
        ("skills_needed", "skills"), ("location", "location")]
    # forward: the developer is the entity, so each pair is (developer field, startup field)
    assert token_column_pairs("developer_startup", dev_cols, startup_cols) == [
        ("skills", "skills_needed"), ("location", "location")]
    assert token_column_pairs("startup_investor", startup_cols, ["sectors", "stages", "location"]) == [
        ("sector", "sectors"), ("stage", "stages"), ("location", "location")]
    # a side without the known columns: imported tables pair their same-named columns
    assert token_column_pairs("startup_developer", ["tags", "city"], ["city", "tags", "brand"]) == [
        ("city", "city"), ("tags", "tags")]
    assert token_column_pairs("startup_developer", [], ["skills"]) == []
