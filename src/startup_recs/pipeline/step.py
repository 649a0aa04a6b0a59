"""What every pipeline step shares at run time: the :func:`step` decorator (logging set-up,
start/finish lines, the failure record that ``recs pipeline run-local`` reads) and
:func:`log_metrics` for a KFP ``Metrics`` artifact."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

STEP_ERROR_ENV = "RECS_STEP_ERROR_FILE"

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging() -> None:
    """INFO logs to stderr in a component's process (kfp's executor configures none for us)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")


def scrubbed(exc: BaseException) -> BaseException:
    """``exc`` itself, or (when its message quotes a URL with a password) an exception of the same
    type whose message has the password masked, so neither the log line, the failure record nor
    the traceback KFP prints shows it. A type that cannot be rebuilt from one message becomes a
    :class:`RuntimeError` naming it."""
    from startup_recs.data.appdb import mask_secrets

    text = str(exc)
    safe = mask_secrets(text)
    if safe == text:
        return exc
    try:
        out = type(exc)(safe)
        if str(out) == safe:
            return out
    except Exception:  # noqa: BLE001 - a constructor with other arguments
        pass
    return RuntimeError(f"{type(exc).__name__}: {safe}")


def record_failure(step_name: str, exc: BaseException) -> None:
    """Leave the failing step's one-line message where ``recs pipeline run-local`` finds it."""
    path = os.environ.get(STEP_ERROR_ENV)
    if path:
        try:
            with open(path, "a") as f:
                f.write(json.dumps({"step": step_name, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        except OSError:
            pass


def step(template: str) -> Callable[[F], F]:
    """Decorator: logging set-up, start/finish lines, failure recorded for run-local. ``template``
    may name arguments (``"tune-{model}"``)."""

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                name = template.format(**sig.bind(*args, **kwargs).arguments)
            except (KeyError, TypeError, IndexError):
                name = template
            setup_logging()
            t0 = time.perf_counter()
            log.info("step %s: start", name)
            try:
                out = fn(*args, **kwargs)
            except BaseException as exc:
                safe = scrubbed(exc)
                record_failure(name, safe)
                log.error("step %s failed: %s", name, safe)
                if safe is exc:
                    raise
                raise safe from None

            log.info("step %s: done in %.1f s", name, time.perf_counter() - t0)
            return out

        return run  # type: ignore[return-value]

    return wrap


def log_metrics(artifact: Any, values: dict[str, Any]) -> None:
    """Log the float values on a KFP ``Metrics`` artifact (duck-typed: the core imports no kfp)
    and write them to its path too, so a local cache entry finds the artifact's file."""
    floats = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for k, v in floats.items():
        artifact.log_metric(k, v)
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(floats, indent=2, sort_keys=True))
