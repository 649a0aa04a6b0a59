"""``recs pipeline submit`` through kfp.Client.

No Kubeflow Pipelines API server can run here (it needs Kubernetes, MySQL and Argo), so these
tests point kfp.Client at a small fake HTTP endpoint on loopback that answers the KFP v2beta1 REST
calls with minimal valid bodies and records every request. The assertions are on what kfp sends:
the compiled pipeline spec inside the run, its runtime parameters, the recurring run's cron.
A wrong host is a real connection failure, not a fake.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("kfp")

from startup_recs.cli import main  # noqa: E402


class _Recorder(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        rec = {"method": self.command, "path": self.path, "headers": dict(self.headers),
               "body": json.loads(raw) if raw else None}
        type(self).requests.append(rec)
        return rec

    def do_GET(self) -> None:
        rec = self._record()
        if rec["path"].startswith("/apis/v2beta1/healthz"):
            self._answer({"multi_user": False})
        elif rec["path"].startswith("/apis/v2beta1/experiments"):
            self._answer({"experiments": [], "total_size": 0})
        else:
            self._answer({})

    def do_POST(self) -> None:
        rec = self._record()
        body = rec["body"] or {}
        if rec["path"].startswith("/apis/v2beta1/experiments"):
            self._answer({"experiment_id": "exp-1", "display_name": body.get("display_name")})
        elif rec["path"].startswith("/apis/v2beta1/recurringruns"):
            self._answer({"recurring_run_id": "rr-1", "display_name": body.get("display_name")})
        elif rec["path"].startswith("/apis/v2beta1/runs"):
            self._answer({"run_id": "run-1", "display_name": body.get("display_name"), "experiment_id": "exp-1"})
        else:
            self._answer({})


@pytest.fixture
def fake_kfp() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Recorder.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.requests
    finally:
        server.shutdown()
        server.server_close()


def _posts(requests: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [r for r in requests if r["method"] == "POST" and r["path"].startswith(prefix)]


def test_submit_sends_the_compiled_pipeline_and_parameters(fake_kfp, capsys) -> None:
    host, requests = fake_kfp
    rc = main(["pipeline", "submit", "--host", host, "--experiment", "recs-test", "--token", "t0k",
               "--param", "models_uri=s3://models", "--param", "db_url=postgresql+psycopg://db/app",
               "--param", "tt_epochs=7", "--param", "use_cases=startup_investor",
               "--option", "gpu_node_label_value=a100"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"run_id": "run-1"}
    assert requests[0]["path"].startswith("/apis/v2beta1/healthz")
    (exp,) = _posts(requests, "/apis/v2beta1/experiments")
    assert exp["body"]["display_name"] == "recs-test"
    (run,) = _posts(requests, "/apis/v2beta1/runs")
    headers = {k.lower(): v for k, v in run["headers"].items()}
    assert headers.get("authorization") == "Bearer t0k"
    body = run["body"]
    assert body["experiment_id"] == "exp-1"
    # with a platform config, kfp sends {"pipeline_spec": IR, "platform_spec": k8s config}
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "reverse-recommendation-training"
    params = body["runtime_config"]["parameters"]
    assert params == {"models_uri": "s3://models", "db_url": "postgresql+psycopg://db/app", "tt_epochs": 7,
                      "use_cases": ["startup_investor"]}
    # the platform config (GPU pool) travels with the run, with the compile option applied
    k8s = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-train-two-tower"]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "a100"}


def test_schedule_creates_a_recurring_run(fake_kfp, capsys) -> None:
    host, requests = fake_kfp
    rc = main(["pipeline", "submit", "--host", host, "--schedule", "0 3 * * *",
               "--param", "models_uri=s3://models", "--param", "db_url=sqlite:///x.db"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["recurring_run_id"] == "rr-1" and out["cron"] == "0 0 3 * * *"
    (rr,) = _posts(requests, "/apis/v2beta1/recurringruns")
    body = rr["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert body["max_concurrency"] in (1, "1")
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "reverse-recommendation-training"
    assert body["runtime_config"]["parameters"]["models_uri"] == "s3://models"
    assert not _posts(requests, "/apis/v2beta1/runs")


def test_wrong_host_is_a_one_line_error(capsys) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["pipeline", "submit", "--host", f"http://127.0.0.1:{port}", "--param", "models_uri=s3://m",
               "--param", "db_url=sqlite:///x.db"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(f"error: cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}")


@pytest.mark.parametrize(("argv", "message"), [
    (["--param", "db_url=x"], "error: missing pipeline parameter(s): models_uri"),
    (["--param", "models_uri=s3://m", "--param", "colour=red"], "error: unknown pipeline parameter 'colour'"),
    (["--param", "models_uri=s3://m", "--param", "tt_epochs=many"], "error: bad --param tt_epochs='many'"),
    (["--param", "models_uri=s3://m", "--schedule", "daily"], "error: bad --schedule 'daily'"),
])
def test_bad_submit_input_is_a_one_line_error(fake_kfp, capsys, argv: list[str], message: str) -> None:
    host, requests = fake_kfp
    rc = main(["pipeline", "submit", "--host", host, *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(message), err
    assert not _posts(requests, "/apis/v2beta1/runs")
