"""Handlers of ``recs pipeline compile|submit|run-local`` and ``recs demo`` (kfp imported here,
never by the core). The parser lives in ``startup_recs.cli`` (``_pipeline``, ``_demo``)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from startup_recs.core.errors import ConfigError
from startup_recs.core.usecases import ALL_USE_CASES

log = logging.getLogger(__name__)


def cli_compile(args: argparse.Namespace) -> int:
    from pipelines.training import CompileOptions, compile_pipeline

    path = compile_pipeline(args.output, CompileOptions.from_pairs(args.option))
    print(f"wrote {path}")
    return 0


def cli_submit(args: argparse.Namespace) -> int:
    from pipelines.submit import parse_params, submit
    from pipelines.training import CompileOptions

    out = submit(args.host, parse_params(args.param), namespace=args.namespace, experiment=args.experiment,
                 run_name=args.run_name, schedule=args.schedule, token=args.token,
                 options=CompileOptions.from_pairs(args.option))
    print(json.dumps(out))
    return 0


def _source_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for flag in ("entity_col", "candidate_col", "time_col", "event_col", "weight_col", "event_weights"):
        value = getattr(args, flag, None)
        if value:
            params[flag] = value
    for flag in ("test_days", "val_days"):
        if getattr(args, flag, None) is not None:
            params[flag] = float(getattr(args, flag))
    return params


def cli_run_local(args: argparse.Namespace) -> int:
    from pipelines.local import pipeline_arguments, run_local
    from pipelines.submit import parse_params

    work = Path(args.workdir)
    params = {**_source_params(args), **parse_params(args.param)}
    arguments = pipeline_arguments(
        models_uri=args.models_uri or str(work / "models"), use_cases=args.use_case or list(ALL_USE_CASES),
        db_url=args.db, events_uri=args.events, split_at=args.split_at, params=params)
    print(f"pipeline through kfp.local: {', '.join(arguments['use_cases'])}; executor logs in {work / 'logs'}/",
          flush=True)
    run = run_local(arguments, work, caching=not args.no_cache, parallelism=getattr(args, "parallelism", 1) or 0)
    print(f"  pipeline wall time: {run.seconds:.1f} s")
    print(summary_table(run))
    return 0


# Rows of the quality table, in this order (others follow in the order metrics.json lists them).
MODEL_ORDER = ("popularity", "content", "als", "two_tower", "item2item", "routed", "routed_ranked", "reciprocal",
               "oracle", "oracle_mutual")


def _cell(segs: dict[str, Any] | None, prefix: str = "") -> str:
    a = (segs or {}).get("all") or {}
    nd, rc = a.get(f"{prefix}ndcg@10"), a.get(f"{prefix}recall@10")
    if not isinstance(nd, int | float) or not isinstance(rc, int | float):
        return "-"
    return f"{nd:.4f} / {rc:.4f}"


def quality_table(metrics: dict[str, dict[str, Any]], prefix: str = "", title: str = "NDCG@10 / Recall@10") -> list[str]:
    """One row per model, one column per use case: ``ndcg@10 / recall@10`` on the test window
    (``prefix="mutual_"``: the mutual metrics, reverse use cases only). ``[]`` when no use case has them."""
    ucs = [uc for uc, m in metrics.items()
           if any(f"{prefix}ndcg@10" in ((segs or {}).get("all") or {}) for segs in (m.get("models") or {}).values())]
    if not ucs:
        return []
    names = [n for n in MODEL_ORDER if any(n in (metrics[uc].get("models") or {}) for uc in ucs)]
    for uc in ucs:
        names += [n for n in (metrics[uc].get("models") or {}) if n not in names]
    width = max(19, *(len(uc) + 2 for uc in ucs))
    lines = [f"  {title:<22}" + "".join(f"{uc:>{width}}" for uc in ucs)]
    for name in names:
        lines.append(f"  {name:<22}" + "".join(f"{_cell((metrics[uc].get('models') or {}).get(name), prefix):>{width}}"
                                             for uc in ucs))
    return lines


def summary_table(run: Any) -> str:
    """The quality tables of every use case (test window), then what was published and where the
    reports are. The same tables for forward and reverse use cases; the mutual one for reverse."""
    lines = quality_table(run.metrics)
    mutual = quality_table(run.metrics, "mutual_", "mutual NDCG / Recall@10")
    if mutual:
        lines += mutual
    pub = ", ".join(f"{uc} v{ptr['version']}" if ptr else f"{uc} (not published)" for uc, ptr in run.published.items())
    lines.append(f"  published: {pub}")
    lines.append(f"  reports: {run.workdir}/<use_case>/evaluation/report.md")
    return "\n".join(lines)


def cli_demo(args: argparse.Namespace) -> int:
    """Synthetic marketplace -> the pipeline for all four use cases -> published bundles -> the
    predictor on them. Quiet: about 60 lines on stdout, the executor logs under ``<workdir>/logs/``."""
    from pipelines.local import LOG_DIR, pipeline_arguments, run_local
    from pipelines.submit import parse_params
    from startup_recs import synth
    from startup_recs.core import storage
    from startup_recs.data import appdb

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    db = work / "marketplace.db"
    t0 = time.perf_counter()
    if args.fresh or not db.exists():
        print(f"[1/3] synthetic marketplace ({args.size}, seed {args.seed}) -> {db}", flush=True)
        tables = synth.generate(args.size, args.seed)
        appdb.write_db(tables, appdb.db_url(str(db)), replace=True)
        synth.write_meta(appdb.db_url(str(db)), args.size, args.seed)  # the world: recs simulate-traffic checks it
        storage.write_table(tables["oracle"], str(work / "oracle.parquet"))  # the ceiling evaluation reports
    else:
        print(f"[1/3] reusing {db} (--fresh regenerates it)", flush=True)
    use_cases = list(ALL_USE_CASES)
    print(f"[2/3] pipeline through kfp.local for {len(use_cases)} use cases (extract -> datasets -> train -> "
          f"evaluate -> gated publish); executor logs in {work / LOG_DIR}/", flush=True)
    arguments = pipeline_arguments(models_uri=str(work / "models"), use_cases=use_cases,
                                   db_url=str(db), params={**DEMO_PARAMS, **parse_params(args.param)})
    if (work / "oracle.parquet").is_file():  # synthetic data: report the planted-affinity ceiling
        arguments.setdefault("oracle_uri", str(work / "oracle.parquet"))
    run = run_local(arguments, work, caching=not args.no_cache, parallelism=DEMO_PARALLELISM)
    print(f"  pipeline wall time: {run.seconds:.1f} s")
    print("[3/3] evaluation on the test window")
    print(summary_table(run))
    missing = [uc for uc, ptr in run.published.items() if not ptr]
    print(f"demo wall time: {time.perf_counter() - t0:.1f} s; bundles under {work / 'models'}")
    served = [uc for uc in use_cases if uc not in missing]
    if not args.no_serve and served:  # what was published is served even when a gate refused another
        serve_published(work / "models", args.port, served)
    if missing:
        raise ConfigError(f"no bundle published for {', '.join(missing)} (see the gate's log in "
                          f"{work / LOG_DIR}/<use_case>/gate.log)")
    return 0


def _example_entity(models: Path, use_case: str) -> str:
    """The known entity with the most training interactions in the published bundle."""
    from startup_recs.core import bundle, storage

    target = bundle.resolve(str(models / use_case))
    ents = storage.read_table(storage.join(target, "serving", "entities.parquet")).to_pandas()
    return str(ents.sort_values("interaction_count", ascending=False)["entity_id"].iloc[0])


def serve_published(models: Path, port: int, use_cases: list[str] | None = None, timeout: float = 120.0) -> int:
    """Start ``recs serve`` on the published bundles in the background (loopback), wait until it
    answers, call each printed example once (so every printed command works) and print them:
    per use case its legacy route, then one V1 call. Returns the server's pid."""
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from startup_recs.core.usecases import get_use_case

    use_cases = list(use_cases or ALL_USE_CASES)
    log_path = models.parent / "serve.log"
    cmd = [sys.executable, "-m", "startup_recs.cli", "serve", "--bundle", str(models), "--port", str(port)]
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=Path(__file__).resolve().parents[1], env={**os.environ})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ConfigError(f"recs serve exited with {proc.returncode}; see {log_path}")
        try:  # per-model readiness (the server-level /v2/health/ready is always 200)
            if all(urllib.request.urlopen(f"{base}/v2/models/{get_use_case(uc).model_name}/ready",
                                          timeout=2).status == 200 for uc in use_cases):
                break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise ConfigError(f"recs serve did not become ready in {timeout:.0f} s; see {log_path}")
        time.sleep(1.0)
    print(f"predictor: recs serve (pid {proc.pid}) on {base}, log {log_path}; stop it with: kill {proc.pid}")
    for uc_name in use_cases:
        uc = get_use_case(uc_name)
        entity = _example_entity(models, uc_name)
        for query in example_queries(uc_name):
            url = base + uc.route.replace("{id}", entity) + query
            with urllib.request.urlopen(url, timeout=30) as r:
                answer = json.loads(r.read())
            print(f"  curl -s '{url}'")
            print(f"    -> {_answer_summary(answer)}")
    uc = get_use_case(use_cases[0])
    body = json.dumps({"instances": [{"entity_id": _example_entity(models, uc.name), "limit": 5}]})
    req = urllib.request.Request(f"{base}/v1/models/{uc.model_name}:predict", data=body.encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:  # checked, so the printed command works
        json.loads(r.read())
    print(f"  curl -s -X POST {base}/v1/models/{uc.model_name}:predict -H 'Content-Type: application/json' "
          f"-d '{body}'")
    return proc.pid


# The query strings the demo calls (and prints) per use case's legacy route: plain, filtered, the
# legacy Flask shape, one-sided (values from synth's vocabularies; each call is checked to work).
EXAMPLE_QUERIES: dict[str, list[str]] = {
    "startup_developer": ["?limit=5", "?limit=5&skills=python,go&location=berlin", "?limit=3&format=legacy"],
    "startup_investor": ["?limit=5", "?limit=5&sector=fintech&reciprocal=false"],
    "developer_startup": ["?limit=5", "?limit=5&stage=seed,series_a"],
    "investor_startup": ["?limit=5"],
}


def example_queries(use_case: str) -> list[str]:
    """The query strings the demo calls (and prints) for a use case's legacy route."""
    return EXAMPLE_QUERIES.get(use_case, ["?limit=5"])


def _answer_summary(answer: dict[str, Any]) -> str:
    """``method (version[, reciprocal ...][, filters ...]): id, id, ...`` of a default-shape answer,
    or of a legacy-shape one."""
    ids = [c["id"] for c in answer.get("candidates", [])] or answer.get("user_ids") or answer.get("startup_ids") or []
    method = answer.get("method_used") or answer.get("method")
    notes = [str(answer.get("model_version"))]
    if answer.get("reciprocal"):
        notes.append(f"reciprocal {answer['reciprocal']['method']}")
    if answer.get("filters"):
        f = answer["filters"]
        notes.append(f"{f['matching']} match the filters" + (", widened" if f["widened"] else "")
                     + (", short" if f["short"] else ""))
    if "user_ids" in answer or "startup_ids" in answer:
        notes.append("legacy shape")
    return f"{method} ({'; '.join(notes)}): {', '.join(map(str, ids[:5]))}"


# Demo budgets for a 2-core laptop (``make demo`` <= 10 min is the target, benchmarks/bench_pipeline.py
# measures it; two-tower fits were 60 % of a 15 min run at 5 epochs): 2 two-tower epochs, 64-d
# embeddings, small tuning budgets (ALS 4 trials, item-to-item 2, two-tower none), and item-to-item
# as BM25 item-kNN (a 1 GiB EASE budget: ~18k candidates would need a 9 GB, minutes-long dense solve).
# Two epochs are a fixed step budget, so the batch sets how many optimizer steps the two-tower gets:
# batch 256 (about 230 steps an epoch on the demo's startup_developer pairs) with lr 1e-3 and a sharp
# softmax (temperature 0.07) beats batch 1024 / lr 3e-3 / temperature 0.1 (58 steps an epoch) on
# every use case at about the same fit time (2-7 s per fit at demo size). Stage-1 validation NDCG@10,
# demo size, means of model seeds 0-2, without the shared-token tables
# (benchmarks/bench_two_tower_quality.py): startup_developer 0.0189 -> 0.0226, startup_investor 0.0429
# -> 0.0447, developer_startup 0.0757 -> 0.0840, investor_startup 0.0378 -> 0.0453. Longer training
# does not help at this rate: the validation best epoch stays 2 with 4 allowed; batch 128, lr 2e-3
# and 128-d embeddings were worse.
# Use cases trained at once: all four, so each task's line (printed when it has finished for every
# use case) comes as the run goes; most steps are single-threaded, so two cores stay busy.
DEMO_PARALLELISM = 0
DEMO_PARAMS: dict[str, Any] = {"tt_epochs": 2, "tt_batch_size": 256, "embedding_dim": 64, "tt_temperature": 0.07,
                               "tt_lr": 0.001, "ranker_epochs": 10, "tune_als_trials": 4, "tune_item2item_trials": 2,
                               "i2i_memory_gb": 1.0}
