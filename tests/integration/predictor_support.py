"""Helpers of the predictor integration tests: build a servable models folder from a snapshot
with the real CLI steps, publish it, and run a real ModelServer in a subprocess on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from startup_recs.cli import main as recs
from startup_recs.core import bundle, storage
from startup_recs.core.usecases import get_use_case
from startup_recs.data.snapshot import load_snapshot
from startup_recs.data.split import TimeSplit
from startup_recs.serving.data import ServingData

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_models_dir(snapshot: str, use_case: str, work: Path, *, two_tower: bool = True,
                     ranker: bool = False) -> Path:
    """A servable models folder, as the pipeline lays it out: final ALS (+ two-tower) fitted on
    events before the test split, ``serving/`` data of the same window, ``routing.json`` (warm ->
    ALS, so the three segments take three different routes). Tiny settings: seconds, not minutes.

    ``ranker``: add a RankerMLP (saved with ``models.ranker.save``) over this data's feature
    columns, with its initial weights: training it needs the stage-1 pipeline, and the predictor's
    re-ranking path only needs a valid ranker, not a good one."""
    sfx = get_use_case(use_case).suffix
    ds, models = work / "als_ds", work / "models"
    models.mkdir(parents=True)
    assert recs(["dataset", "als", "--snapshot", snapshot, "--use-case", use_case, "--output-dir", str(ds),
                 "--fit-window", "trainval"]) == 0
    assert recs(["train", "als", "--data", str(ds / f"als_interactions{sfx}.npz"),
                 "--user-mapping", str(ds / f"als{sfx}_user_mapping.json"),
                 "--item-mapping", str(ds / f"als{sfx}_item_mapping.json"), "--use-case", use_case,
                 "--factors", "16", "--iterations", "5", "--output-dir", str(models)]) == 0
    if two_tower:
        tt = work / "tt_ds"
        tt.mkdir()
        assert recs(["dataset", "two-tower", "--snapshot", snapshot, "--use-case", use_case,
                     "--output", str(tt / "pairs.parquet")]) == 0
        assert recs(["train", "two-tower", "--data", str(tt / "pairs.parquet"), "--use-case", use_case,
                     "--epochs", "2", "--embedding-dim", "16", "--batch-size", "512", "--device", "cpu",
                     "--output-dir", str(models)]) == 0
    snap = load_snapshot(snapshot)
    split = TimeSplit.resolve(snap.events(use_case)["ts"])
    data = ServingData.from_snapshot(snap, use_case, until=split.split_at)
    data.save(str(models / "serving"))
    if ranker:
        import torch

        from startup_recs.models.ranker import RankerConfig, RankerMLP, save
        from startup_recs.serving.ranking_features import feature_names

        torch.manual_seed(0)
        names = feature_names(data)
        cfg = RankerConfig(use_case=use_case, features=names, hidden=[16], mean=[0.0] * len(names),
                           std=[1.0] * len(names))
        save(RankerMLP(len(names), cfg.hidden, 0.0, cfg.mean, cfg.std), cfg, str(models))
    (models / "routing.json").write_text(json.dumps({"warm": "als", "chosen_on": "validation", "val_ndcg@10": {}}))
    return models


def publish(models: Path, models_uri: str, use_case: str) -> dict:
    return bundle.publish(models, models_uri, use_case, metrics={"note": "integration test"}, watermark=None)


def variant(models: Path, work: Path, tag: str) -> Path:
    """A copy of ``models`` with one extra file (``release.txt``): a different bundle. Publishing
    the same folder twice is reported unchanged and publishes nothing."""
    out = work / f"models-{tag}"
    shutil.copytree(models, out)
    (out / "release.txt").write_text(tag)
    return out


def publish_corrupt(models_root: Path, use_case: str) -> int:
    """Copy the latest bundle to the next ``v<N>``, flip bytes of one listed file, then move
    ``latest`` to it: a complete-looking bundle whose checksum check must fail."""
    ptr = json.loads((models_root / use_case / "latest").read_text())
    src = models_root / use_case / ptr["path"]
    version = max(bundle.versions(str(models_root), use_case)) + 1
    dst = models_root / use_case / f"v{version}"
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["version"] = version
    (dst / "manifest.json").write_text(json.dumps(manifest))
    victim = next(dst / rel for rel in sorted(manifest["files"]) if rel.endswith(".npy"))
    data = bytearray(victim.read_bytes())
    data[-8:] = bytes(8)
    victim.write_bytes(bytes(data))
    storage.write_json(str(models_root / use_case / "latest"), {"version": version, "path": f"v{version}",
                                                               "updated_at": "2026-01-01T00:00:00+00:00"})
    return version


class Server:
    """A predictor process on 127.0.0.1:<port>; its combined output goes to ``log_path``."""

    def __init__(self, args: list[str], log_path: Path, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'src'}", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(args + self.port_args(args), cwd=REPO, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def port_args(self, args: list[str]) -> list[str]:
        if "predictors" in args:
            return ["--http_port", str(self.port), "--enable_grpc", "false", "--host", "127.0.0.1"]
        return ["--port", str(self.port)]

    @classmethod
    def module(cls, bundles: list[str], log_path: Path, *extra: str) -> Server:
        """``python -m predictors`` (the image's entry point)."""
        args = [PY, "-m", "predictors"]
        for b in bundles:
            args += ["--bundle", b]
        return cls(args + list(extra), log_path)

    @classmethod
    def recs_serve(cls, bundles: list[str], log_path: Path, *extra: str) -> Server:
        args = [PY, "-m", "startup_recs.cli", "serve"]
        for b in bundles:
            args += ["--bundle", b]
        return cls(args + list(extra), log_path)

    def wait_live(self, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"predictor exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/v2/health/live", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"predictor not live after {timeout}s:\n{self.log()}")

    def wait_ready(self, model: str, timeout: float = 60.0) -> None:
        self.wait_live(timeout)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if httpx.get(f"{self.url}/v2/models/{model}/ready", timeout=30).status_code == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"model {model} not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode
