"""The compiled IR of ``reverse_recommendation_training``: every step, the DAG's fitting windows,
the two-tower task on the GPU pool, caching, the publish gate, and the images."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("kfp")

from pipelines.training import CompileOptions, compile_pipeline  # noqa: E402
from startup_recs.core.images import image  # noqa: E402

STEPS = {
    "dataset-two-tower", "dataset-als-train", "dataset-als-trainval", "dataset-ranker",
    "tune-two-tower", "tune-als", "tune-item2item",
    "train-two-tower-stage1", "train-two-tower-final", "train-als-stage1", "train-als-final",
    "train-item2item-stage1", "train-item2item-final", "train-ranker", "evaluate", "gate",
}


def _compile(tmp_path: Path, opts: CompileOptions | None = None) -> tuple[dict, dict]:
    path = compile_pipeline(str(tmp_path / "p.yaml"), opts)
    spec, platform = list(yaml.safe_load_all(Path(path).read_text()))
    return spec, platform


def _loop(spec: dict) -> dict:
    (name,) = [k for k in spec["components"] if k.startswith("comp-for-loop")]
    return spec["components"][name]["dag"]["tasks"]


def _by_display(tasks: dict) -> dict[str, tuple[str, dict]]:
    return {t["taskInfo"]["name"]: (k, t) for k, t in tasks.items()}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    return _compile(tmp_path_factory.mktemp("ir"))


def test_every_step_is_in_the_dag(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    assert spec["pipelineInfo"]["name"] == "reverse-recommendation-training"
    root = spec["root"]["dag"]["tasks"]
    assert {"probe-source", "extract"} <= set(root)
    loop_task = next(t for k, t in root.items() if k.startswith("for-loop"))
    assert loop_task["parameterIterator"]["items"]["inputParameter"].endswith("use_cases")
    tasks = _by_display(_loop(spec))
    assert set(tasks) >= STEPS
    cond = tasks["gate-passed"][1]
    publish_tasks = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    assert sorted(publish_tasks) == ["publish", "refit"]  # what is published is the refit on every event
    refit = publish_tasks["refit"]
    assert set(refit.get("dependentTasks", [])) == set()  # its inputs come from outside the condition
    assert publish_tasks["publish"]["dependentTasks"] == ["refit"]
    assert publish_tasks["publish"]["inputs"]["artifacts"]["models"]["taskOutputArtifact"] == {
        "outputArtifactKey": "refitted", "producerTask": "refit"}


def test_fitting_windows_and_order(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    tasks = _by_display(_loop(spec))
    key = {name: k for name, (k, _) in tasks.items()}

    def deps(name: str) -> set[str]:
        return set(tasks[name][1].get("dependentTasks", []))

    def param(name: str, p: str) -> object:
        return tasks[name][1]["inputs"]["parameters"][p]["runtimeValue"]["constant"]

    assert param("dataset-als-train", "fit_window") == "train"
    assert param("dataset-als-trainval", "fit_window") == "trainval"
    assert param("train-two-tower-stage1", "window") == "train"
    assert param("train-two-tower-final", "window") == "trainval"
    # the ranker learns from stage-1 retrievers (train window) only; the tuned values are for the
    # earlier windows' retrievers (ranker_windows > 1), fit again before each window
    assert deps("train-ranker") == {key["dataset-ranker"], key["train-two-tower-stage1"], key["train-als-stage1"],
                                    key["train-item2item-stage1"], key["tune-two-tower"], key["tune-als"],
                                    key["tune-item2item"]}
    # a tuning step before each trainer; its output feeds both stages
    for stage, window in (("stage1", "train"), ("final", "trainval")):
        assert deps(f"train-als-{stage}") == {key[f"dataset-als-{window}"], key["tune-als"]}
        assert deps(f"train-item2item-{stage}") == {key[f"dataset-als-{window}"], key["tune-item2item"]}
    assert deps("train-two-tower-stage1") == {key["dataset-two-tower"], key["tune-two-tower"]}
    # the final two-tower trains for the stage-1 best epoch (scaled), so it follows stage 1
    assert deps("train-two-tower-final") == {key["dataset-two-tower"], key["tune-two-tower"],
                                             key["train-two-tower-stage1"]}
    # evaluate scores the final retrievers + the stage-1 ranker, and reports the tuning
    assert deps("evaluate") == {key["train-two-tower-final"], key["train-als-final"], key["train-item2item-final"],
                                key["train-ranker"], key["tune-two-tower"], key["tune-als"], key["tune-item2item"]}
    assert deps("gate") == {key["evaluate"]}


def test_two_tower_runs_on_the_gpu_pool(compiled: tuple[dict, dict]) -> None:
    spec, platform = compiled
    tasks = _by_display(_loop(spec))
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("train-two-tower-stage1", "train-two-tower-final", "tune-two-tower"):
        comp = spec["components"][tasks[name][1]["componentRef"]["name"]]
        ex_name = comp["executorLabel"]
        container = executors[ex_name]["container"]
        res = container["resources"]
        assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert res["accelerator"]["resourceCount"] == "1"
        assert res["resourceCpuRequest"] == "4" and res["resourceMemoryRequest"] == "16G"
        assert container["image"] == image("trainer-gpu")
        assert k8s[ex_name]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert k8s[ex_name]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]
    # nothing else asks for a GPU or lands on the GPU pool
    gpu_execs = {ex for ex, e in executors.items() if "accelerator" in e["container"].get("resources", {})}
    pool = {ex for ex, cfg in k8s.items() if "nodeSelector" in cfg or "tolerations" in cfg}
    # (the refit trains a two-tower too)
    assert gpu_execs == pool == {"exec-train-two-tower", "exec-train-two-tower-2", "exec-tune-two-tower", "exec-refit"}
    for ex, e in executors.items():
        if ex not in gpu_execs:
            assert e["container"]["image"] == image("base"), ex


def test_gpu_pool_labels_are_compile_options(tmp_path: Path) -> None:
    opts = CompileOptions.from_pairs([
        "gpu_node_label_key=cloud.google.com/gke-accelerator", "gpu_node_label_value=nvidia-l4",
        "gpu_toleration_key=dedicated", "gpu_toleration_value=", "trainer_memory=32G"])
    spec, platform = _compile(tmp_path, opts)
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-two-tower"]
    assert k8s["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert k8s["tolerations"] == [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    res = spec["deploymentSpec"]["executors"]["exec-train-two-tower"]["container"]["resources"]
    assert res["resourceMemoryRequest"] == "32G"


def test_laptop_cluster_without_gpu(tmp_path: Path) -> None:
    """``gpu_count=0`` (kind): no accelerator, no node selector or toleration; the trainer runs on CPU."""
    spec, platform = _compile(tmp_path, CompileOptions.from_pairs(["gpu_count=0", "trainer_memory=2G"]))
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for ex, e in spec["deploymentSpec"]["executors"].items():
        assert "accelerator" not in e["container"]["resources"], ex
        assert "nodeSelector" not in k8s[ex] and "tolerations" not in k8s[ex], ex
    assert spec["deploymentSpec"]["executors"]["exec-train-two-tower"]["container"]["resources"][
        "resourceMemoryRequest"] == "2G"


def test_every_step_gets_the_s3_settings(compiled: tuple[dict, dict], tmp_path: Path) -> None:
    spec, platform = compiled
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(k8s) == set(spec["deploymentSpec"]["executors"])
    db_readers = {"exec-probe-source", "exec-probe-entities", "exec-extract", "exec-monitor"}
    for name, cfg in k8s.items():
        secrets = {s["secretName"]: s for s in cfg["secretAsEnv"]}
        assert set(secrets) == ({"recs-s3", "recs-db"} if name in db_readers else {"recs-s3"}), name
        if name in db_readers:  # the database URL from a Secret, never only a stored parameter
            assert [k["envVar"] for k in secrets["recs-db"]["keyToEnv"]] == ["RECS_DB_URL"]
            assert secrets["recs-db"]["optional"] is True
        secret = secrets["recs-s3"]
        assert secret["optional"] is True
        assert {k["envVar"] for k in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        (cm,) = cfg["configMapAsEnv"]
        assert cm["configMapName"] == "recs-storage" and cm["optional"] is True
        assert "AWS_ENDPOINT_URL" in {k["envVar"] for k in cm["keyToEnv"]}
    _, plain = _compile(tmp_path, CompileOptions.from_pairs(["s3_secret=", "storage_config_map=", "db_secret="]))
    for cfg in plain["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        assert "secretAsEnv" not in cfg and "configMapAsEnv" not in cfg


def test_bad_compile_option_is_one_line_error() -> None:
    from startup_recs.core.errors import ConfigError

    with pytest.raises(ConfigError, match="bad compile option 'gpu_colour=red'"):
        CompileOptions.from_pairs(["gpu_colour=red"])


def test_caching_deterministic_steps_only(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    root = spec["root"]["dag"]["tasks"]
    # the watermark probe always runs; its output is extract's input, so new data reruns extract
    assert not root["probe-source"].get("cachingOptions", {}).get("enableCache", False)
    assert root["extract"]["cachingOptions"]["enableCache"] is True
    wm = root["extract"]["inputs"]["parameters"]["watermark"]["taskOutputParameter"]
    assert wm == {"producerTask": "probe-source", "outputParameterKey": "Output"}
    # ... and so do changed profiles: the entity tables' digest is an input too
    assert not root["probe-entities"].get("cachingOptions", {}).get("enableCache", False)
    digest = root["extract"]["inputs"]["parameters"]["entities"]["taskOutputParameter"]
    assert digest == {"producerTask": "probe-entities", "outputParameterKey": "Output"}
    assert root["extract"]["inputs"]["parameters"]["snapshot_uri"]["componentInputParameter"] == "snapshot_uri"
    tasks = _by_display(_loop(spec))
    for name in STEPS - {"gate"}:
        assert tasks[name][1]["cachingOptions"]["enableCache"] is True, name
    assert not tasks["gate"][1].get("cachingOptions", {}).get("enableCache", False)
    cond = tasks["gate-passed"][1]
    publish = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]["publish"]
    assert not publish.get("cachingOptions", {}).get("enableCache", False)


def test_publish_is_gated_on_the_evaluation(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    _, cond = _by_display(_loop(spec))["gate-passed"]
    assert cond["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--gate-Output'] == 'publish'"
    assert cond["inputs"]["parameters"]["pipelinechannel--gate-Output"]["taskOutputParameter"]["producerTask"] == "gate"


def test_components_install_nothing_at_runtime(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    for name, ex in spec["deploymentSpec"]["executors"].items():
        text = " ".join(ex["container"]["command"] + ex["container"].get("args", []))
        assert "pip install" not in text, name
        assert "import startup_recs" in text or "from startup_recs" in text, name


def test_parameters_cover_the_legacy_flags(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    legacy = {"negative_samples": 5, "min_interactions": 1, "neg_ratio": 2.0, "tt_epochs": 50, "tt_batch_size": 256,
              "tt_lr": 0.001, "embedding_dim": 128, "als_factors": 128, "als_iterations": 10,
              "ranker_epochs": 20, "ranker_batch_size": 128, "ranker_lr": 0.001, "als_regularization": 0.01,
              "als_alpha": 1.0}
    for name, default in legacy.items():
        assert params[name]["defaultValue"] == default, name
    assert params["use_cases"]["defaultValue"] == ["startup_developer", "startup_investor", "developer_startup",
                                                   "investor_startup"]
    assert "defaultValue" not in params["models_uri"]
    assert set(params) >= {"db_url", "events_uri", "split_at", "gate_margin", "entity_col", "candidate_col",
                           "tune_als_trials", "tune_two_tower_trials", "tune_item2item_trials", "tune_timeout_s"}


def _undescribed(definitions: dict | None) -> list[str]:
    return [f"{group}.{name}" for group in ("parameters", "artifacts")
            for name, d in ((definitions or {}).get(group) or {}).items() if not str(d.get("description", "")).strip()]


def test_every_input_and_output_is_described_for_the_ui(compiled: tuple[dict, dict]) -> None:
    """KFP copies the docstrings' ``Args:`` / ``Returns:`` into the IR: the Kubeflow UI documents
    every parameter of every step and of the pipeline itself."""
    spec, _ = compiled
    steps = {name: comp for name, comp in spec["components"].items() if "executorLabel" in comp}
    assert len(steps) >= 15
    for name, comp in steps.items():
        assert comp["inputDefinitions"], name
        assert not _undescribed(comp.get("inputDefinitions")), (name, _undescribed(comp.get("inputDefinitions")))
        assert not _undescribed(comp.get("outputDefinitions")), (name, _undescribed(comp.get("outputDefinitions")))
    root = spec["root"]
    assert len(root["inputDefinitions"]["parameters"]) > 40
    assert not _undescribed(root["inputDefinitions"]), _undescribed(root["inputDefinitions"])
    assert not _undescribed(root.get("outputDefinitions")), _undescribed(root.get("outputDefinitions"))
    assert "learning rate" in root["inputDefinitions"]["parameters"]["tt_lr"]["description"]
    # the shared descriptions (components/glossary.py) reach the IR, every marker filled
    described = [d.get("description", "") for comp in steps.values() for defs in (comp["inputDefinitions"],
                 comp.get("outputDefinitions") or {}) for group in defs.values() for d in group.values()]
    assert not [d for d in described if "(shared" in d]
    split_at = {comp["inputDefinitions"]["parameters"]["split_at"]["description"] for comp in steps.values()
                if "split_at" in comp["inputDefinitions"].get("parameters", {})}
    assert len(split_at) == 1 and "ISO-8601" in split_at.pop()


def test_glossary_fills_markers_and_refuses_an_unknown_key() -> None:
    from components.glossary import ARGS, shared_args

    def step(split_at: str = "", seed: int = 0) -> None:
        """A step.

        Args:
            split_at: (shared)
            seed: (shared tune_seed)
            (shared) test_days trials=tune_val_days
        """

    doc = shared_args(step).__doc__
    assert f"            split_at: {ARGS['split_at']}" in doc and f"seed: {ARGS['tune_seed']}" in doc
    assert doc.rstrip().endswith(f"            test_days: {ARGS['test_days']}\n"
                                 f"            trials: {ARGS['tune_val_days']}")

    def bad(x: int = 0) -> None:
        """Args:
            x: (shared nope)
        """

    with pytest.raises(KeyError, match="nope"):
        shared_args(bad)
