"""Run every benchmark at its laptop-sized defaults, one after another, each printing its table.

``make bench`` calls this. Each benchmark is its own script (see ``--help`` of each for larger
sizes, e.g. ``bench_data.py --sizes small,bench``); this runner only sequences them and reports
which ones failed. Benchmarks that need a prepared artifact (``bench_features.py --snapshot``,
``bench_ranker_signal.py`` and ``bench_two_tower_quality.py --workdir``) are pointed at the demo
outputs when ``make demo`` has left them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEMO = ROOT / "demo_out"

RUNS: list[tuple[str, list[str]]] = [
    ("bench_data.py", ["--sizes", "small"]),
    ("bench_als.py", []),
    ("bench_two_tower.py", []),
    ("bench_recommender.py", []),
    ("bench_ranker.py", ["--requests", "100"]),
    ("bench_predictor.py", ["--scenarios", "trivial,demo,100k", "--duration", "5"]),
    ("bench_pipeline.py", ["--size", "small"]),
]


def main() -> int:
    snap = next(iter(sorted(DEMO.glob("**/snapshot"))), None) if DEMO.exists() else None
    runs = list(RUNS)
    if snap is not None:
        runs.append(("bench_features.py", ["--snapshot", str(snap)]))
    if DEMO.exists() and any(DEMO.glob("kfp_root/*/**/train-ranker")):
        runs.append(("bench_ranker_signal.py", ["--workdir", str(DEMO)]))
    if DEMO.exists() and any(DEMO.glob("kfp_root/*/**/dataset-two-tower")):
        runs.append(("bench_two_tower_quality.py", ["--workdir", str(DEMO)]))
    failed = []
    for script, args in runs:
        print(f"\n=== {script} {' '.join(args)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / script), *args], cwd=ROOT)
        print(f"--- {script}: exit {rc}, {time.perf_counter() - t0:.0f}s", flush=True)
        if rc:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
