"""Bundles: publish, latest pointer, verification, gate; locally and on S3."""

from pathlib import Path

import pytest

from startup_recs.core import bundle, storage
from startup_recs.core.errors import BundleError


def _metrics(ndcg: float, pop: float = 0.05) -> dict:
    return {"models": {"routed_ranked": {"all": {"ndcg@10": ndcg}}, "popularity": {"all": {"ndcg@10": pop}}}}


def _staging(tmp_path: Path, payload: bytes = b"weights") -> Path:
    d = tmp_path / f"stage-{len(payload)}"
    (d / "models").mkdir(parents=True)
    (d / "models" / "w.npy").write_bytes(payload)
    (d / "metrics.json").write_text("{}")
    return d


def test_publish_verify_and_pointer(tmp_path: Path) -> None:
    models = str(tmp_path / "models")
    m1 = bundle.publish(_staging(tmp_path), models, "startup_developer", metrics=_metrics(0.2), watermark="2026-01-01")
    assert m1["version"] == 1 and set(m1["files"]) == {"models/w.npy", "metrics.json"}
    m2 = bundle.publish(_staging(tmp_path, b"w2"), models, "startup_developer", metrics=_metrics(0.21), watermark=None)
    assert m2["version"] == 2
    assert bundle.read_pointer(models, "startup_developer")["path"] == "v2"
    assert bundle.resolve(f"{models}/startup_developer").endswith("/v2")
    assert bundle.resolve(f"{models}/startup_developer/latest").endswith("/v2")
    path, manifest = bundle.fetch_verified(f"{models}/startup_developer")
    assert manifest["version"] == 2 and (path / "models" / "w.npy").read_bytes() == b"w2"


def test_corrupt_and_incomplete_bundles_are_refused(tmp_path: Path) -> None:
    models = str(tmp_path / "models")
    bundle.publish(_staging(tmp_path), models, "uc", metrics=_metrics(0.2), watermark=None)
    f = tmp_path / "models" / "uc" / "v1" / "models" / "w.npy"
    f.write_bytes(b"tampered")
    with pytest.raises(BundleError, match="checksum mismatch for models/w.npy"):
        bundle.fetch_verified(f"{models}/uc")
    f.unlink()
    with pytest.raises(BundleError, match="missing file models/w.npy"):
        bundle.fetch_verified(f"{models}/uc/v1")
    with pytest.raises(BundleError, match="no bundle here"):
        bundle.resolve(str(tmp_path / "empty"))


def test_gate(tmp_path: Path) -> None:
    models = str(tmp_path / "models")
    assert not bundle.check_gate(_metrics(0.04, pop=0.05), models, "uc").passed
    assert bundle.check_gate(_metrics(0.20), models, "uc").passed
    bundle.publish(_staging(tmp_path), models, "uc", metrics=_metrics(0.20), watermark=None)
    assert bundle.check_gate(_metrics(0.197), models, "uc", margin=0.02).passed
    g = bundle.check_gate(_metrics(0.15), models, "uc", margin=0.02)
    assert not g.passed and g.current == 0.20 and g.current_version == 1
    with pytest.raises(BundleError, match="gate refused"):
        bundle.publish(_staging(tmp_path, b"bad"), models, "uc", metrics=_metrics(0.15), watermark=None, gate_margin=0.02)
    assert bundle.read_pointer(models, "uc")["version"] == 1
    assert bundle.versions(models, "uc") == [1]


def test_failed_upload_leaves_previous_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = str(tmp_path / "models")
    bundle.publish(_staging(tmp_path), models, "uc", metrics=_metrics(0.2), watermark=None)
    real = storage.upload_file

    def flaky(path, uri):  # the second file's upload dies
        if uri.endswith("w.npy"):
            raise OSError("connection reset")
        return real(path, uri)

    monkeypatch.setattr(storage, "upload_file", flaky)
    with pytest.raises(OSError):
        bundle.publish(_staging(tmp_path, b"new"), models, "uc", metrics=_metrics(0.3), watermark=None)
    monkeypatch.setattr(storage, "upload_file", real)
    assert bundle.read_pointer(models, "uc")["version"] == 1
    assert bundle.resolve(f"{models}/uc").endswith("/v1")
    # the half-written v2 has no manifest; the next publish goes to v3
    assert bundle.publish(_staging(tmp_path, b"n3"), models, "uc", metrics=_metrics(0.3), watermark=None)["version"] == 3
