"""Online evaluation benchmarks on the synthetic marketplace (docs/online.md).

``aa`` (default): the A/A experiment over many seeds. For each seed ``i`` a real predictor
(``recs serve`` on loopback, ``--log-sessions``) serves ONE bundle in both arms of experiment
``aa-i`` (50 %), ``recs simulate-traffic`` sends ``--sessions`` sessions (traffic seed ``i``) and
``recs monitor --experiment aa-i:50`` compares the arms. A calibrated test finds a significant
difference (p < 0.05) in about 5 % of the seeds; the target is no significant difference in at
least 95 % of them. The naive two-proportion test's rate is printed beside it.

``baselines``: one predictor run and the random / popularity baselines, ``--sessions`` each, on the
same database; prints the ratios and p values of the trained predictor against both.

The database must come from ``recs synth`` (it records size and seed) and the bundle from the
pipeline (``make loop-demo`` leaves both in ``loop_out/``). Every run appends to the database.
One JSON line per seed / run, then a summary with the load average.

    python benchmarks/bench_online.py --db loop_out/marketplace.db --size tiny --seed 0 \
        --bundle loop_out/models/startup_developer/v1 --seeds 20 --sessions 1500
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECS = [sys.executable, "-m", "startup_recs.cli"]


def recs(*args: str) -> str:
    out = subprocess.run([*RECS, *args], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"recs {' '.join(args[:2])} failed:\n{out.stderr[-2000:]}")
    return out.stdout


class Predictor:
    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([*RECS, "serve", *args, "--port", str(port), "--reload-interval", "0"],
                                     cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait(self, model: str, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"recs serve exited with {self.proc.returncode}; see {self._log.name}")
            try:
                if urllib.request.urlopen(f"{self.url}/v2/models/{model}/ready", timeout=5).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"recs serve not ready after {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def simulate(a: argparse.Namespace, *extra: str) -> dict:
    out = recs("simulate-traffic", "--db", a.db, "--size", a.size, "--seed", str(a.seed), "--use-case", a.use_case,
               "--sessions", str(a.sessions), "--days", str(a.days), *extra)
    return json.loads(out.strip().splitlines()[-1])


def monitor(a: argparse.Namespace, summary: dict, out: Path, *extra: str) -> dict:
    until = (datetime.fromisoformat(summary["calendar"][1]) + timedelta(seconds=1)).isoformat()
    recs("monitor", "--db", a.db, "--use-case", a.use_case, "--since", summary["calendar"][0],
         "--until", until, "--out", str(out), *extra)
    return json.loads((out / "metrics.json").read_text())


def bench_aa(a: argparse.Namespace, work: Path) -> dict:
    model = a.use_case.replace("_", "-")
    db_url = a.db if "://" in a.db else f"sqlite:///{Path(a.db).resolve()}"
    significant = naive = 0
    rows = []
    for i in range(a.first_seed, a.first_seed + a.seeds):
        name = f"aa-{i}"
        srv = Predictor(["--bundle", f"{a.use_case}={a.bundle}", "--experiment", f"{a.use_case}={a.bundle}:50:{name}",
                         "--log-sessions", db_url], a.port, work / f"serve-{name}.log")
        try:
            srv.wait(model)
            summary = simulate(a, "--url", srv.url, "--traffic-seed", str(i))
        finally:
            srv.stop()
        m = monitor(a, summary, work / name, "--experiment", f"{name}:50")
        (c,) = m["comparisons"]
        significant += c["p_value"] < 0.05
        naive += c["p_value_two_proportion"] < 0.05
        row = {"seed": i, "control": m["arms"]["control"]["contact_rate"],
               "treatment": m["arms"]["treatment"]["contact_rate"], "lift": c["lift"], "p_value": c["p_value"],
               "p_value_two_proportion": c["p_value_two_proportion"],
               "sessions": {k: v["sessions"] for k, v in m["arms"].items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"benchmark": "aa", "seeds": a.seeds, "sessions": a.sessions, "significant": significant,
            "not_significant_share": 1 - significant / a.seeds, "naive_significant": naive,
            "target_met": 1 - significant / a.seeds >= 0.95}


def bench_baselines(a: argparse.Namespace, work: Path) -> dict:
    model = a.use_case.replace("_", "-")
    db_url = a.db if "://" in a.db else f"sqlite:///{Path(a.db).resolve()}"
    srv = Predictor(["--bundle", f"{a.use_case}={a.bundle}", "--log-sessions", db_url], a.port, work / "serve.log")
    try:
        srv.wait(model)
        first = simulate(a, "--url", srv.url, "--traffic-seed", str(a.first_seed))
    finally:
        srv.stop()
    simulate(a, "--policy", "random", "--traffic-seed", str(a.first_seed))
    last = simulate(a, "--policy", "popularity", "--traffic-seed", str(a.first_seed))
    m = monitor(a, {"calendar": [first["calendar"][0], last["calendar"][1]]}, work / "baselines")
    version = next(v for v in m["arms"] if v not in ("random", "popularity"))
    out = {"benchmark": "baselines", "sessions": a.sessions, "arms": {k: v["contact_rate"] for k, v in m["arms"].items()}}
    for c in m["comparisons"]:
        if c["a"] == version or c["b"] == version:
            other = c["b"] if c["a"] == version else c["a"]
            ratio = c["ratio"] if c["a"] == version else 1 / c["ratio"]
            out[f"vs_{other}"] = {"ratio": ratio, "p_value": c["p_value"]}
    out["target_met"] = (out["vs_random"]["ratio"] >= 1.5 and out["vs_random"]["p_value"] < 0.05
                         and out["vs_popularity"]["ratio"] >= 1.2 and out["vs_popularity"]["p_value"] < 0.05)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="?", choices=["aa", "baselines"], default="aa")
    p.add_argument("--db", required=True, help="app database written by recs synth")
    p.add_argument("--size", required=True)
    p.add_argument("--seed", type=int, required=True, help="the world's seed")
    p.add_argument("--bundle", required=True, help="a published bundle (.../<use_case>/vN)")
    p.add_argument("--use-case", default="startup_developer")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--sessions", type=int, default=1500)
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--port", type=int, default=8097)
    p.add_argument("--work", default=None, help="monitor outputs and server logs (default: beside the db)")
    a = p.parse_args()
    work = Path(a.work or Path(a.db).resolve().parent / f"bench_online_{a.what}")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = bench_aa(a, work) if a.what == "aa" else bench_baselines(a, work)
    out.update({"size": a.size, "seconds": round(time.perf_counter() - t0, 1),
                "loadavg": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count()})
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
