"""The distributed two-tower PyTorchJob (pipeline/two_tower_job.py): the generated job spec, and
create + wait + failure handling through the real ``kubernetes`` client against a small fake
Kubernetes API server on loopback that serves scripted job states and records every request
(no cluster can run here; the assertions are on what the client sends and how the waiter reacts)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("kubernetes")

from startup_recs.core.errors import ConfigError  # noqa: E402
from startup_recs.pipeline import two_tower_job as tj  # noqa: E402

NS = "kubeflow"
BASE = f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs"


def _cond(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


class FakeApi(BaseHTTPRequestHandler):
    """POST creates (409 when ``exists``), GET answers the next scripted status (the last one
    repeats), DELETE records; ``get_errors`` answers that many GETs with 503 first."""

    requests: list[dict[str, Any]] = []
    script: list[dict[str, Any] | int] = []
    exists = False
    get_errors = 0

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        rec = {"method": self.command, "path": self.path, "body": json.loads(raw) if raw else None}
        type(self).requests.append(rec)
        return rec

    def do_POST(self) -> None:
        rec = self._record()
        if type(self).exists:
            self._send(409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
        else:
            self._send(201, rec["body"])

    def do_GET(self) -> None:
        self._record()
        cls = type(self)
        if cls.get_errors > 0:
            cls.get_errors -= 1
            self._send(503, {"kind": "Status", "code": 503})
            return
        step = cls.script.pop(0) if len(cls.script) > 1 else cls.script[0]
        if isinstance(step, int):
            self._send(step, {"kind": "Status", "code": step})
        else:
            self._send(200, {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                             "metadata": {"name": self.path.rsplit("/", 1)[-1]}, "status": step})

    def do_DELETE(self) -> None:
        self._record()
        self._send(200, {"kind": "Status", "status": "Success"})


@pytest.fixture
def fake_api() -> Iterator[Any]:
    FakeApi.requests, FakeApi.script, FakeApi.exists, FakeApi.get_errors = [], [], False, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tj.custom_objects_api(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def _settings(**kw: Any) -> tj.JobSettings:
    base = dict(use_case="startup_developer",
                dataset_uri="minio://mlpipeline/v2/artifacts/p/run-1/dataset-two-tower/7/dataset",
                output_uri="minio://mlpipeline/v2/artifacts/p/run-1/train-two-tower-final/9/model_ddp",
                tuned_uri="minio://mlpipeline/v2/artifacts/p/run-1/tune-two-tower/3/best",
                image="ghcr.io/startup-recs/startup-recs-trainer-gpu:0.1.0", workers=3, gpus=2,
                train={"window": "trainval", "epochs": 4, "batch_size": 1024, "device": "auto", "seed": 0},
                node_selector={"nvidia.com/gpu.present": "true"},
                tolerations=[{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}])
    base.update(kw)
    return tj.JobSettings(**base)


def test_job_spec_reads_the_pipeline_artifacts_and_uses_the_gpu_pool() -> None:
    s = _settings()
    name = tj.job_name(s.output_uri)
    assert name == tj.job_name(s.output_uri) and len(name) <= 63 and name.startswith("two-tower-ddp-")
    job = tj.job_spec(name, s)
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    for role in ("Master", "Worker"):
        pod = specs[role]["template"]["spec"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        c = pod["containers"][0]
        assert c["name"] == "pytorch"
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 2
        cmd = c["command"]
        assert cmd[:4] == ["python", "-m", "startup_recs.pipeline.two_tower_job", "run"]
        arg = dict(zip(cmd[4::2], cmd[5::2], strict=True))
        # KFP's MinIO artifact URIs, read as the same objects through S3
        assert arg["--dataset-uri"] == "s3://mlpipeline/v2/artifacts/p/run-1/dataset-two-tower/7/dataset"
        assert arg["--tuned-uri"] == "s3://mlpipeline/v2/artifacts/p/run-1/tune-two-tower/3/best"
        assert arg["--output-uri"].endswith("/train-two-tower-final/9/model_ddp")
        assert arg["--nproc-per-node"] == "2" and arg["--window"] == "trainval" and arg["--epochs"] == "4"
        assert {"configMapRef": {"name": "recs-storage", "optional": True}} in c["envFrom"]
        assert pod["securityContext"]["runAsNonRoot"] is True
    with pytest.raises(ConfigError):
        tj.job_spec(name, _settings(workers=1))
    with pytest.raises(ConfigError, match="object storage"):
        tj.pod_command(_settings(dataset_uri="/tmp/local/dataset"))


def test_torchrun_command_follows_the_operator_environment() -> None:
    args = tj._parser().parse_args(["run", "--use-case", "startup_developer", "--dataset-uri", "s3://b/d",
                                    "--output-uri", "s3://b/o", "--nproc-per-node", "2", "--epochs", "3"])
    train = tj._train_argv(args, tj.Path("/tmp/d"), None, tj.Path("/tmp/o"))
    assert train[:2] == ["train", "--use-case"] and "--epochs" in train and "--tuned-dir" not in train
    cmd = tj.torchrun_command(args, train, {"WORLD_SIZE": "3", "RANK": "2", "MASTER_ADDR": "m", "MASTER_PORT": "23456"})
    assert "--nnodes=3" in cmd and "--node-rank=2" in cmd and "--nproc-per-node=2" in cmd
    assert "--master-addr=m" in cmd and cmd[cmd.index("-m", 3) + 1] == "startup_recs.pipeline.two_tower_job"
    newer = tj.torchrun_command(args, train, {"PET_NNODES": "4", "PET_NODE_RANK": "1", "WORLD_SIZE": "8"})
    assert "--nnodes=4" in newer and "--node-rank=1" in newer


def test_create_then_wait_until_succeeded(fake_api) -> None:
    FakeApi.script = [{}, {"conditions": [_cond("Created")]},
                      {"conditions": [_cond("Created"), _cond("Running")]},
                      {"conditions": [_cond("Created"), {"type": "Running", "status": "False"}, _cond("Succeeded")]}]
    body = tj.job_spec("two-tower-ddp-abc", _settings())
    sleeps: list[float] = []
    obj = tj.run_job(body, NS, api=fake_api, poll_s=0.5, sleep=sleeps.append)
    assert tj.job_state(obj)[0] == "Succeeded"
    post = [r for r in FakeApi.requests if r["method"] == "POST"]
    assert len(post) == 1 and post[0]["path"] == BASE and post[0]["body"] == body
    gets = [r for r in FakeApi.requests if r["method"] == "GET"]
    assert len(gets) == 4 and all(r["path"] == f"{BASE}/two-tower-ddp-abc" for r in gets)
    assert sleeps == [0.5] * 3


def test_failed_job_raises_with_the_operators_reason(fake_api) -> None:
    FakeApi.script = [{"conditions": [_cond("Running")]},
                      {"conditions": [_cond("Running"), _cond("Failed", "PyTorchJobFailed", "Master pod exited 1")]}]
    with pytest.raises(tj.JobFailed, match="Master pod exited 1"):
        tj.run_job(tj.job_spec("j1", _settings()), NS, api=fake_api, poll_s=0, sleep=lambda s: None)
    assert not [r for r in FakeApi.requests if r["method"] == "DELETE"]  # kept for its logs


def test_retried_task_adopts_the_existing_job_and_survives_api_hiccups(fake_api) -> None:
    FakeApi.exists, FakeApi.get_errors = True, 2
    FakeApi.script = [{"conditions": [_cond("Succeeded")]}]
    obj = tj.run_job(tj.job_spec("j2", _settings()), NS, api=fake_api, poll_s=0, sleep=lambda s: None)
    assert tj.job_state(obj)[0] == "Succeeded"
    assert [r["method"] for r in FakeApi.requests] == ["POST", "GET", "GET", "GET"]


def test_timeout_deletes_the_job(fake_api) -> None:
    FakeApi.script = [{"conditions": [_cond("Running")]}]
    with pytest.raises(tj.JobFailed, match="did not finish"):
        tj.run_job(tj.job_spec("j3", _settings()), NS, api=fake_api, poll_s=0.01, timeout_s=0.05,
                   sleep=lambda s: tj.time.sleep(s))
    (delete,) = [r for r in FakeApi.requests if r["method"] == "DELETE"]
    assert delete["path"] == f"{BASE}/j3"


def test_vanished_job_and_refused_create_are_errors(fake_api) -> None:
    FakeApi.script = [404]
    with pytest.raises(tj.JobFailed, match="disappeared"):
        tj.run_job(tj.job_spec("j4", _settings()), NS, api=fake_api, poll_s=0, sleep=lambda s: None)
    FakeApi.script, FakeApi.get_errors = [{"conditions": [_cond("Running")]}], 10
    with pytest.raises(tj.JobFailed, match="cannot read"):
        tj.run_job(tj.job_spec("j5", _settings()), NS, api=fake_api, poll_s=0, sleep=lambda s: None,
                   max_api_errors=3)


def test_train_distributed_brings_rank0_output_to_the_model_artifact(fake_api, s3_bucket, tmp_path) -> None:
    """What the component does: run the job, then copy the job's output (uploaded by the Master
    pod) into the step's own model folder, which KFP uploads as the model artifact."""
    from startup_recs.core import storage

    out_uri = f"{s3_bucket}/v2/artifacts/run-1/train-two-tower-final/9/model_ddp"
    src = tmp_path / "rank0"
    src.mkdir()
    (src / "two_tower_reverse_v1_config.json").write_text("{}")
    (src / tj.JOB_INFO).write_text(json.dumps({"best_val": 0.5, "epochs_run": 3}))
    storage.upload_dir(src, out_uri)
    FakeApi.script = [{"conditions": [_cond("Succeeded")]}]
    s = _settings(output_uri=out_uri)
    info = tj.train_distributed(s, str(tmp_path / "model"), namespace=NS, api=fake_api, poll_s=0)
    assert info["best_val"] == 0.5 and info["workers"] == 3 and info["pytorchjob"].startswith(f"{NS}/two-tower-ddp-")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["two_tower_reverse_v1_config.json"]
    (post,) = [r for r in FakeApi.requests if r["method"] == "POST"]
    assert post["body"]["metadata"]["name"] == tj.job_name(out_uri)
