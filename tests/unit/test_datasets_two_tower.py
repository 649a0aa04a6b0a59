"""Two-tower pairs: known rows on a hand-made snapshot, unseen negatives, no leakage, bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from startup_recs.core.errors import ConfigError, DataError
from startup_recs.data.snapshot import load_snapshot
from startup_recs.data.split import TimeSplit
from startup_recs.datasets.two_tower import build_two_tower
from startup_recs.features import load_encoders
from tests.unit.dataset_helpers import day, db_snapshot, events_snapshot, random_db_snapshot

SPLIT = dict(split_at=day(50), val_days=10)


@pytest.fixture
def built(tmp_path):
    out = str(tmp_path / "tt.parquet")
    stats = build_two_tower(db_snapshot(tmp_path / "snap"), "startup_developer", out, negative_samples=2, **SPLIT)
    return out, stats, pd.read_parquet(out)


def rows_of(df, split, neg_type):
    sel = df[(df.split == split) & (df.neg_type == neg_type)]
    return sorted(zip(sel.entity_id, sel.candidate_id, strict=True))


def test_known_rows(built):
    out, stats, df = built
    assert list(df.columns) == ["entity_id", "candidate_id", "label", "weight", "neg_type", "ts", "split"]
    assert df.label.dtype == np.int8 and df.weight.dtype == np.float32
    # positives: pair in the part of its first event; s2-d2 (click train, contact val) stays train
    assert rows_of(df, "train", "pos") == [("s1", "d1"), ("s1", "d2"), ("s2", "d2"), ("s2", "d5"), ("s3", "d3")]
    assert rows_of(df, "val", "pos") == [("s1", "d3"), ("s1", "d6")]
    assert rows_of(df, "test", "pos") == [("s1", "d4")]  # s4 has no train event: dropped
    # weights: summed within the pair's part only (s2-d2: click 2; its val contact is later)
    w = df[df.label == 1].set_index(["entity_id", "candidate_id"]).weight
    assert w[("s1", "d1")] == 7.0 and w[("s2", "d2")] == 2.0 and w[("s2", "d5")] == 10.0
    assert (df.loc[df.label == 0, "weight"] == 1.0).all()
    # hard negatives: shown in a session of that part and not interacted with by its end
    assert rows_of(df, "train", "hard") == [("s1", "d5"), ("s1", "d6"), ("s2", "d7"), ("s3", "d6"), ("s3", "d7")]
    assert rows_of(df, "val", "hard") == [("s1", "d7")]
    # random negatives: from candidates known by the end of the part, unseen by the entity
    assert rows_of(df, "train", "random") == [("s1", "d3"), ("s2", "d1"), ("s2", "d3")]
    assert rows_of(df, "val", "random") == [("s1", "d5")]
    assert rows_of(df, "test", "random") == [("s1", "d5")]
    assert stats["negatives_short"] == 5 and stats["dropped_entities"] == 1
    assert stats["rows"] == len(df) == 19


def test_sidecars_and_train_only_vocab(built):
    out, stats, df = built
    stem = out[: -len(".parquet")]
    ents = pd.read_parquet(f"{stem}_entities.parquet")
    cands = pd.read_parquet(f"{stem}_candidates.parquet")
    assert ents.entity_id.tolist() == ["s1", "s2", "s3", "s4"] and "skills_needed" in ents.columns
    assert cands.candidate_id.tolist() == [f"d{i}" for i in range(1, 8)] and "skills" in cands.columns
    pair = load_encoders(f"{stem}_vocab.json")
    train = df[df.split == "train"]
    assert pair.entity.ids == sorted(train.entity_id.unique()) == ["s1", "s2", "s3"]
    assert pair.candidate.ids == sorted(train.candidate_id.unique())
    assert "d4" not in pair.candidate.ids  # first seen in test
    assert "rust" not in pair.entity.vocab["skills_needed"]  # only s4 (no train rows) needs rust
    assert "Lisbon" not in pair.candidate.vocab["location"]  # only d4
    with open(f"{stem}_meta.json") as fh:
        meta = json.load(fh)
    assert meta["use_case"] == "startup_developer" and meta["entity_kind"] == "startup"
    assert TimeSplit.from_json(meta["split"]) == TimeSplit(day(40), day(50))
    assert meta["by_split"]["train"] == {"pos": 5, "hard": 5, "random": 3}
    assert meta["entity_spec"]["multi"] == ["skills_needed"]


def test_negatives_are_really_unseen_and_nothing_leaks(tmp_path):
    uri = random_db_snapshot(tmp_path / "snap", seed=3)
    out = str(tmp_path / "tt.parquet")
    stats = build_two_tower(uri, "startup_developer", out, negative_samples=4, seed=1)
    df = pd.read_parquet(out)
    split = TimeSplit.from_json(stats["split"])
    ev = load_snapshot(uri).events("startup_developer")
    ev = ev.assign(part=split.codes(ev.ts))
    first = ev.groupby(["entity_id", "candidate_id"]).part.min()
    code = {"train": 0, "val": 1, "test": 2}
    neg = df[df.label == 0]
    fp = first.reindex(pd.MultiIndex.from_arrays([neg.entity_id, neg.candidate_id])).to_numpy()
    # no negative was interacted with by its entity up to the end of the negative's own part
    assert np.all(np.isnan(fp) | (fp > neg.split.map(code).to_numpy()))
    # random negatives come from candidates known by the end of their part
    first_c = ev.groupby("candidate_id").part.min()
    rnd = neg[neg.neg_type == "random"]
    assert (first_c.reindex(rnd.candidate_id).to_numpy() <= rnd.split.map(code).to_numpy()).all()
    # no duplicate rows, and at most k negatives per positive per (entity, part)
    assert not df.duplicated(["entity_id", "candidate_id", "split", "label"]).any()
    per = df.assign(label=df.label.astype(int)).groupby(["entity_id", "split"]).label.agg(["sum", "size"])
    assert ((per["size"] - per["sum"]) <= 4 * per["sum"]).all()
    # every train row lies before the validation start; positives carry the first-event part
    assert (df.loc[df.split == "train", "ts"] < split.val_start).all()
    pos = df[df.label == 1]
    assert (pos.split.map(code).to_numpy() == first.reindex(pd.MultiIndex.from_arrays(
        [pos.entity_id, pos.candidate_id])).to_numpy()).all()
    assert stats["hard_negatives"] > 0 and stats["random_negatives"] > 0


def test_deterministic_for_a_seed(tmp_path):
    uri = random_db_snapshot(tmp_path / "snap", seed=1)
    a = build_two_tower(uri, "startup_developer", str(tmp_path / "a.parquet"), seed=5)
    b = build_two_tower(uri, "startup_developer", str(tmp_path / "b.parquet"), seed=5)
    assert a["rows"] == b["rows"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet"))


def test_min_interactions_and_empty_result(tmp_path):
    uri = db_snapshot(tmp_path / "snap")
    stats = build_two_tower(uri, "startup_developer", str(tmp_path / "m.parquet"), min_interactions=3, **SPLIT)
    df = pd.read_parquet(tmp_path / "m.parquet")
    assert set(df.entity_id) == {"s1", "s2"}  # s1: 3 train events, s2: 3; s3: 1
    assert stats["dropped_entities"] == 2
    with pytest.raises(DataError, match="at least 4 interaction"):
        build_two_tower(uri, "startup_developer", str(tmp_path / "e.parquet"), min_interactions=4, **SPLIT)
    assert not (tmp_path / "e.parquet").exists() and not (tmp_path / "e_meta.json").exists()


def test_forward_and_investor_use_cases(tmp_path):
    uri = db_snapshot(tmp_path / "snap")
    stats = build_two_tower(uri, "startup_investor", str(tmp_path / "i.parquet"), negative_samples=1,
                            split_at=day(45), val_days=10)
    df = pd.read_parquet(tmp_path / "i.parquet")
    assert rows_of(df, "train", "pos") == [("s1", "i1")] and rows_of(df, "train", "hard") == [("s1", "i2")]
    assert stats["candidate_kind"] == "investor"
    build_two_tower(uri, "developer_startup", str(tmp_path / "f.parquet"), **SPLIT)
    fwd = pd.read_parquet(tmp_path / "f.parquet")
    assert rows_of(fwd, "train", "pos") == [("d1", "s1"), ("d1", "s3")]
    assert rows_of(fwd, "val", "pos") == [] and set(fwd.entity_id) == {"d1"}  # d2, d3: no train events


def test_id_only_import_and_csv_output(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"u{rng.integers(8)}", f"c{rng.integers(30)}", float(d), "interaction", 1.0) for d in rng.uniform(0, 60, 150)]
    uri = events_snapshot(tmp_path / "ev", rows)
    out = str(tmp_path / "tt.csv")
    stats = build_two_tower(uri, "startup_developer", out, negative_samples=3, **SPLIT)
    df = pd.read_csv(out)
    assert len(df) == stats["rows"] and set(df.neg_type) <= {"pos", "random"} and (df.neg_type == "random").any()
    assert pd.read_parquet(tmp_path / "tt_entities.parquet").columns.tolist() == ["entity_id"]
    pair = load_encoders(str(tmp_path / "tt_vocab.json"))
    assert pair.entity.spec.empty and len(pair.candidate.ids) > 0


def test_bad_parameters(tmp_path):
    uri = db_snapshot(tmp_path / "snap")
    with pytest.raises(ConfigError, match="unknown use case"):
        build_two_tower(uri, "nope", str(tmp_path / "x.parquet"))
    with pytest.raises(DataError, match=".parquet or .csv"):
        build_two_tower(uri, "startup_developer", str(tmp_path / "x.txt"))
    with pytest.raises(ConfigError, match="negative-samples"):
        build_two_tower(uri, "startup_developer", str(tmp_path / "x.parquet"), negative_samples=-1)
    with pytest.raises(DataError, match="does not exist"):
        build_two_tower(str(tmp_path / "none"), "startup_developer", str(tmp_path / "x.parquet"))
