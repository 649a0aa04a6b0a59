"""Katib trials and the standalone PyTorchJob read the data the pipeline wrote: the published
bundle's manifest records it (``"data"``), and ``recs tune --snapshot <bundle>`` follows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from startup_recs.core import bundle
from startup_recs.core.errors import ConfigError
from startup_recs.pipeline.two_tower_job import bundle_data_uris
from startup_recs.tuning.search import katib_experiment, snapshot_of

UC = "startup_developer"


def _publish(tmp_path: Path, data: dict | None) -> str:
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    (staging / "w.bin").write_bytes(b"x")
    extra = {"data": data} if data is not None else None
    bundle.publish(staging, str(tmp_path / "models"), UC, metrics={}, watermark=None, extra=extra)
    return str(tmp_path / "models" / UC)


def test_tune_follows_a_bundle_to_its_snapshot(tmp_path: Path) -> None:
    snap = "s3://mlpipeline/v2/artifacts/reverse-recommendation-training/run-7/extract/1/snapshot"
    ds = "s3://mlpipeline/v2/artifacts/reverse-recommendation-training/run-7/dataset-two-tower/2/dataset"
    uri = _publish(tmp_path, {"snapshot": snap, "two_tower_dataset": ds, "two_tower_tuned": ""})
    assert bundle.trained_on(uri) == {"snapshot": snap, "two_tower_dataset": ds}
    assert snapshot_of(uri) == snap and snapshot_of(f"{uri}/v1") == snap
    assert bundle_data_uris(uri)["two_tower_dataset"] == ds
    plain = str(tmp_path / "a_snapshot")
    assert snapshot_of(plain) == plain  # a snapshot folder is used as it is


def test_bundle_without_data_record_is_a_clear_error(tmp_path: Path) -> None:
    uri = _publish(tmp_path, None)
    with pytest.raises(ConfigError, match="records no snapshot"):
        snapshot_of(uri)
    with pytest.raises(ConfigError, match="no training data"):
        bundle_data_uris(uri)


def test_katib_trials_read_the_published_bundle() -> None:
    c = katib_experiment("als")["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][c["command"].index("--snapshot") + 1] == "s3://models/startup_developer"
