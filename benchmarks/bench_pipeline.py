"""Wall time and peak memory of the whole training pipeline, and what kfp.local adds.

Two runs on the same synthetic marketplace (default: ``demo`` size, both reverse use cases):

- ``kfp.local``: ``recs pipeline run-local`` in a child process (caching off, so every step runs);
  each step is its own subprocess, as in a cluster each is its own pod;
- ``direct``: the same ``startup_recs.pipeline`` step functions called in one process, in DAG order.

Peak memory is the largest resident set of any single process of the run (``ru_maxrss`` of the
waited-for process tree), i.e. what one pod/laptop process needed. Prints a table.

    .venv/bin/python benchmarks/bench_pipeline.py                 # demo size (target <= 10 min)
    .venv/bin/python benchmarks/bench_pipeline.py --size tiny --param tt_epochs=3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
USE_CASES = ["startup_developer", "startup_investor"]


def run_direct(db: str, work: Path, use_cases: list[str], p: dict[str, Any]) -> dict[str, float]:
    """Every pipeline step for ``use_cases`` in this process, in the DAG's order; returns the
    headline NDCG@10 per use case (to check it is the same computation)."""
    from startup_recs.pipeline import data_steps, evaluate_steps, publish_steps, train_steps, tune_steps

    split = {k: p[k] for k in ("split_at", "test_days", "val_days")}
    wm = data_steps.probe_source(db_url=db)
    snap = str(work / "snapshot")
    data_steps.extract(snap, watermark=wm, db_url=db)
    out: dict[str, float] = {}
    for uc in use_cases:
        d = work / uc
        data_steps.dataset_two_tower(snap, uc, str(d / "ds_tt"), negative_samples=p["negative_samples"],
                                min_interactions=p["min_interactions"], seed=p["seed"], **split)
        for window in ("train", "trainval"):
            data_steps.dataset_als(snap, uc, str(d / f"ds_als_{window}"), fit_window=window,
                              min_interactions=p["min_interactions"], **split)
        data_steps.dataset_ranker(snap, uc, str(d / "ds_rk"), neg_ratio=p["neg_ratio"],
                             propensity_clip=p["propensity_clip"], seed=p["seed"], **split)
        tune = {"tt": ("two-tower", p["tune_two_tower_trials"],
                       {"embedding_dim": p["embedding_dim"], "lr": p["tt_lr"], "temperature": p["tt_temperature"],
                        "hard_negatives": p["tt_hard_negatives"]}),
                "als": ("als", p["tune_als_trials"],
                        {"factors": p["als_factors"], "regularization": p["als_regularization"],
                         "alpha": p["als_alpha"], "iterations": p["als_iterations"], "weighting": p["als_weighting"]}),
                "i2i": ("item2item", p["tune_item2item_trials"],
                        {"method": p["i2i_method"], "lam": p["i2i_lam"], "neighbours": p["i2i_neighbours"]})}
        for key, (model, trials, dflt) in tune.items():
            tune_steps.tune(snap, uc, model, str(d / f"tune_{key}"), defaults=dflt, trials=trials,
                       timeout_s=p["tune_timeout_s"], seed=p["seed"], **split)
        for window in ("train", "trainval"):
            train_steps.train_two_tower(str(d / "ds_tt"), uc, str(d / f"tt_{window}"), window=window,
                                  epochs=p["tt_epochs"], batch_size=p["tt_batch_size"], device=p["device"],
                                  seed=p["seed"], params_dir=str(d / "tune_tt"))
            train_steps.train_als(str(d / f"ds_als_{window}"), uc, str(d / f"als_{window}"), params_dir=str(d / "tune_als"))
            train_steps.train_item2item(str(d / f"ds_als_{window}"), uc, str(d / f"i2i_{window}"),
                                  memory_gb=p["i2i_memory_gb"], params_dir=str(d / "tune_i2i"))
        train_steps.train_ranker(str(d / "ds_rk"), str(d / "tt_train"), str(d / "als_train"), snap, uc,
                           str(d / "stage1"), epochs=p["ranker_epochs"], batch_size=p["ranker_batch_size"],
                           lr=p["ranker_lr"], item2item_dir=str(d / "i2i_train"), **split)
        info = evaluate_steps.evaluate(snap, str(d / "tt_trainval"), str(d / "als_trainval"), str(d / "stage1"), uc,
                              str(d / "models"), str(d / "evaluation"), k=p["eval_k"],
                              item2item_dir=str(d / "i2i_trainval"),
                              tuning_dirs=[str(d / f"tune_{k}") for k in tune], **split)
        if publish_steps.gate(str(d / "evaluation"), str(work / "models"), uc, margin=p["gate_margin"]) == "publish":
            publish_steps.publish(str(d / "models"), str(d / "evaluation"), snap, str(work / "models"), uc,
                          margin=p["gate_margin"])
        out[uc] = info["headline"].get("routed_ranked-ndcg@10", float("nan"))
    return out


def defaults() -> dict[str, Any]:
    """The pipeline's parameter defaults (from its signature), as run-local would pass them."""
    from pipelines.training import reverse_recommendation_training

    inputs = reverse_recommendation_training.component_spec.inputs
    return {k: v.default for k, v in inputs.items() if v.default is not None}


