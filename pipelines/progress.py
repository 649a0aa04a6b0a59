"""A quiet ``kfp.local`` run: executor logs to files, one progress line per pipeline task.

``kfp.local`` prints every task's streamed executor output, its outputs and a ruler to stdout
(thousands of lines for the demo). :class:`TaskProgress` wraps a run instead:

- each task's executor output (the subprocess's stdout + stderr) goes to
  ``<log_dir>/<use_case>/<task>.log`` (tasks outside the per-use-case loop: ``<log_dir>/<task>.log``),
  and kfp's own log lines and warnings to ``<log_dir>/kfp.log``;
- when a pipeline task has finished for every use case it runs for, one line goes to the console:
  its display name, then per use case the seconds it took, ``cached`` (kfp's cache answered)
  or ``FAILED``; tasks that never ran for a use case (a gate that skipped its publish, a failed
  upstream step) are printed as ``-`` when the run ends.

How: for the duration of the ``with`` block it replaces functions of kfp.local (kfp 2.17, pinned in
requirements/lock.txt): ``task_executor.execute_single_task`` (timing, use case, cache hit),
``subprocess_task_handler.run_local_subprocess`` (the output goes to the task's file),
``logging_utils.local_logger_context`` / ``indented_print`` / ``print_horizontal_line`` (they
re-point the root logger at stdout and patch ``builtins.print`` process-wide, which is also not
safe once ``ParallelFor`` iterations run in threads), and with ``max_parallel`` the cap of 2
threads ``ParallelExecutor`` puts on a ``ParallelFor`` (a guard against nested loops, which this
pipeline does not have). Everything is restored on exit.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CELL = 18  # characters per use-case column (at least; wider for longer use-case names)
NAME = 26  # characters of the task-name column


@dataclass
class TaskResult:
    """One task of one use case: ``seconds`` of wall time; ``cached`` when kfp's cache answered."""

    task: str
    use_case: str | None
    seconds: float
    cached: bool
    ok: bool
    log: Path | None


@dataclass
class _Row:
    """A pipeline task's results so far, printed once every expected use case has one."""

    task: str
    results: dict[str, TaskResult] = field(default_factory=dict)
    printed: bool = False


