"""Hyperparameter search on the tiny planted marketplace: validation only, beats a bad default."""

import json
from pathlib import Path

import pandas as pd
import pytest

from startup_recs.core.errors import ConfigError
from startup_recs.tuning import search as tune


@pytest.fixture(scope="module")
def task(tiny_snapshot: str) -> tune.ValidationTask:
    return tune.ValidationTask.build(tiny_snapshot, "startup_developer")


def test_validation_task_never_reads_test_or_validation_into_training(task: tune.ValidationTask) -> None:
    from startup_recs.data.snapshot import load_snapshot

    events = load_snapshot(task.snapshot).events("startup_developer")
    ts = pd.to_datetime(events["ts"], utc=True)
    train = events[ts < task.split.val_start]
    assert task.matrix.sum() == pytest.approx(train["weight"].sum(), rel=1e-5)
    assert task.data.until == task.split.val_start  # popularity, seen and counts stop at val_start
    later = events[ts >= task.split.val_start]
    assert float(task.data.popularity.sum()) == pytest.approx(train["weight"].sum(), rel=1e-5)
    assert len(later) > 0 and task.target.entity_ids


def test_search_beats_a_deliberately_bad_default(tiny_snapshot: str, tmp_path: Path) -> None:
    bad = {"factors": 2, "regularization": 50.0, "alpha": 0.1, "iterations": 5, "weighting": "linear"}
    s = tune.tune(tiny_snapshot, "startup_developer", "als", str(tmp_path), trials=6, seed=0, defaults=bad)
    assert s["trials"][0]["params"] == bad and s["default_value"] == s["trials"][0]["value"]
    assert s["best_value"] > s["default_value"] * 1.2
    saved = json.loads((tmp_path / "best_params.json").read_text())
    assert saved["best_params"] == s["best_params"] and saved["metric"] == "validation ndcg@10"
    assert len(pd.read_csv(tmp_path / "trials.csv")) == s["n_trials"] == 6
    assert "(default)" in tune.trials_table(s)


def test_item2item_search_and_single_trial(tiny_snapshot: str, tmp_path: Path) -> None:
    s = tune.tune(tiny_snapshot, "startup_developer", "item2item", str(tmp_path), trials=3)
    assert s["n_complete"] == 3 and s["best_value"] > 0
    v = tune.run_single(tiny_snapshot, "startup_developer", "als", {"factors": 8, "iterations": 3})
    assert 0 < v <= 1


def test_katib_experiment_comes_from_the_same_search_space() -> None:
    exp = tune.katib_experiment("als")
    names = [p["name"] for p in exp["spec"]["parameters"]]
    assert names == list(tune.SEARCH_SPACES["als"])
    alpha = next(p for p in exp["spec"]["parameters"] if p["name"] == "alpha")
    assert alpha["feasibleSpace"] == {"min": "0.1", "max": "100.0", "distribution": "logUniform"}
    cmd = exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--trial-params" in cmd and "${trialParameters.factors}" in cmd[-1]


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        tune.tune("x", "startup_developer", "svd", "out")


def test_committed_katib_manifests_are_generated_from_the_search_space() -> None:
    root = Path(__file__).resolve().parents[2] / tune.KATIB_DIR
    for name, text in tune.katib_manifests().items():
        assert (root / name).read_text() == text, f"{name} is stale: regenerate with startup_recs.tuning.search.katib_manifests()"
