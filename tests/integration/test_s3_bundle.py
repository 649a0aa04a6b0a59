"""Bundle publish and verified fetch through a real S3-protocol server (moto, loopback)."""

import json
from pathlib import Path

from startup_recs.core import bundle, storage
from tests.unit.test_bundle import _metrics, _staging


def test_publish_and_fetch_on_s3(s3_bucket: str, tmp_path: Path) -> None:
    models = storage.join(s3_bucket, "models")
    bundle.publish(_staging(tmp_path), models, "startup_investor", metrics=_metrics(0.2), watermark="w")
    ptr = json.loads(storage.read_bytes(storage.join(models, "startup_investor", "latest")))
    assert ptr == {"version": 1, "path": "v1", "updated_at": ptr["updated_at"]}
    local, manifest = bundle.fetch_verified(storage.join(models, "startup_investor", "latest"), tmp_path / "dl")
    assert manifest["data_watermark"] == "w" and (local / "models" / "w.npy").read_bytes() == b"weights"