class TaskProgress:
    """Context manager around a ``kfp.local`` pipeline call; see the module docstring.

    ``use_cases``: the use cases the run's loop iterates over (the columns); ``printer``
    receives each console line (default ``print`` with flush). ``results`` lists every
    finished task in completion order.
    """

    def __init__(self, log_dir: str | Path, use_cases: Sequence[str],
                 printer: Callable[[str], None] | None = None, max_parallel: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.max_parallel = max_parallel
        self.use_cases = list(use_cases)
        self.width = max(CELL, *(len(uc) + 2 for uc in self.use_cases)) if self.use_cases else CELL
        self.printer = printer or (lambda line: print(line, flush=True))
        self.results: list[TaskResult] = []
        self._rows: dict[str, _Row] = {}
        self._order: list[str] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._undo: list[Callable[[], None]] = []

    # --- console ------------------------------------------------------------------------------
    def header(self) -> str:
        return f"  {'task':<{NAME}}" + "".join(f"{uc:>{self.width}}" for uc in self.use_cases)

    def _cell(self, r: TaskResult | None) -> str:
        if r is None:
            return "-"
        if not r.ok:
            return "FAILED"
        return "cached" if r.cached else f"{r.seconds:.1f} s"

    def _line(self, row: _Row) -> str:
        if None in row.results:  # a task outside the loop: once for all use cases
            r = row.results[None]  # type: ignore[index]
            return f"  {row.task:<{NAME}}{self._cell(r):>{self.width}}  (all use cases)"
        return f"  {row.task:<{NAME}}" + "".join(f"{self._cell(row.results.get(uc)):>{self.width}}"
                                             for uc in self.use_cases)

    def _record(self, result: TaskResult) -> None:
        with self._lock:
            self.results.append(result)
            row = self._rows.get(result.task)
            if row is None:
                row = self._rows[result.task] = _Row(result.task)
                self._order.append(result.task)
            row.results[result.use_case] = result  # type: ignore[index]
            done = result.use_case is None or set(self.use_cases) <= set(row.results)
            if done and not row.printed:
                row.printed = True
                self.printer(self._line(row))

    def flush(self) -> None:
        """Print the rows still waiting for a use case (skipped or never reached), in order."""
        with self._lock:
            for name in self._order:
                row = self._rows[name]
                if not row.printed:
                    row.printed = True
                    self.printer(self._line(row))

    # --- log files ------------------------------------------------------------------------------
    def log_path(self, task: str, use_case: str | None) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in task)
        folder = self.log_dir / use_case if use_case else self.log_dir
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{safe}.log"

    # --- patching kfp.local -----------------------------------------------------------------------
    def __enter__(self) -> TaskProgress:
        from kfp.local import logging_utils, subprocess_task_handler
        from kfp.local.orchestrator import enhanced_dag_orchestrator, task_executor
        from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

        self.log_dir.mkdir(parents=True, exist_ok=True)
        progress = self
        original_execute = task_executor.execute_single_task

        signature = inspect.signature(original_execute)

        def execute_single_task(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs).arguments
            task_spec = bound["task_spec"]
            display = task_spec.task_info.name or bound["task_name"]
            use_case = _use_case_of(OrchestratorUtils, task_spec, bound.get("io_store"))
            progress._local.log = progress.log_path(display, use_case)
            progress._local.ran = False
            t0 = time.perf_counter()
            outputs, status = original_execute(*args, **kwargs)
            ok = getattr(status, "name", str(status)) == "SUCCESS"
            progress._record(TaskResult(display, use_case, time.perf_counter() - t0,
                                        cached=ok and not progress._local.ran, ok=ok,
                                        log=progress._local.log if progress._local.ran else None))
            return outputs, status

        def run_local_subprocess(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
            import os

            progress._local.ran = True
            path = getattr(progress._local, "log", None) or progress.log_path("task", None)
            env = {**os.environ, **env_vars} if env_vars else None
            with open(path, "a") as out:
                return subprocess.run(full_command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                      check=False).returncode

        self._patch(task_executor, "execute_single_task", execute_single_task)
        self._patch(subprocess_task_handler, "run_local_subprocess", run_local_subprocess)
        self._patch(logging_utils, "local_logger_context", contextlib.nullcontext)
        self._patch(logging_utils, "indented_print", contextlib.nullcontext)
        self._patch(logging_utils, "print_horizontal_line", lambda: None)
        if self.max_parallel:
            executor_cls = enhanced_dag_orchestrator.ParallelExecutor
            original_init = executor_cls.__init__
            limit = int(self.max_parallel)

            def init(executor: Any, max_workers: int | None = None) -> None:
                original_init(executor, max_workers)
                executor.conservative_max = max(executor.conservative_max, limit)  # one loop level: no nesting
                executor.max_workers = max(executor.max_workers, limit)

            self._patch(executor_cls, "__init__", init)
        self._quiet_logging()
        return self

    def __exit__(self, *exc: object) -> None:
        while self._undo:
            self._undo.pop()()

    def _patch(self, module: Any, name: str, value: Any) -> None:
        old = getattr(module, name)
        setattr(module, name, value)
        self._undo.append(lambda: setattr(module, name, old))

    def _quiet_logging(self) -> None:
        """The root logger (kfp's messages, ours, warnings) writes to ``kfp.log`` only."""
        root = logging.getLogger()
        handler = logging.FileHandler(self.log_dir / "kfp.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        saved, level = root.handlers[:], root.level
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)

        def restore() -> None:
            logging.captureWarnings(False)
            root.handlers[:] = saved
            root.setLevel(level)
            handler.close()

        self._undo.append(restore)


def _use_case_of(utils: Any, task_spec: Any, io_store: Any) -> str | None:
    """The ``use_case`` argument a task receives (``None`` outside the per-use-case loop)."""
    if io_store is None:
        return None
    try:
        arguments = utils.make_task_arguments(task_inputs_spec=task_spec.inputs, io_store=io_store)
    except Exception:  # noqa: BLE001 - only a label: the task itself reports its own errors
        return None
    value = arguments.get("use_case")
    return str(value) if value else None


@contextlib.contextmanager
def quiet_run(log_dir: str | Path, use_cases: Sequence[str], printer: Callable[[str], None] | None = None,
              max_parallel: int | None = None) -> Iterator[TaskProgress]:
    """``with quiet_run(dir, ucs) as p: pipeline(...)``: prints the header, the task lines, and
    at the end the rows of tasks that did not run for every use case."""
    progress = TaskProgress(log_dir, use_cases, printer, max_parallel)
    progress.printer(progress.header())
    with progress:
        try:
            yield progress
        finally:
            progress.flush()
