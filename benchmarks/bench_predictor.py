"""Predictor latency, throughput and memory: the legacy GET route of a real KServe ModelServer
under load from a second process on loopback, beside a trivial model served the same way.

Scenarios (each its own server process, started and stopped in this run):
- ``trivial``: a RecsModel whose "recommender" returns a constant 10-candidate answer: the
  floor of kserve + FastAPI + our request guard, parsing and metrics;
- ``demo``: a synthetic bundle of demo size (5,000 startups x 40,000 developers);
- ``100k``: 100,000 candidates, 20,000 startups, re-ranking of the top 200 by the MLP ranker;
- ``1m``: 1,000,000 candidates, 50,000 startups, dim 64, re-ranking of the top 200;
- ``<scenario>+log`` (e.g. ``100k+log``): the same bundle served with ``--log-sessions`` into a
  SQLite app database in the work folder: the latency that session logging adds.
Synthetic bundles use the real classes end to end (ServingData with feature tables resampled
from the tiny synthetic marketplace, ALS factors, a RankerMLP with random weights, routing.json,
the publish-time ANN build of serving/ann_build.py and cold entities' content lists of
serving/content_lists.py, bundle.publish); only the numbers in the
factors and weights are random. The factors are drawn like trained embeddings (clusters in a
space whose variance decays over the dimensions), not isotropic noise: isotropic Gaussian vectors
have no neighbourhood structure, so no ANN index beats a full scan on them. Catalogues of 50k
candidates or more get a faiss IVF index (ann/als.faiss) tuned to recall@200 >= 0.95. ``--demo-bundle URI``
benchmarks a real published bundle (e.g. from ``make demo``) instead of the synthetic demo one.

Per scenario: max throughput (closed loop, ``--concurrency`` connections, ``--duration`` s) and
latency at a fixed offered rate (open loop, ``--rate`` req/s, latency counted from the scheduled
send time so queueing is not hidden). Peak RSS is the server's VmHWM. Client: aiohttp in a
second process. Usage::

    .venv/bin/python benchmarks/bench_predictor.py [--scenarios trivial,demo,100k,1m] [--duration 10]

Each scenario prints one JSON line on stdout (scenario, c1_p50, c1_p99, max_rps, rps_vs_trivial,
p50, p99, errors, rss, load_s, ann_recall@200, loadavg) as soon as it is done; a table follows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]
UC = "startup_developer"
ROUTE = "/api/recommendations/developers/for-startup/"
SCENARIOS = {"demo": (5_000, 40_000), "100k": (20_000, 100_000), "1m": (50_000, 1_000_000)}


# --- synthetic bundles --------------------------------------------------------------------------
def _tiny_features(work: Path):
    """Feature frames of the tiny synthetic marketplace (real column shapes and vocabularies)."""
    from startup_recs import synth
    from startup_recs.data import appdb
    from startup_recs.data.extract import extract_db
    from startup_recs.data.snapshot import load_snapshot

    snap_dir = work / "tiny_snapshot"
    if not (snap_dir / "extract_stats.json").exists():
        tables = synth.generate("tiny", 0)
        appdb.write_db({k: v for k, v in tables.items() if k != "oracle"}, str(work / "tiny.db"))
        extract_db(str(work / "tiny.db"), str(snap_dir))
    snap = load_snapshot(str(snap_dir))
    return snap.entity_features(UC), snap.candidate_features(UC)


def build_bundle(work: Path, n_entities: int, n_candidates: int, *, dim: int = 64, seed: int = 0) -> tuple[str, list[str]]:
    """Publish a synthetic ``startup_developer`` bundle; returns (use-case URI, request ids)."""
    import numpy as np
    import pandas as pd

    from startup_recs.core import bundle
    from startup_recs.models.ranker import RankerConfig, RankerMLP, save
    from startup_recs.serving.data import ServingData
    from startup_recs.serving.ranking_features import feature_names

    rng = np.random.default_rng(seed)
    ef0, cf0 = _tiny_features(work)
    ent_ids = np.array([f"s{i:07d}" for i in range(n_entities)], dtype=object)
    cand_ids = np.array([f"u{i:07d}" for i in range(n_candidates)], dtype=object)
    ef = ef0.iloc[rng.integers(0, len(ef0), n_entities)].set_axis(pd.Index(ent_ids, name=ef0.index.name))
    cf = cf0.iloc[rng.integers(0, len(cf0), n_candidates)].set_axis(pd.Index(cand_ids, name=cf0.index.name))
    # interaction counts: 30 % cold (0-4), 40 % warm (5-19), 30 % hot (20-60)
    seg = rng.choice(3, n_entities, p=[0.3, 0.4, 0.3])
    counts = np.where(seg == 0, rng.integers(0, 5, n_entities),
                      np.where(seg == 1, rng.integers(5, 20, n_entities), rng.integers(20, 61, n_entities)))
    rows = np.repeat(np.arange(n_entities), counts)
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    events = pd.DataFrame({
        "entity_id": ent_ids[rows],
        "candidate_id": cand_ids[rng.integers(0, n_candidates, len(rows))],
        "ts": t0 + pd.to_timedelta(rng.uniform(0, 150, len(rows)), unit="D"),
        "event": rng.choice(["view", "click", "contact"], len(rows), p=[0.6, 0.3, 0.1]),
    })
    events["weight"] = events["event"].map({"view": 1.0, "click": 2.0, "contact": 5.0})
    data = ServingData.from_events(events, UC, t0 + pd.Timedelta(days=151), entity_features=ef, candidate_features=cf)
    models = work / f"models-{n_candidates}"
    shutil.rmtree(models, ignore_errors=True)
    models.mkdir(parents=True)
    data.save(str(models / "serving"))
    stem = "als_reverse_v1"
    known = sorted(set(events["entity_id"]))
    np.save(models / f"{stem}_user_factors.npy", embedding_like(rng, len(known), dim))
    np.save(models / f"{stem}_item_factors.npy", embedding_like(rng, n_candidates, dim))
    (models / f"{stem}_user_mapping.json").write_text(json.dumps({e: i for i, e in enumerate(known)}))
    (models / f"{stem}_item_mapping.json").write_text(json.dumps({c: i for i, c in enumerate(cand_ids.tolist())}))
    (models / f"{stem}_config.json").write_text(json.dumps({"use_case": UC, "factors": dim, "files": {
        "user_factors": f"{stem}_user_factors.npy", "item_factors": f"{stem}_item_factors.npy",
        "user_mapping": f"{stem}_user_mapping.json", "item_mapping": f"{stem}_item_mapping.json"}}))
    names = feature_names(data)
    cfg = RankerConfig(use_case=UC, features=names, hidden=[64, 32], mean=[0.0] * len(names), std=[1.0] * len(names))
    save(RankerMLP(len(names), cfg.hidden, 0.0, cfg.mean, cfg.std), cfg, str(models))
    (models / "routing.json").write_text(json.dumps({"warm": "als", "chosen_on": "default", "val_ndcg@10": {}}))
    from startup_recs.serving import content_lists
    from startup_recs.serving.ann_build import build_indexes

    t_ann = time.time()
    summary = build_indexes(models)  # what the publish step does on its staging copy
    print(f"ann indexes of {n_candidates:,} candidates: {summary} ({time.time() - t_ann:.0f} s)", file=sys.stderr)
    lists = content_lists.build(models)
    print(f"content lists: {lists}", file=sys.stderr)
    root = work / f"published-{n_candidates}"
    shutil.rmtree(root, ignore_errors=True)
    bundle.publish(models, str(root), UC, metrics={"synthetic": True}, watermark=None,
                   extra={"ann": summary, "content_lists": lists})
    return str(root / UC), random.Random(seed).sample(ent_ids.tolist(), 500)


def embedding_like(rng, n: int, dim: int, clusters: int = 1000):
    """``float32 [n, dim]`` vectors shaped like trained embeddings: ``clusters`` centres shared by
    both sides (the same generator state order makes entity and candidate centres alike), plus
    noise, with per-dimension scale ``exp(-j / 16)`` (a decaying spectrum)."""
    import numpy as np

    centres = np.random.default_rng(12345).standard_normal((clusters, dim))
    scale = np.exp(-np.arange(dim) / 16) / 4
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 200_000):  # bounded temporaries at 1M rows
        m = min(200_000, n - lo)
        out[lo:lo + m] = (centres[rng.integers(0, clusters, m)] + 0.5 * rng.standard_normal((m, dim))) * scale
    return out


# --- servers ------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_trivial(port: int) -> None:
    """The trivial model: same ModelServer, routes, guard and RecsModel; a constant answer."""
    from predictors.model import RecsModel
    from predictors.server import serve
    from startup_recs.serving.reload import BundleSlot, LoadedBundle

    class Constant:
        answer = {"entity_id": "", "candidates": [{"id": f"u{i}", "score": 1.0 - i / 10, "rank": i + 1,
                                                   "match_reasons": []} for i in range(10)],
                  "method_used": "trivial", "segment": "none", "model_version": "v0", "reranked": False,
                  "interaction_count": 0, "total": 10}

        def recommend(self, entity_id: str, limit: int) -> dict:
            return {**self.answer, "entity_id": entity_id}

    slot = BundleSlot("trivial", UC)
    slot._current = LoadedBundle(uri="trivial", version="v0", manifest={"version": 0}, model=Constant(),
                                 local_dir=Path("."))
    serve([], host="127.0.0.1", port=port, reload_interval=0, models=[RecsModel(slot)])


class Server:
    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.port, self.log = port, log
        env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'src'}", "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self._f = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=self._f, stderr=subprocess.STDOUT)

    @classmethod
    def bundle(cls, uri: str, log: Path, extra: tuple[str, ...] = ()) -> Server:
        port = _free_port()
        return cls([sys.executable, "-m", "predictors", "--bundle", uri, "--http_port", str(port),
                    "--host", "127.0.0.1", "--enable_grpc", "false", "--reload-interval", "0", *extra], port, log)

    @classmethod
    def trivial(cls, log: Path) -> Server:
        port = _free_port()
        return cls([sys.executable, __file__, "--serve-trivial", str(port)], port, log)

    def wait_ready(self, timeout: float = 600) -> None:
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/models/startup-developer/ready",
                                            timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server not ready")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._f.close()


# --- load generator (runs in its own process) ---------------------------------------------------
async def _load(url: str, ids: list[str], duration: float, concurrency: int, rate: float | None) -> dict:
    import aiohttp

    lat: list[float] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=max(concurrency, 64))
    timeout = aiohttp.ClientTimeout(total=max(2.0, duration / 2))  # a request slower than this is a failure
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        async def one(i: int, t_sched: float) -> None:
            nonlocal errors
            try:
                async with session.get(f"{url}{ROUTE}{ids[i % len(ids)]}", params={"limit": "10"}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        return
            except (TimeoutError, aiohttp.ClientError):
                errors += 1
                return
            lat.append(time.perf_counter() - t_sched)

        for i in range(20):  # warm-up (connections, caches)
            await one(i, time.perf_counter())
        lat.clear()
        start = time.perf_counter()
        if rate is None:  # closed loop: `concurrency` workers back to back
            async def worker(w: int) -> None:
                i = w
                while time.perf_counter() - start < duration:
                    await one(i, time.perf_counter())
                    i += concurrency

            await asyncio.gather(*(worker(w) for w in range(concurrency)))
        else:  # open loop at `rate` req/s, latency from the scheduled time
            tasks, i = [], 0
            while (t := start + i / rate) < start + duration:
                now = time.perf_counter()
                if t > now:
                    await asyncio.sleep(t - now)
                tasks.append(asyncio.create_task(one(i, t)))
                i += 1
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {"n": len(lat), "errors": errors, "rps": len(lat) / elapsed, "p50": pct(0.5), "p99": pct(0.99)}


def run_load(url: str, ids: list[str], duration: float, concurrency: int, rate: float | None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(ids, f)
    cmd = [sys.executable, __file__, "--load", url, "--ids", f.name, "--duration", str(duration),
           "--concurrency", str(concurrency), "--rate", str(rate or 0)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration * 4 + 120)
    os.unlink(f.name)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- main ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="trivial,demo,100k")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
    ap.add_argument("--concurrency", type=int, default=8, help="connections of the closed-loop phase")
    ap.add_argument("--rate", type=float, default=300.0, help="offered req/s of the open-loop phase (0: closed loop)")
    ap.add_argument("--demo-bundle", default=None, help="a published startup_developer bundle/use-case URI")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--reuse", action="store_true", help="serve bundles an earlier run left in --workdir")
    ap.add_argument("--serve-trivial", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--load", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ids", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_trivial:
        serve_trivial(args.serve_trivial)
        return
    if args.load:
        ids = json.loads(Path(args.ids).read_text())
        rate = args.rate if args.rate > 0 else None  # 0: closed loop
        print(json.dumps(asyncio.run(_load(args.load, ids, args.duration, args.concurrency, rate))))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-predictor-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    built: dict[str, tuple[str, list[str]]] = {}  # a "+log" scenario serves its base scenario's bundle
    for name in args.scenarios.split(","):
        t = time.time()
        core, load_s, ann_info = float("nan"), float("nan"), {}
        base, _, variant = name.partition("+")
        extra = ("--log-sessions", f"sqlite:///{work / f'sessions-{base}.db'}") if variant == "log" else ()
        if name == "trivial":
            srv, n_cand, ids = Server.trivial(work / "trivial.log"), 0, [f"s{i}" for i in range(500)]
        else:
            if name == "demo" and args.demo_bundle:
                uri = args.demo_bundle
                ids = None
            else:
                n_ent, n_cand = SCENARIOS[base]
                uri, ids = built.get(base) or (reuse_bundle(work, n_ent, n_cand) if args.reuse else (None, None))
                if uri is None:
                    uri, ids = build_bundle(work, n_ent, n_cand)
                built[base] = (uri, ids)
            n_cand, ids, core, load_s, ann_info = core_latency(uri, ids)
            t = time.time()
            srv = Server.bundle(uri, work / f"{name}.log", extra)
        try:
            srv.wait_ready()
            ready = time.time() - t
            url = f"http://127.0.0.1:{srv.port}"
            one = run_load(url, ids, args.duration, 1, None)
            many = run_load(url, ids, args.duration, args.concurrency, None)
            opened = run_load(url, ids, args.duration, args.concurrency, args.rate)
            row = {"scenario": name, "candidates": n_cand, "ready_s": ready, "load_s": load_s, "core_p50": core,
                   "c1_p50": one["p50"], "c1_p99": one["p99"], "max_rps": max(one["rps"], many["rps"]),
                   "p50": opened["p50"], "p99": opened["p99"], "achieved": opened["rps"],
                   "errors": one["errors"] + many["errors"] + opened["errors"], "rss": srv.peak_rss_mib(),
                   "loadavg": [round(x, 2) for x in os.getloadavg()]}
            for retriever, info in ann_info.items():
                row["ann"] = {"retriever": retriever, **{k: v for k, v in info.items() if not k.startswith("recall")}}
                row["ann_recall@200"] = info.get("recall@200")
            triv = next((r for r in rows if r["scenario"] == "trivial"), None)
            row["rps_vs_trivial"] = row["max_rps"] / triv["max_rps"] if triv else None
            rows.append(row)
        finally:
            srv.stop()
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows, args)


def reuse_bundle(work: Path, n_entities: int, n_candidates: int, seed: int = 0) -> tuple[str | None, list[str] | None]:
    """A bundle an earlier run published in ``work`` (``--reuse``), with the same request ids."""
    root = work / f"published-{n_candidates}" / UC
    if not (root / "latest").is_file():
        return None, None
    ids = [f"s{i:07d}" for i in range(n_entities)]
    return str(root), random.Random(seed).sample(ids, 500)


def core_latency(uri: str, ids: list[str] | None, n: int = 40) -> tuple[int, list[str], float, float, dict]:
    """In-process serving core: ``(candidates, request ids, median Recommender.recommend(id, 10)
    ms, bundle load s (fetch, checksum verify, Recommender.load), the manifest's ANN summary)``."""
    import gc
    import statistics

    from startup_recs.serving.reload import load_bundle

    t0 = time.perf_counter()
    b = load_bundle(uri)
    load_s = time.perf_counter() - t0
    data = b.model.data
    if ids is None:
        ids = random.Random(0).sample(data.known_entities(), min(500, len(data.known_entities())))
    times: list[float] = []
    for e in ids[:n]:
        t0 = time.perf_counter()
        b.model.recommend(e, 10)
        times.append((time.perf_counter() - t0) * 1000)
        if sum(times) > 20_000 and len(times) >= 5:  # a slow core: 5 samples are enough to say so
            break
    out = data.n_candidates, ids, statistics.median(times), load_s, dict(b.manifest.get("ann") or {})
    del b, data
    gc.collect()  # the server process loads its own copy next
    return out


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    triv = next((r for r in rows if r["scenario"] == "trivial"), None)
    print(f"\npredictor legacy route (limit=10), loopback, {os.cpu_count()} CPUs, aiohttp client in a second process, "
          f"{args.duration:.0f} s per phase; load average {os.getloadavg()[0]:.1f}")
    cols = [("scenario", 8), ("candidates", 10), ("load s", 6), ("core p50", 8), ("c=1 p50", 7), ("c=1 p99", 7),
            (f"max req/s c={args.concurrency}", 13), ("x trivial", 9), (f"p50 @{args.rate:.0f}/s", 10),
            (f"p99 @{args.rate:.0f}/s", 10), ("achieved/s", 10), ("overhead p50", 12), ("errors", 6),
            ("peak RSS MiB", 12), ("ANN recall@200", 14)]
    print("| " + " | ".join(f"{c:>{w}}" for c, w in cols) + " |")
    print("|" + "|".join("-" * (w + 2) for _, w in cols) + "|")
    for r in rows:
        over = r["c1_p50"] - triv["c1_p50"] if triv else float("nan")
        ratio = r["max_rps"] / triv["max_rps"] if triv else float("nan")
        recall = r.get("ann_recall@200")
        vals = [r["scenario"], f"{r['candidates']:,}", f"{r['load_s']:.1f}", f"{r['core_p50']:.2f}",
                f"{r['c1_p50']:.2f}", f"{r['c1_p99']:.2f}", f"{r['max_rps']:.0f}", f"{ratio:.2f}",
                f"{r['p50']:.1f}", f"{r['p99']:.1f}", f"{r['achieved']:.0f}", f"{over:.2f}", str(r["errors"]),
                f"{r['rss']:.0f}", "exact" if recall is None else f"{recall:.3f}"]
        print("| " + " | ".join(f"{v:>{w}}" for v, (_, w) in zip(vals, cols, strict=True)) + " |")
    print("times in ms. core = Recommender.recommend in-process; c=1 = one connection back to back; "
          "overhead = c=1 p50 minus the trivial model's; errors = non-200 or > timeout; load = bundle fetch, "
          "checksums and Recommender.load in-process.\n"
          "targets: 100k: max req/s >= 0.2 x trivial, c=1 p99 <= 10 ms, p99 <= 15 ms and 0 errors at 300 req/s; "
          "1m: max req/s >= 0.1 x trivial, c=1 p99 <= 15 ms, ANN recall@200 >= 0.95, peak RSS <= 2.5 GiB, "
          "load <= 30 s")

if __name__ == "__main__":
    main()
