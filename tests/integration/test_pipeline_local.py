"""The whole training pipeline through ``kfp.local`` (real subprocess tasks, kfp's local cache),
publishing to a real S3-protocol server (moto) on loopback.

One use case and tiny budgets keep it to a few minutes on a laptop; ``recs demo`` runs both
reverse use cases at demo size. The tests share one workdir and models bucket and run in order:
first publish -> a second run on the same data (cached steps, gate passes, the same files: unchanged,
v1 stays latest) -> a run whose gate fails (v1 stays latest) -> a failing step (its message,
nothing published).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kfp")

from pipelines.local import PipelineRunError, pipeline_arguments, run_local  # noqa: E402
from startup_recs.core import bundle, storage  # noqa: E402

pytestmark = pytest.mark.slow

UC = "startup_developer"
TINY = {"tt_epochs": 3, "ranker_epochs": 3, "als_factors": 16, "als_iterations": 5,
        "tune_als_trials": 2, "tune_item2item_trials": 2, "tune_two_tower_trials": 0}


@pytest.fixture(scope="module")
def models_uri(s3_server: str) -> str:
    name = f"models-{uuid.uuid4().hex[:8]}"
    storage.s3_client().create_bucket(Bucket=name)
    return f"s3://{name}/bundles"


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """Outside pytest's basetemp on purpose: concurrent pytest sessions of the same user prune
    old basetemp folders, and these runs take minutes."""
    path = Path(tempfile.mkdtemp(prefix="recs-pipeline-it-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_db(workdir: Path) -> str:
    """The tiny synthetic marketplace (tests/fixtures/data.py's seed), in this module's folder."""
    from startup_recs import synth
    from startup_recs.data import appdb

    tables = synth.generate("tiny", 0)
    db = workdir / "marketplace.db"
    appdb.write_db({k: v for k, v in tables.items() if k != "oracle"}, str(db))
    return str(db)


def _run(tiny_db: str, models_uri: str, workdir: Path, **params: Any):
    args = pipeline_arguments(models_uri=models_uri, use_cases=[UC], db_url=tiny_db, params={**TINY, **params})
    return run_local(args, workdir)


@pytest.fixture(scope="module")
def first(tiny_db: str, models_uri: str, workdir: Path):
    return _run(tiny_db, models_uri, workdir)


def _s3_keys(uri: str) -> set[str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    pages = storage.s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"][len(prefix):].lstrip("/") for page in pages for o in page.get("Contents", [])}


def test_first_run_publishes_a_verified_bundle_to_s3(first, models_uri: str, tmp_path: Path) -> None:
    assert bundle.read_pointer(models_uri, UC)["version"] == 1
    assert first.published[UC]["path"] == "v1"
    local, manifest = bundle.fetch_verified(storage.join(models_uri, UC), tmp_path / "b")  # checksums
    assert manifest["version"] == 1 and manifest["use_case"] == UC
    sfx = "_reverse"
    for f in (f"two_tower{sfx}_v1_best.pth", f"two_tower{sfx}_v1_config.json", f"als{sfx}_v1_user_factors.npy",
              f"als{sfx}_v1_item_factors.npy", f"ranker{sfx}_v1_config.json",
              f"item2item{sfx}_v1_config.json",
              "routing.json", "metrics.json", "report.md", "serving/serving_data.json"):
        assert f in manifest["files"], f
    # the ranker learner chosen on the holdout: MLP weights or a LightGBM text booster
    assert f"ranker{sfx}_v1.pth" in manifest["files"] or f"ranker{sfx}_v1_booster.txt" in manifest["files"]
    # the bundle on S3 is exactly the manifest's files plus the manifest itself and the publisher's
    # claim on the number (core/bundle_pointer.py; never listed, never read by a predictor)
    assert _s3_keys(storage.join(models_uri, UC, "v1")) == set(manifest["files"]) | {"manifest.json", ".claim"}
    # provenance: the snapshot's watermark, the evaluation's numbers
    metrics = first.metrics[UC]
    assert manifest["data_watermark"] and manifest["data_watermark"][:4] == "2026"
    assert manifest["metrics"]["models"]["routed_ranked"]["all"]["ndcg@10"] == metrics["models"]["routed_ranked"]["all"]["ndcg@10"]
    assert manifest["routing"]["warm"] in ("two_tower", "als", "item2item", "content")
    # the gate's rule held for what was published
    assert bundle.headline(metrics) > bundle.headline(metrics, "popularity")
    # metrics.json and report.md are left in the workdir
    ev = first.evaluations[UC]
    report = (ev / "report.md").read_text()
    assert (ev / "metrics.json").is_file() and "ndcg" in report.lower()
    # the tuning steps ran before the trainers and the report shows them (2 ALS trials, 0 two-tower)
    assert "## Tuning als (startup_developer)" in report and "2 trials on train -> validation" in report
    assert "## Tuning two-tower (startup_developer)" in report and "0 trials" in report
    # the published ALS and item-to-item were trained with the values the tuning chose
    als_tuning = storage.read_json(str(ev / "tuning" / "als.json"))
    assert als_tuning["n_trials"] == 2 and als_tuning["default_params"]["factors"] == 16
    als_cfg = storage.read_json(str(local / "als_reverse_v1_config.json"))
    assert {k: als_cfg[k] for k in ("factors", "alpha", "iterations")} == {
        k: als_tuning["best_params"][k] for k in ("factors", "alpha", "iterations")}
    assert "tuning/item2item.json" in manifest["files"]
    assert (local / "manifest.json").is_file()


def test_second_run_on_same_data_is_cached_and_unchanged(first, tiny_db: str, models_uri: str,
                                                         workdir: Path) -> None:
    second = _run(tiny_db, models_uri, workdir)
    # every deterministic step came from kfp's cache: the evaluation is the first run's artifact
    assert second.sources[UC] == first.sources[UC]
    assert second.metrics[UC] == first.metrics[UC]
    assert second.seconds < first.seconds
    # same models, same checksums (metrics.json/report.md/plots are identical copies too): the
    # publish step compares them with the served bundle's and publishes nothing ("unchanged")
    ptr = bundle.read_pointer(models_uri, UC)
    assert ptr["version"] == 1 and ptr["path"] == "v1"
    assert bundle.versions(models_uri, UC) == [1]


def test_gate_failure_keeps_the_previous_bundle(first, tiny_db: str, models_uri: str, workdir: Path) -> None:
    before = bundle.read_pointer(models_uri, UC)
    # a negative margin demands twice the published NDCG@10: the same models cannot pass
    third = _run(tiny_db, models_uri, workdir, gate_margin=-1.0)
    assert third.metrics[UC] == first.metrics[UC]
    assert bundle.read_pointer(models_uri, UC) == before
    assert bundle.versions(models_uri, UC) == [1]


def test_failing_step_fails_the_run_with_its_message(first, tiny_db: str, models_uri: str, workdir: Path) -> None:
    before = bundle.read_pointer(models_uri, UC)
    with pytest.raises(PipelineRunError) as err:
        _run(tiny_db, models_uri, workdir, tt_batch_size=1)
    msg = str(err.value)
    assert msg.startswith("step train-two-tower failed: ConfigError: --batch-size must be >= 2"), msg
    assert "\n" not in msg
    assert bundle.read_pointer(models_uri, UC) == before
    assert bundle.versions(models_uri, UC) == [1]


def test_bad_source_is_a_one_line_error(tmp_path: Path) -> None:
    from startup_recs.core.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly one source"):
        pipeline_arguments(models_uri=str(tmp_path), use_cases=[UC])
    db = tmp_path / "x.db"
    with pytest.raises(ConfigError, match="database file .*x.db does not exist"):
        pipeline_arguments(models_uri=str(tmp_path), use_cases=[UC], db_url=str(db))
    db.write_bytes(b"")
    with pytest.raises(ConfigError, match="unknown use case 'startup_cat'"):
        pipeline_arguments(models_uri=str(tmp_path), use_cases=["startup_cat"], db_url=str(db))
    with pytest.raises(ConfigError, match="unknown pipeline parameter 'epochs'"):
        pipeline_arguments(models_uri=str(tmp_path), use_cases=[UC], db_url=str(db), params={"epochs": 3})
