"""``tt_workers > 1``: the compiled pipeline trains the two-tower model through the PyTorchJob
step (a CPU pod that creates and waits on the job), with the GPU pool's placement as parameters,
and the publish step records the data URIs the job and Katib read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kfp")

from pipelines.training import CompileOptions, compile_pipeline  # noqa: E402
from startup_recs.core.images import image  # noqa: E402


def _compile(tmp_path: Path, opts: CompileOptions) -> tuple[dict, dict]:
    spec, platform = list(yaml.safe_load_all(Path(compile_pipeline(str(tmp_path / "p.yaml"), opts)).read_text()))
    return spec, platform


def _tasks(spec: dict) -> dict[str, dict]:
    """Loop tasks by display name, each with its DAG key under ``"_key"``."""
    (loop,) = [k for k in spec["components"] if k.startswith("comp-for-loop")]
    return {t["taskInfo"]["name"]: {**t, "_key": k} for k, t in spec["components"][loop]["dag"]["tasks"].items()}


def _const(task: dict, name: str):
    return task["inputs"]["parameters"][name]["runtimeValue"]["constant"]


def test_tt_workers_uses_the_pytorchjob_step(tmp_path: Path) -> None:
    opts = CompileOptions.from_pairs(["tt_workers=4", "gpu_count=2", "gpu_node_label_value=a100"])
    assert opts.tt_workers == 4
    spec, platform = _compile(tmp_path, opts)
    tasks = _tasks(spec)
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for stage, window in (("stage1", "train"), ("final", "trainval")):
        t = tasks[f"train-two-tower-{stage}"]
        assert t["componentRef"]["name"].startswith("comp-train-two-tower-ddp")
        assert _const(t, "workers") == 4 and _const(t, "gpus_per_worker") == 2 and _const(t, "window") == window
        assert _const(t, "image") == image("trainer-gpu")
        assert json.loads(_const(t, "node_selector")) == {"nvidia.com/gpu.present": "a100"}
        (tol,) = json.loads(_const(t, "tolerations"))
        assert tol["key"] == "nvidia.com/gpu" and tol["effect"] == "NoSchedule"
        assert set(t["inputs"]["artifacts"]) == {"dataset", "tuned"}
        ex = executors[t["componentRef"]["name"].replace("comp-", "exec-")]["container"]
        assert ex["image"] == image("base")  # the waiting step itself is a CPU pod
        assert "accelerator" not in ex.get("resources", {})
        assert "nodeSelector" not in k8s.get(t["componentRef"]["name"].replace("comp-", "exec-"), {})
    # the ranker and evaluation read the job step's model artifact
    rk = tasks["train-ranker"]["inputs"]["artifacts"]["two_tower"]["taskOutputArtifact"]
    assert rk["producerTask"] == tasks["train-two-tower-stage1"]["_key"] and rk["outputArtifactKey"] == "model"


def test_one_worker_keeps_the_gpu_step_and_publish_records_the_data(tmp_path: Path) -> None:
    spec, _ = _compile(tmp_path, CompileOptions())
    tasks = _tasks(spec)
    assert not tasks["train-two-tower-final"]["componentRef"]["name"].startswith("comp-train-two-tower-ddp")
    (cond,) = [t for n, t in tasks.items() if n == "gate-passed"]
    publish = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]["publish"]
    uri = publish["inputs"]["parameters"]["two_tower_dataset_uri"]
    assert uri["componentInputParameter"].startswith("pipelinechannel--dataset-two-tower-Output")
    assert "tuned_two_tower" in publish["inputs"]["artifacts"]
