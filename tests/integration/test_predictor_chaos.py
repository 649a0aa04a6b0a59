"""Chaos and load on a real predictor (``python -m predictors`` on 127.0.0.1) over a real
S3-protocol server (moto's, over HTTP) that the test stops and restarts.

- ``latest`` names a corrupt version at start: the pod serves the previous good one at once and
  exports ``recs_bundle_fallback 1``;
- concurrent requests for ``RECS_LOAD_SECONDS`` (default 20; the report runs 60) across a hot
  reload and an S3 outage: every request answers 200, the outage is logged once (backoff, no
  warning per poll), and the bundle published after the restart is picked up. p50/p99 are
  printed (``-s`` shows them) and written to ``$RECS_LOAD_REPORT`` when set.

moto keeps its buckets in this process's memory, so a new server thread on the same port after
a stop sees the same objects: an outage of the endpoint, not a loss of data.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from startup_recs.core import bundle, storage
from startup_recs.serving.data import ServingData
from tests.integration.predictor_support import (
    Server,
    build_models_dir,
    free_port,
    publish,
    publish_corrupt,
    variant,
)

UC = "startup_investor"
MODEL = "startup-investor"
ROUTE = "/api/recommendations/investors/for-startup/"
LOAD_SECONDS = float(os.environ.get("RECS_LOAD_SECONDS", "20"))


class Moto:
    """A moto S3 server on a fixed loopback port that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        deadline = time.monotonic() + 20
        while True:
            try:
                self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
                self._server.start()
                httpx.get(self.url, timeout=2)
                return
            except (OSError, httpx.HTTPError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_snapshot: str) -> Path:
    return build_models_dir(tiny_snapshot, UC, tmp_path_factory.mktemp("chaos") / "work", two_tower=False)


def _entities(models: Path, n: int = 50) -> list[str]:
    return list(ServingData.load(str(models / "serving")).known_entities()[:n])


def _metric(url: str, name: str) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    m = re.search(rf'^{name}\{{[^}}]*model="{MODEL}"[^}}]*\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def test_corrupt_latest_at_start_serves_previous_good_version(models_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "published"
    publish(models_dir, str(root), UC)
    assert publish_corrupt(root, UC) == 2
    cache = tmp_path / "cache"
    (cache / "bundle-left-by-a-dead-pod").mkdir(parents=True)
    srv = Server.module([f"{UC}={root / UC}"], tmp_path / "server.log", "--reload-interval", "0.5",
                        "--cache-dir", str(cache))
    try:
        srv.wait_ready(MODEL, timeout=90)
        entity = _entities(models_dir, 1)[0]
        body = httpx.get(f"{srv.url}{ROUTE}{entity}", timeout=30).json()
        assert body["model_version"] == "v1"
        assert _metric(srv.url, "recs_bundle_fallback") == 1.0
        assert "FALLBACK" in srv.log() and "checksum mismatch" in srv.log()
        assert not (cache / "bundle-left-by-a-dead-pod").exists()
        assert len([d for d in cache.iterdir() if d.name.startswith("bundle-")]) == 1
        publish(variant(models_dir, tmp_path, "fixed"), str(root), UC)  # a good v3: fallback over
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if httpx.get(f"{srv.url}{ROUTE}{entity}", timeout=30).json()["model_version"] == "v3":
                break
            time.sleep(0.3)
        assert _metric(srv.url, "recs_bundle_fallback") == 0.0
    finally:
        srv.stop()


def _load(url: str, entities: list[str], stop: threading.Event, out: list, errors: list) -> None:
    i = 0
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            e = entities[i % len(entities)]
            i += 1
            t0 = time.perf_counter()
            try:
                r = c.get(f"{ROUTE}{e}", params={"limit": 10})
                ok = r.status_code == 200
                version = r.json().get("model_version") if ok else None
            except (httpx.HTTPError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            dt = time.perf_counter() - t0
            if not ok:
                errors.append(f"{r.status_code}: {r.text[:200]}")
            else:
                out.append((time.monotonic(), dt, version))


def test_load_across_hot_reload_and_s3_outage(models_dir: Path, tmp_path: Path, s3_server: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    moto = Moto()
    moto.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # each poll fails fast during the outage
    monkeypatch.setenv("RECS_REQUEST_TIMEOUT", "10")
    storage.s3_client().create_bucket(Bucket="models")
    models_uri = "s3://models/root"
    publish(models_dir, models_uri, UC)
    srv = Server.module([f"{UC}={models_uri}/{UC}"], tmp_path / "server.log", "--reload-interval", "0.5",
                        "--cache-dir", str(tmp_path / "cache"))
    stop, results, errors = threading.Event(), [], []
    workers: list[threading.Thread] = []
    try:
        srv.wait_ready(MODEL, timeout=90)
        entities = _entities(models_dir)
        workers = [threading.Thread(target=_load, args=(srv.url, entities, stop, results, errors), daemon=True)
                   for _ in range(4)]
        t0 = time.monotonic()
        for w in workers:
            w.start()
        phase = LOAD_SECONDS / 5

        def wait_until(t: float) -> None:
            time.sleep(max(0.0, t0 + t - time.monotonic()))

        wait_until(phase)
        publish(variant(models_dir, tmp_path, "v2"), models_uri, UC)  # hot reload under load
        wait_until(2 * phase)
        moto.stop()  # S3 outage while the poller polls
        outage = (time.monotonic(), None)
        wait_until(3.5 * phase)
        moto.start()
        outage = (outage[0], time.monotonic())
        publish(variant(models_dir, tmp_path, "v3"), models_uri, UC)
        wait_until(5 * phase)
        stop.set()
        for w in workers:
            w.join(30)
        elapsed = time.monotonic() - t0
        log = srv.log()
        published = bundle.versions(models_uri, UC)
    finally:
        stop.set()
        srv.stop()
        moto.stop()
    assert not errors, errors[:5]
    versions = [v for _, _, v in results]
    assert {"v1", "v2", "v3"} <= set(versions), sorted(set(versions))
    assert versions[-1] == "v3"
    during = [v for t, _, v in results if outage[0] <= t <= outage[1]]
    assert during and set(during) == {"v2"}  # the outage changed nothing for clients
    assert log.count("cannot reach") == 1 and "storage reachable again" in log  # backoff, one warning
    lat = np.array([d for _, d, _ in results]) * 1000
    report = {"seconds": round(elapsed, 1), "requests": len(lat), "errors": len(errors),
              "rps": round(len(lat) / elapsed, 1), "p50_ms": round(float(np.percentile(lat, 50)), 2),
              "p99_ms": round(float(np.percentile(lat, 99)), 2), "max_ms": round(float(lat.max()), 2),
              "loadavg": [round(x, 2) for x in os.getloadavg()], "versions_seen": sorted(set(versions))}
    print("load report:", json.dumps(report))
    if os.environ.get("RECS_LOAD_REPORT"):
        Path(os.environ["RECS_LOAD_REPORT"]).write_text(json.dumps(report, indent=2))
    assert published == [1, 2, 3]