def _child(cmd: list[str]) -> tuple[float, float, int, str]:
    """Run ``cmd``; (wall s, peak RSS MiB of its largest process, return code, output tail).

    The peak comes from GNU time (``%M``: the child's ``ru_maxrss``, which on Linux covers the
    waited-for descendants too) so each run is measured on its own.
    """
    timer = shutil.which("time") or "/usr/bin/time"
    t0 = time.perf_counter()
    proc = subprocess.run([timer, "-f", "MAXRSS_KB %M", *cmd], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = float("nan")
    for line in proc.stderr.splitlines()[::-1]:
        if line.startswith("MAXRSS_KB "):
            peak = int(line.split()[1]) / 1024
            break
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
    return wall, peak, proc.returncode, tail


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="demo", choices=["tiny", "small", "demo", "bench"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="/tmp/bench_pipeline")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter")
    ap.add_argument("--use-case", action="append", default=None)
    ap.add_argument("--skip-direct", action="store_true")
    ap.add_argument("--skip-kfp", action="store_true")
    ap.add_argument("--direct-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.workdir).resolve()
    use_cases = args.use_case or USE_CASES

    from pipelines.cli import DEMO_PARAMS
    from pipelines.submit import parse_params

    params = {**defaults(), **DEMO_PARAMS, **parse_params(args.param)}
    db = str(work / "marketplace.db")
    if args.direct_child:  # the one-process run, measured by the parent
        d = work / "direct"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        print(json.dumps(run_direct(db, d, use_cases, params)))
        return 0

    work.mkdir(parents=True, exist_ok=True)
    from startup_recs import synth
    from startup_recs.data import appdb

    t0 = time.perf_counter()
    tables = synth.generate(args.size, args.seed)
    appdb.write_db({k: v for k, v in tables.items() if k != "oracle"}, appdb.db_url(db), replace=True)
    synth_s = time.perf_counter() - t0
    events = sum(tables[t].num_rows for t in ("startup_interactions", "user_interactions") if t in tables)
    rows = []
    py = sys.executable
    if not args.skip_kfp:
        shutil.rmtree(work / "kfp", ignore_errors=True)
        cmd = [py, "-m", "startup_recs.cli", "pipeline", "run-local", "--db", db, "--workdir", str(work / "kfp"),
               "--no-cache", *sum((["--use-case", u] for u in use_cases), []),
               *sum((["--param", f"{k}={v}"] for k, v in parse_params(args.param).items()), [])]
        for k, v in DEMO_PARAMS.items():
            if k not in parse_params(args.param):
                cmd += ["--param", f"{k}={v}"]
        wall, peak, rc, tail = _child(cmd)
        rows.append(("kfp.local (run-local)", wall, peak, rc))
        if rc:
            print(tail, file=sys.stderr)
    if not args.skip_direct:
        cmd = [py, __file__, "--direct-child", "--workdir", str(work), "--size", args.size,
               *sum((["--use-case", u] for u in use_cases), []), *sum((["--param", p] for p in args.param), [])]
        wall, peak, rc, tail = _child(cmd)
        rows.append(("direct (one process)", wall, peak, rc))
        if rc:
            print(tail, file=sys.stderr)

    print(f"\npipeline benchmark: size={args.size} ({events} events), use cases={','.join(use_cases)}, "
          f"cores={os.cpu_count()}, load avg={os.getloadavg()[0]:.1f}, synth {synth_s:.1f}s")
    print(f"params: tt_epochs={params['tt_epochs']} ranker_epochs={params['ranker_epochs']} "
          f"als_factors={params['als_factors']} embedding_dim={params['embedding_dim']}")
    print(f"{'mode':<24}{'wall s':>9}{'peak RSS MiB':>14}{'rc':>4}")
    for name, wall, peak, rc in rows:
        print(f"{name:<24}{wall:>9.1f}{peak:>14.0f}{rc:>4}")
    if len(rows) == 2 and rows[1][1] > 0:
        print(f"kfp.local overhead: {rows[0][1] - rows[1][1]:+.1f} s ({rows[0][1] / rows[1][1]:.2f}x); "
              f"target: kfp.local <= 600 s -> {'met' if rows[0][1] <= 600 else 'NOT met'}")
    return max((r[3] for r in rows), default=0)


if __name__ == "__main__":
    sys.exit(main())
