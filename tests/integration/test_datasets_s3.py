"""The dataset builders read a snapshot from and write their outputs to S3 (moto server on loopback)."""

import io

import pandas as pd
import scipy.sparse as sp

from startup_recs.core import storage
from startup_recs.datasets.als import build_als, load_als
from startup_recs.datasets.ranker import build_ranker
from startup_recs.datasets.two_tower import build_two_tower
from startup_recs.features import load_encoders
from tests.unit.dataset_helpers import day, db_snapshot

SPLIT = dict(split_at=day(50), val_days=10)


def test_s3_snapshot_to_s3_datasets(s3_bucket, tmp_path):
    local = db_snapshot(tmp_path / "snap")
    snap = storage.join(s3_bucket, "snapshot")
    storage.upload_dir(local, snap)
    out = storage.join(s3_bucket, "datasets")

    local_tt = build_two_tower(local, "startup_developer", str(tmp_path / "tt.parquet"), **SPLIT)
    tt = build_two_tower(snap, "startup_developer", storage.join(out, "tt.parquet"), **SPLIT)
    assert tt["rows"] == local_tt["rows"] and tt["by_split"] == local_tt["by_split"]
    pd.testing.assert_frame_equal(storage.read_table(storage.join(out, "tt.parquet")).to_pandas(),
                                  pd.read_parquet(tmp_path / "tt.parquet"))
    for name in ("tt_entities.parquet", "tt_candidates.parquet", "tt_vocab.json", "tt_meta.json"):
        assert storage.exists(storage.join(out, name))
    assert load_encoders(storage.join(out, "tt_vocab.json")).entity.ids == ["s1", "s2", "s3"]

    build_als(snap, "startup_developer", storage.join(out, "als"), **SPLIT)
    m, users, items = load_als(storage.join(out, "als"), "_reverse")
    raw = sp.load_npz(io.BytesIO(storage.read_bytes(storage.join(out, "als", "als_interactions_reverse.npz"))))
    assert (m != raw).nnz == 0 and m.shape == (3, 5) and users["s1"] == 0

    rk = build_ranker(snap, "startup_developer", storage.join(out, "rk.csv"), **SPLIT)
    assert rk["rows"] == 10 and storage.exists(storage.join(out, "rk_propensity.json"))
    assert storage.read_table(storage.join(out, "rk.csv")).num_rows == 10
