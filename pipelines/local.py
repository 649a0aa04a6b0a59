"""``recs pipeline run-local``: the same pipeline through ``kfp.local`` on this machine.

``kfp.local.SubprocessRunner(use_venv=False)`` runs each component's function in a subprocess of
this Python (the venv has ``startup_recs``), artifacts under ``<workdir>/kfp_root``, with kfp's
file cache under ``<workdir>/kfp_cache`` (a rerun on the same data reuses every cached step).
Accelerator and resource settings are ignored locally (kfp warns); the trainer picks CUDA when
present. A failing step fails the run with that step's message (read back from the file named
by ``RECS_STEP_ERROR_FILE``, which ``startup_recs.pipeline.step`` appends to) and its log file.
The run is quiet (:mod:`pipelines.progress`): executor output goes to ``<workdir>/logs/``, the
console gets one line per pipeline task.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from startup_recs.core import storage
from startup_recs.core.config import thread_count
from startup_recs.core.errors import ConfigError, RecsError
from startup_recs.core.usecases import get_use_case
from startup_recs.pipeline.step import STEP_ERROR_ENV

log = logging.getLogger(__name__)
LOG_DIR = "logs"  # under the workdir: the executor logs of the last run
# the thread pools of NumPy/BLAS, PyTorch and LightGBM read these when a task's process starts
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def task_threads(cores: int, at_once: int, current: str | None = None) -> int:
    """Threads per task when ``at_once`` use cases' tasks share ``cores``: ``cores // at_once``,
    at least 1, and never more than an ``OMP_NUM_THREADS`` already set (``current``).

    Why: every task's thread pools default to every core (or to ``OMP_NUM_THREADS``), so four
    use cases side by side on 2 cores run 8 busy threads; the demo's two-tower fits took 76 s
    that way against 20 s with one thread each, and the whole demo 492 s against 368 s."""
    n = max(1, int(cores) // max(1, int(at_once)))
    ceiling = thread_count(current)
    return n if ceiling is None else min(n, ceiling)


@contextmanager
def _threads_per_task(at_once: int) -> Iterator[int]:
    """:data:`THREAD_ENV` set to :func:`task_threads` for the tasks' processes while the run
    lasts (they inherit the environment when kfp.local starts them), then restored."""
    n = task_threads(os.cpu_count() or 1, at_once, os.environ.get("OMP_NUM_THREADS"))
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update(dict.fromkeys(THREAD_ENV, str(n)))
    try:
        yield n
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class PipelineRunError(RecsError):
    """A pipeline step failed; the message names the step and its error."""


@dataclass
class LocalRun:
    """What a local run left: per use case its evaluation folder copy and the published bundle."""

    workdir: Path
    seconds: float
    evaluations: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # evaluation artifact URI (a cache hit: an older run's)
    published: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    log_dir: Path | None = None  # every task's executor log (<log_dir>/<use_case>/<task>.log) and kfp.log
    tasks: list[Any] = field(default_factory=list)  # pipelines.progress.TaskResult, in completion order


def pipeline_arguments(*, models_uri: str, use_cases: list[str], db_url: str | None = None,
                       events_uri: str | None = None, split_at: str | None = None,
                       params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate the source and use cases and build the pipeline's argument dict."""
    from pipelines.training import reverse_recommendation_training

    if bool(db_url) == bool(events_uri):
        raise ConfigError("give exactly one source: --db URL or --events FILE")
    if not use_cases:
        raise ConfigError("no use case given")
    for uc in use_cases:
        get_use_case(uc)
    args: dict[str, Any] = {"models_uri": models_uri, "use_cases": list(use_cases)}
    if db_url:
        from startup_recs.pipeline.urls import check_db_url

        url = check_db_url(db_url)
        path = url.removeprefix("sqlite:///")
        # kfp.local's steps run in other working directories: a relative SQLite path becomes absolute
        args["db_url"] = f"sqlite:///{Path(path).resolve()}" if url.startswith("sqlite:///") else url
    else:
        if not storage.is_s3(events_uri) and not storage.local(events_uri).is_file():
            raise ConfigError(f"events file {events_uri} does not exist")
        args["events_uri"] = str(storage.local(events_uri).resolve()) if not storage.is_s3(events_uri) else events_uri
        args.setdefault("events_use_case", use_cases[0])
        if len(use_cases) != 1:
            raise ConfigError("an imported event log belongs to one use case: give exactly one --use-case")
    if split_at:
        args["split_at"] = split_at
    known = set(reverse_recommendation_training.component_spec.inputs or {})
    for key, value in (params or {}).items():
        if key not in known:
            raise ConfigError(f"unknown pipeline parameter {key!r}; known: {', '.join(sorted(known))}")
        args[key] = value
    return args


