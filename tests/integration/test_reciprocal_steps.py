"""The pipeline's reciprocal steps on the tiny marketplace: ALS models of startup_developer and its
forward twin (stage 1 on train, final on train + validation), evaluated, published; then
``reciprocal`` fits and scores the scorer and ``publish-reciprocal`` adds it to the bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from startup_recs.cli import main as recs
from startup_recs.core import bundle, storage
from startup_recs.core.usecases import get_use_case
from startup_recs.data.snapshot import load_snapshot
from startup_recs.data.split import TimeSplit
from startup_recs.evaluation.protocol import evaluate
from startup_recs.pipeline.reciprocal_steps import fit_reciprocal, publish_reciprocal
from startup_recs.serving.data import ServingData
from startup_recs.serving.recommender import Recommender

SD, DS = "startup_developer", "developer_startup"


def _als(snapshot: str, uc: str, window: str, out: Path, until: str) -> Path:
    """ALS of one fit window and the serving data of the same window."""
    sfx = get_use_case(uc).suffix
    ds = out.parent / f"{out.name}-ds"
    assert recs(["dataset", "als", "--snapshot", snapshot, "--use-case", uc, "--output-dir", str(ds),
                 "--fit-window", window]) == 0
    assert recs(["train", "als", "--data", str(ds / f"als_interactions{sfx}.npz"),
                 "--user-mapping", str(ds / f"als{sfx}_user_mapping.json"),
                 "--item-mapping", str(ds / f"als{sfx}_item_mapping.json"), "--use-case", uc,
                 "--factors", "16", "--iterations", "5", "--output-dir", str(out)]) == 0
    snap = load_snapshot(snapshot)
    split = TimeSplit.resolve(snap.events(uc)["ts"])
    ServingData.from_snapshot(snap, uc, getattr(split, until)).save(str(out / "serving"))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_snapshot: str) -> dict:
    root = tmp_path_factory.mktemp("reciprocal-steps")
    models_uri = str(root / "published")
    dirs: dict = {"models": [], "stage1": [], "evals": []}
    for uc in (SD, DS):
        stage1 = _als(tiny_snapshot, uc, "train", root / f"{uc}-stage1", "val_start")
        final = _als(tiny_snapshot, uc, "trainval", root / f"{uc}-models", "split_at")
        ev = root / f"{uc}-evaluation"
        metrics = evaluate(tiny_snapshot, str(final), uc, str(ev), val_models=str(stage1))
        bundle.publish(final, models_uri, uc, metrics=metrics, watermark=None)
        dirs["models"].append(str(final))
        dirs["stage1"].append(str(stage1))
        dirs["evals"].append(str(ev))
    out = root / "reciprocal"
    info = fit_reciprocal(tiny_snapshot, dirs["models"], dirs["stage1"], dirs["evals"], str(out))
    return {"out": out, "info": info, "models_uri": models_uri}


def test_reciprocal_step_fits_scores_and_keeps_the_other_evaluations(run) -> None:
    out = run["out"]
    assert set(run["info"]) == {SD}  # the forward use case has no reciprocal scorer
    scorer = json.loads((out / SD / "reciprocal.json").read_text())
    assert scorer["method"] in ("harmonic", "product", "learned") and scorer["forward_use_case"] == DS
    assert scorer["validation"]["chosen"] == scorer["method"] and scorer["validation"]["pairs"] > 0
    metrics = json.loads((out / SD / "evaluation" / "metrics.json").read_text())
    row = metrics["models"]["reciprocal"]["all"]
    assert {"ndcg@10", "recall@10", "mutual_ndcg@10", "mutual_recall@10", "users", "mutual_users"} <= set(row)
    assert metrics["reciprocal"]["method"] == scorer["method"]
    assert "reciprocal" in (out / SD / "evaluation" / "report.md").read_text()
    fwd = json.loads((out / DS / "evaluation" / "metrics.json").read_text())
    assert "reciprocal" not in fwd["models"] and not (out / DS / "reciprocal.json").exists()


def test_publish_reciprocal_adds_the_scorer_as_the_next_version(run) -> None:
    # ALS-only bundles have no routed_ranked for the gate to read: publish without it here
    versions = publish_reciprocal(str(run["out"]), run["models_uri"], margin=None)
    assert versions == {SD: 2}
    latest = bundle.resolve(storage.join(run["models_uri"], SD))
    rec = Recommender.load(latest)
    assert rec.reciprocal.fitted and rec.model_version == "v2"
    manifest = bundle.current_manifest(run["models_uri"], SD)
    assert "reciprocal.json" in manifest["files"] and "reciprocal" in manifest["metrics"]["models"]
    assert bundle.read_pointer(run["models_uri"], DS)["version"] == 1  # forward bundles untouched
