"""Admission to the model thread: a bounded queue and a deadline per request.

Model work runs on a small thread pool (``RECS_MODEL_THREADS``, default 1), never on the event
loop. A thread pool's own queue is unbounded: under a flood every request would wait its turn
and the answers would come back long after the clients gave up. :class:`WorkQueue` bounds it:

- at most ``max_queue`` requests wait for or run model work; one more is answered 503 at once,
  with ``Retry-After`` (:class:`~predictors.errors.Overloaded`), before it costs anything;
- each admitted request gets a :class:`Deadline` of ``request_timeout_s`` from its arrival, queue
  wait included. The model checks it before each entity it answers, so a request that waited too
  long does no work at all, and a batch stops at the next entity once its time is up; the client
  gets 503 with ``Retry-After`` by then at the latest (the await is bounded too).

A request the client gave up on still holds its place until the thread reaches it (a thread cannot
be interrupted), but reaching it costs one deadline check.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from predictors.errors import Overloaded
from startup_recs.core.errors import ConfigError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_MAX_QUEUE = 32
_GRACE_S = 0.25  # past the deadline, the thread gets this long to notice it and answer itself
_EXECUTOR: ThreadPoolExecutor | None = None


def model_executor() -> ThreadPoolExecutor:
    """The threads that run model work (``RECS_MODEL_THREADS``, default 1).

    One thread by default: the serving core is not promised to be thread-safe, and on two cores a
    second thread mostly contends for the GIL with the event loop.
    """
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=max(1, int(os.environ.get("RECS_MODEL_THREADS", "1"))),
                                       thread_name_prefix="recs-model")
    return _EXECUTOR


@dataclass(frozen=True)
class Limits:
    """``request_timeout_s``: deadline of one request, queue wait included; ``max_queue``: requests
    waiting for or running model work at once (all models together)."""

    request_timeout_s: float = DEFAULT_TIMEOUT_S
    max_queue: int = DEFAULT_MAX_QUEUE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.request_timeout_s) and 0 < self.request_timeout_s <= 600):
            raise ConfigError(f"request timeout must be in (0, 600] seconds, got {self.request_timeout_s}")
        if not 1 <= self.max_queue <= 100_000:
            raise ConfigError(f"max queue must be in [1, 100000], got {self.max_queue}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Limits:
        """From ``RECS_REQUEST_TIMEOUT`` (seconds) and ``RECS_MAX_QUEUE``; defaults when unset."""
        try:
            timeout = float(env.get("RECS_REQUEST_TIMEOUT", DEFAULT_TIMEOUT_S))
            queue = int(env.get("RECS_MAX_QUEUE", DEFAULT_MAX_QUEUE))
        except ValueError as exc:
            raise ConfigError(f"RECS_REQUEST_TIMEOUT / RECS_MAX_QUEUE: {exc}") from None
        return cls(timeout, queue)


class Deadline:
    """The moment a request must be answered by (monotonic clock)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.at = time.monotonic() + timeout_s

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self) -> None:
        """:class:`Overloaded` once the deadline has passed."""
        if time.monotonic() >= self.at:
            raise self.exceeded()

    def exceeded(self) -> Overloaded:
        return Overloaded(f"not answered within the {self.timeout_s:g} s request deadline; retry later "
                          "or send fewer entities per request", self.timeout_s)


class WorkQueue:
    """Bounded admission of model work (see the module doc). Used from the event loop only."""

    def __init__(self, limits: Limits | None = None, executor: Executor | None = None) -> None:
        self.limits = limits or Limits.from_env()
        self._executor = executor
        self._pending = 0

    @property
    def pending(self) -> int:
        """Requests admitted whose model work has not finished (waiting or running)."""
        return self._pending

    async def run(self, fn: Callable[[Deadline], T]) -> T:
        """``fn(deadline)`` on the model thread; :class:`Overloaded` when the queue is full or the
        deadline passes first."""
        if self._pending >= self.limits.max_queue:
            raise Overloaded(f"the model queue is full ({self._pending} requests waiting); retry later",
                             self.limits.request_timeout_s)
        deadline = Deadline(self.limits.request_timeout_s)
        fut = asyncio.get_running_loop().run_in_executor(self._executor or model_executor(), fn, deadline)
        self._pending += 1
        fut.add_done_callback(self._finished)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline.remaining()) + _GRACE_S)
        except TimeoutError:
            raise deadline.exceeded() from None

    def _finished(self, fut: asyncio.Future) -> None:
        self._pending -= 1
        if not fut.cancelled():
            fut.exception()  # retrieved: an abandoned request's error is not logged as "never retrieved"


_QUEUE: WorkQueue | None = None


def default_queue() -> WorkQueue:
    """The process's queue (all models share the model thread), limits from the environment
    unless :func:`configure` set them."""
    global _QUEUE
    if _QUEUE is None:
        _QUEUE = WorkQueue()
    return _QUEUE


def configure(limits: Limits) -> WorkQueue:
    """Set the process's queue limits (``serve`` calls it once, before the server starts)."""
    global _QUEUE
    _QUEUE = WorkQueue(limits)
    return _QUEUE