def run_local(arguments: dict[str, Any], workdir: str | Path, *, caching: bool = True, parallelism: int = 1,
              printer: Callable[[str], None] | None = None) -> LocalRun:
    """Run the pipeline through kfp.local; copy each use case's evaluation to
    ``<workdir>/<use_case>/evaluation/`` (metrics.json, report.md, plots).

    Quiet (:mod:`pipelines.progress`): executor logs go to ``<workdir>/logs/`` (replaced on each
    run), and ``printer`` (default: stdout) gets a header and one line per pipeline task.
    ``parallelism``: use cases trained at once (kfp.local runs them in threads; 0 = all); each
    task's thread pools get ``cores // parallelism`` threads (:func:`task_threads`).
    """
    from kfp import local

    from pipelines.progress import quiet_run
    from pipelines.training import CompileOptions, build_pipeline

    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    models_uri = arguments["models_uri"]
    if not storage.is_s3(models_uri):
        models_uri = arguments["models_uri"] = str(storage.local(models_uri).resolve())
    errors = work / "step_errors.jsonl"
    errors.unlink(missing_ok=True)
    log_dir = work / LOG_DIR
    shutil.rmtree(log_dir, ignore_errors=True)
    os.environ[STEP_ERROR_ENV] = str(errors)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "kfp_root"),
               raise_on_error=True, enable_caching=caching, cache_root=str(work / "kfp_cache"))
    at_once = parallelism if parallelism > 0 else len(arguments["use_cases"])
    pipeline = build_pipeline(CompileOptions(parallelism=at_once))
    t0 = time.perf_counter()
    with quiet_run(log_dir, arguments["use_cases"], printer, max_parallel=at_once) as progress, \
            _threads_per_task(at_once) as threads:
        log.info("kfp.local ignores the compiled resources, accelerator and GPU node selector; "
                 "the two-tower trainer uses CUDA if this machine has it, else the CPU")
        log.info("%d use case(s) at once on %d core(s): %d thread(s) per task", at_once, os.cpu_count() or 1,
                 threads)
        try:
            with warnings.catch_warnings():
                # one line above says it; kfp repeats it for every task
                warnings.filterwarnings("ignore", message=r".*have no effect in the current local runner.*")
                warnings.filterwarnings("ignore", message=r".*custom or non-Python base image.*")
                task = pipeline(**arguments)
        except RuntimeError as exc:
            failed = [r for r in progress.results if not r.ok]
            where = f" (log: {failed[0].log or log_dir / 'kfp.log'})" if failed else f" (logs: {log_dir})"
            raise PipelineRunError(_failure_message(errors, exc) + where) from None
        finally:
            os.environ.pop(STEP_ERROR_ENV, None)
    run = LocalRun(workdir=work, seconds=time.perf_counter() - t0, log_dir=log_dir, tasks=progress.results)
    order = {uc: i for i, uc in enumerate(arguments["use_cases"])}  # tables list use cases as asked
    found = [(json.loads((src / "metrics.json").read_text()), src) for src in _evaluation_folders(task.output)]
    found = [(m.get("use_case") or src.parent.name, m, src) for m, src in found]
    for uc, metrics, src in sorted(found, key=lambda f: order.get(f[0], len(order))):
        dest = work / uc / "evaluation"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest)
        run.evaluations[uc], run.metrics[uc], run.sources[uc] = dest, metrics, str(src)
    from startup_recs.core import bundle

    for uc in arguments["use_cases"]:
        ptr = bundle.read_pointer(models_uri, uc)
        run.published[uc] = ptr
    return run


def _evaluation_folders(output: Any) -> list[Path]:
    """Every use case's evaluation folder in the pipeline's output: one artifact holding
    ``<use_case>/evaluation/`` folders (the reciprocal step's), or a list of evaluation artifacts."""
    if output is None:
        return []
    if isinstance(output, list):
        return [Path(a.uri) for a in output]
    return sorted(p.parent for p in Path(output.uri).glob("*/evaluation/metrics.json"))


def _failure_message(errors: Path, exc: Exception) -> str:
    """``step <name> failed: <its error>`` for each failed step, else kfp's own message."""
    lines = []
    if errors.is_file():
        for line in errors.read_text().splitlines():
            try:
                rec = json.loads(line)
                lines.append(f"step {rec['step']} failed: {rec['error']}")
            except (ValueError, KeyError):
                continue
    if lines:
        return "; ".join(dict.fromkeys(lines))
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines()[0]
