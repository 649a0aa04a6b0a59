"""All three datasets for both reverse use cases from the tiny synthetic snapshot (synth -> extract)."""

import json

import numpy as np
import pandas as pd
import pytest

from startup_recs.core.usecases import REVERSE_USE_CASES
from startup_recs.data.split import TimeSplit
from startup_recs.datasets.als import build_als, load_als
from startup_recs.datasets.ranker import build_ranker
from startup_recs.datasets.two_tower import build_two_tower
from startup_recs.features import load_encoders


@pytest.mark.parametrize("use_case", REVERSE_USE_CASES)
def test_all_three_datasets_from_tiny(tiny_snapshot, tmp_path, use_case):
    from startup_recs.synth import EXAM_POWER

    tt = build_two_tower(tiny_snapshot, use_case, str(tmp_path / "tt.parquet"))
    als = build_als(tiny_snapshot, use_case, str(tmp_path / "als"), fit_window="train")
    rk = build_ranker(tiny_snapshot, use_case, str(tmp_path / "rk.parquet"))
    split = TimeSplit.from_json(tt["split"])
    assert TimeSplit.from_json(als["split"]) == split == TimeSplit.from_json(rk["split"])

    # two-tower: every part has positives, k negatives per positive, hard ones among them
    pairs = pd.read_parquet(tmp_path / "tt.parquet")
    for part in ("train", "val", "test"):
        assert tt["by_split"][part]["pos"] > 20
    assert tt["by_split"]["train"]["hard"] > 0.1 * tt["by_split"]["train"]["pos"]
    assert tt["negatives"] + tt["negatives_short"] == 5 * tt["positives"]
    assert (pairs.loc[pairs.split == "train", "ts"] < split.val_start).all()
    pair = load_encoders(str(tmp_path / "tt_vocab.json"))
    assert set(pair.entity.ids) == set(pairs.loc[pairs.split == "train", "entity_id"])
    assert pair.entity.vocab["sector"] and pair.candidate.vocab["location"]

    # ALS on the train window: the same entities and candidates as the two-tower train positives
    m, users, items = load_als(str(tmp_path / "als"), "_reverse")
    pos_train = pairs[(pairs.split == "train") & (pairs.label == 1)]
    assert set(users) == set(pos_train.entity_id) and set(items) == set(pos_train.candidate_id)
    assert m.nnz == len(pos_train)
    rows = np.array([users[e] for e in pos_train.entity_id])
    cols = np.array([items[c] for c in pos_train.candidate_id])
    np.testing.assert_allclose(np.asarray(m[rows, cols]).ravel(), pos_train.weight.to_numpy(), rtol=1e-5)

    # ranker: lists with positives in every part, position bias close to the planted examination
    ranker = pd.read_parquet(tmp_path / "rk.parquet")
    assert {"train", "val", "test"} == set(ranker.split)
    curve = json.loads((tmp_path / "rk_propensity.json").read_text())
    planted = 1.0 / (1.0 + np.arange(len(curve["propensity"]))) ** EXAM_POWER
    assert curve["estimated"] and np.abs(np.array(curve["propensity"]) - planted).max() < 0.1
    pos = ranker[ranker.label == 1]
    assert pos.groupby("position").weight.mean().is_monotonic_increasing
