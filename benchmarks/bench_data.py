"""Data-path benchmark: synth, extract and dataset-build time and peak memory per size.

Each step runs as its own ``recs`` subprocess; wall time is measured around it and peak memory
is that child's own ``ru_maxrss`` (``os.wait4``), so steps do not blur into each other.

    .venv/bin/python benchmarks/bench_data.py --sizes small            # ~1-2 min
    .venv/bin/python benchmarks/bench_data.py --sizes bench            # minutes; GBs of disk
    .venv/bin/python benchmarks/bench_data.py --sizes small --db postgresql+psycopg://...

Prints one Markdown table. The dataset steps run only when ``startup_recs.datasets`` is
importable (they belong to another part of the project).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RECS = [sys.executable, "-m", "startup_recs.cli"]


@dataclass
class Result:
    size: str
    step: str
    seconds: float
    cpu: float
    peak_mib: float
    note: str


MEM_LIMIT_GIB = 0.0  # address-space cap per step (0 = none), so a runaway step fails alone


def _limit() -> None:
    if MEM_LIMIT_GIB > 0:
        import resource

        cap = int(MEM_LIMIT_GIB * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def run_step(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Run ``argv``; return (wall s, CPU s (user + sys), peak RSS MiB of that process, stdout).

    CPU seconds are the steadier figure on a shared machine; wall time includes waiting."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, preexec_fn=_limit)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"step failed ({proc.returncode}): {' '.join(argv)}\n{stderr[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, usage.ru_maxrss / 1024.0, stdout  # ru_maxrss is KiB on Linux


def dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def bench_size(size: str, work: Path, db: str | None, use_cases: list[str], env: dict[str, str],
               datasets: bool = True) -> list[Result]:
    work.mkdir(parents=True, exist_ok=True)
    url = db or str(work / "marketplace.db")
    res: list[Result] = []

    sec, cpu, mib, out = run_step([*RECS, "synth", "--db", url, "--size", size, "--seed", "0", "--force",
                              "--oracle", str(work / "oracle.parquet")], env)
    rows = {m.group(1): int(m.group(2).replace(",", ""))
            for m in re.finditer(r"^\s+(\w+)\s+([\d,]+) rows", out, re.M)}
    gen = re.search(r"generate ([\d.]+)s", out)
    events = rows.get("startup_interactions", 0) + rows.get("user_interactions", 0)
    res.append(Result(size, "synth (generate + write DB + oracle)", sec, cpu, mib,
                      f"{rows.get('startups', 0):,} startups, {rows.get('users', 0):,} users, "
                      f"{events:,} events, {rows.get('impressions', 0):,} impressions; "
                      f"generate {gen.group(1) if gen else '?'} s"))

    snap = work / "snapshot"
    shutil.rmtree(snap, ignore_errors=True)
    sec, cpu, mib, _ = run_step([*RECS, "extract", "--db", url, "--out", str(snap)], env)
    stats = json.loads((snap / "extract_stats.json").read_text())
    total = sum(stats["tables"].values())
    res.append(Result(size, "extract (full)", sec, cpu, mib,
                      f"{total:,} rows, {total / cpu:,.0f} rows per CPU s, {dir_mib(snap):.1f} MiB Parquet"))
    sec, cpu, mib, _ = run_step([*RECS, "extract", "--db", url, "--out", str(snap)], env)
    res.append(Result(size, "extract (incremental, nothing new)", sec, cpu, mib, "entity tables rewritten"))

    if not datasets:
        return res
    if importlib.util.find_spec("startup_recs.datasets") is None:
        res.append(Result(size, "datasets", 0.0, 0.0, 0.0, "startup_recs.datasets not importable: skipped"))
        return res
    for uc in use_cases:
        ds = work / "datasets" / uc
        ds.mkdir(parents=True, exist_ok=True)
        steps = {
            "two-tower": ["dataset", "two-tower", "--snapshot", str(snap), "--use-case", uc,
                          "--output", str(ds / "two_tower.parquet")],
            "als": ["dataset", "als", "--snapshot", str(snap), "--use-case", uc, "--output-dir", str(ds)],
            "ranker": ["dataset", "ranker", "--snapshot", str(snap), "--use-case", uc,
                       "--output", str(ds / "ranker.parquet")],
        }
        for name, argv in steps.items():
            try:
                sec, cpu, mib, _ = run_step([*RECS, *argv], env)
                res.append(Result(size, f"dataset {name} ({uc})", sec, cpu, mib, ""))
            except SystemExit as exc:
                res.append(Result(size, f"dataset {name} ({uc})", float("nan"), float("nan"), float("nan"),
                                  f"failed: {str(exc).splitlines()[-1][:80]}"))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="small", help="comma-separated: tiny,small,demo,bench")
    p.add_argument("--workdir", default=None, help="default: a temporary folder, removed afterwards")
    p.add_argument("--db", default=None, help="SQLAlchemy URL instead of a SQLite file per size")
    p.add_argument("--use-cases", default="startup_developer,startup_investor")
    p.add_argument("--mem-limit-gib", type=float, default=0.0,
                   help="cap each step's address space (a shared machine: fail alone, not OOM others)")
    p.add_argument("--skip-datasets", action="store_true")
    args = p.parse_args(argv)
    global MEM_LIMIT_GIB
    MEM_LIMIT_GIB = args.mem_limit_gib
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
           "PYTHONWARNINGS": "ignore"}
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-data-"))
    results: list[Result] = []
    try:
        for size in args.sizes.split(","):
            results += bench_size(size, root / size, args.db, args.use_cases.split(","), env,
                                  datasets=not args.skip_datasets)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nbench_data on {os.cpu_count()} CPUs, python {sys.version.split()[0]}\n")
    print("| size | step | wall s | CPU s | peak RSS MiB | notes |")
    print("|---|---|---:|---:|---:|---|")
    for r in results:
        print(f"| {r.size} | {r.step} | {r.seconds:.1f} | {r.cpu:.1f} | {r.peak_mib:.0f} | {r.note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
