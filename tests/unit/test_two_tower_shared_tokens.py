"""The two-tower's shared-token tables: pairs from the match terms, tied weights, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from startup_recs.core.errors import ConfigError
from startup_recs.features import PairEncoder
from startup_recs.models.two_tower import (
    TokenPair,
    TwoTowerModel,
    encode_side,
    side_tensors,
    token_pairs,
    tower_spec,
)
from startup_recs.train.two_tower import TwoTowerConfig, train
from tests.unit.two_tower_data import make_dataset

torch.set_num_threads(1)
STARTUPS = pd.DataFrame({
    "sector": ["fintech", "ai", "bio"],
    "stage": ["seed", "seed", "series_a"],
    "location": ["berlin", "paris", "lisbon"],
    "skills_needed": [["python", "ml"], ["go"], ["rust", "python"]],
}, index=pd.Index(["s1", "s2", "s3"], name="entity_id"))
DEVS = pd.DataFrame({
    "skills": [["python", "sql"], ["go", "python"], ["haskell"], ["ml", "rust"]],
    "location": ["berlin", "tokyo", "paris", "berlin"],
    "experience_years": [3.0, 10.0, 1.0, 5.0],
}, index=pd.Index(["d1", "d2", "d3", "d4"], name="candidate_id"))


def encoder() -> PairEncoder:
    return PairEncoder.fit(STARTUPS, DEVS, list(STARTUPS.index), list(DEVS.index),
                           entity_kind="startup", candidate_kind="developer")


def model_of(enc: PairEncoder, dim: int = 64, **kw) -> TwoTowerModel:
    return TwoTowerModel(tower_spec(enc, "entity"), tower_spec(enc, "candidate"), dim, 32, 8,
                         pairs=token_pairs(enc, "startup_developer"), **kw)


def tensors(model: TwoTowerModel, enc: PairEncoder, side: str, frame: pd.DataFrame):
    ids, feats = encode_side(enc, side, frame.reset_index())
    return side_tensors((model.entity_tower if side == "entity" else model.candidate_tower).spec, ids, feats)


def test_token_pairs_map_one_token_to_one_shared_row_on_both_sides() -> None:
    enc = encoder()
    pairs = {(p.entity, p.candidate): p for p in token_pairs(enc, "startup_developer")}
    assert list(pairs) == [("skills_needed", "skills"), ("location", "location")]
    skills = pairs[("skills_needed", "skills")]
    ent_vocab, cand_vocab = enc.side("entity").vocab["skills_needed"], enc.side("candidate").vocab["skills"]
    shared = sorted(set(ent_vocab) | set(cand_vocab))  # go haskell ml python rust sql
    assert skills.n_tokens == len(shared) + 1 and skills.entity_map[0] == skills.candidate_map[0] == 0
    for vocab, code_map in ((ent_vocab, skills.entity_map), (cand_vocab, skills.candidate_map)):
        assert [shared[i - 1] for i in code_map[1:]] == vocab  # code i+1 -> the same token's row
    assert TokenPair.from_json(json.loads(json.dumps(skills.to_json()))) == skills


def test_a_pair_without_a_common_token_is_left_out() -> None:
    devs = DEVS.assign(location=["oslo", "rome", "oslo", "rome"])
    enc = PairEncoder.fit(STARTUPS, devs, list(STARTUPS.index), list(devs.index),
                          entity_kind="startup", candidate_kind="developer")
    assert [(p.entity, p.candidate) for p in token_pairs(enc, "startup_developer")] == [("skills_needed", "skills")]


def test_towers_share_one_table_and_start_at_the_token_overlap() -> None:
    enc = encoder()
    torch.manual_seed(0)
    model = model_of(enc, dim=4096, pair_init=1.0)
    for p in model.pairs:
        assert model.entity_tower.pair_emb[p.key].weight is model.candidate_tower.pair_emb[p.key].weight
    assert len(list(model.parameters())) == len({id(t) for t in model.parameters()})  # tied, counted once
    with torch.no_grad():
        e = model.entity_tower.shared_tokens(tensors(model, enc, "entity", STARTUPS))
        c = model.candidate_tower.shared_tokens(tensors(model, enc, "candidate", DEVS))
    dot = (e @ c.T).numpy()
    # shared skills + same location, from the raw rows
    overlap = np.array([[len(set(s) & set(d)) + (ls == ld) for d, ld in zip(DEVS.skills, DEVS.location, strict=True)]
                        for s, ls in zip(STARTUPS.skills_needed, STARTUPS.location, strict=True)])
    # near-orthogonal random rows of norm 1 in 4096 dimensions: cross terms ~ N(0, 1/64)
    assert np.abs(dot - overlap).max() < 0.25, (dot.round(2), overlap)


def test_round_trip_keeps_the_tie_and_the_scores(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "models"
    config = train(TwoTowerConfig(epochs=2, batch_size=64, embedding_dim=16, hidden_dim=32, feature_dim=8,
                                  progress=False), str(data), str(out))
    assert [(p["entity"], p["candidate"]) for p in config["model"]["pairs"]] == [
        ("skills_needed", "skills"), ("location", "location")]
    model = TwoTowerModel.from_dir(str(out), "startup_developer")
    for p in model.pairs:
        assert model.entity_tower.pair_emb[p.key].weight is model.candidate_tower.pair_emb[p.key].weight
    cands = pd.read_parquet(str(data).replace(".parquet", "_candidates.parquet"))
    saved = np.load(out / "two_tower_reverse_v1_candidate_embeddings.npy", allow_pickle=False)
    np.testing.assert_allclose(model.encode_candidates(cands), saved, atol=1e-6)
    # a config written before shared tokens (no "pairs") still builds the same towers without them
    old = json.loads((out / "two_tower_reverse_v1_config.json").read_text())
    del old["model"]["pairs"]
    assert TwoTowerModel.from_config(old).pairs == ()


def test_shared_tokens_can_be_turned_off_and_bad_init_is_refused(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    config = train(TwoTowerConfig(epochs=1, batch_size=64, embedding_dim=16, hidden_dim=32, feature_dim=8,
                                  progress=False, shared_tokens=False), str(data), str(tmp_path / "m"))
    assert config["model"]["pairs"] == [] and config["hyperparameters"]["shared_tokens"] is False
    with pytest.raises(ConfigError, match="--pair-init"):
        TwoTowerConfig(pair_init=0.0).validate()
