"""The predictor's admission rules without a server: the bounded work queue and its deadline,
the limits from the environment, and the field checks that sit on top of serving.api."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from predictors import fields
from predictors.errors import BadRequest, Overloaded
from predictors.work_queue import Deadline, Limits, WorkQueue
from startup_recs.core.errors import ConfigError


def test_a_full_queue_refuses_at_once_and_drains() -> None:
    release = threading.Event()
    queue = WorkQueue(Limits(request_timeout_s=5, max_queue=2), ThreadPoolExecutor(1))

    def slow(deadline: Deadline) -> str:
        release.wait(5)
        return "done"

    async def scenario() -> tuple[list, float, int]:
        admitted = [asyncio.create_task(queue.run(slow)) for _ in range(2)]
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        with pytest.raises(Overloaded) as refused:
            await queue.run(slow)
        took = time.perf_counter() - t0
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "5"}
        assert "queue is full" in str(refused.value)
        release.set()
        return await asyncio.gather(*admitted), took, queue.pending

    results, took, pending = asyncio.run(scenario())
    assert results == ["done", "done"] and took < 0.05 and pending == 0


def test_the_deadline_counts_queue_wait_and_bounds_the_await() -> None:
    queue = WorkQueue(Limits(request_timeout_s=0.2, max_queue=8), ThreadPoolExecutor(1))
    ran: list[str] = []

    def busy(deadline: Deadline) -> None:
        time.sleep(0.6)  # one uninterruptible step, longer than the deadline

    def checks(deadline: Deadline) -> None:
        deadline.check()
        ran.append("work")

    async def scenario() -> tuple[float, BaseException | None, BaseException | None]:
        t0 = time.perf_counter()
        first, second = await asyncio.gather(queue.run(busy), queue.run(checks), return_exceptions=True)
        took = time.perf_counter() - t0
        await asyncio.sleep(0.5)  # the abandoned work finishes; its place is given back
        assert queue.pending == 0
        return took, first, second

    took, first, second = asyncio.run(scenario())
    assert isinstance(first, Overloaded) and "deadline" in str(first)
    assert isinstance(second, Overloaded)  # waited behind the busy one past its own deadline
    assert took < 0.2 + 0.25 + 0.2, took
    assert ran == []  # the waiting request did no work once it was dequeued


def test_limits_from_the_environment() -> None:
    assert Limits.from_env({}) == Limits(2.0, 32)
    assert Limits.from_env({"RECS_REQUEST_TIMEOUT": "0.5", "RECS_MAX_QUEUE": "4"}) == Limits(0.5, 4)
    for env in ({"RECS_REQUEST_TIMEOUT": "0"}, {"RECS_REQUEST_TIMEOUT": "nan"}, {"RECS_MAX_QUEUE": "0"},
                {"RECS_MAX_QUEUE": "two"}):
        with pytest.raises(ConfigError):
            Limits.from_env(env)


@pytest.mark.parametrize("raw", ["²", "٣", "１０", "1e2", "0x10", "9" * 13, "", "ten", "+", "1.0"])
def test_a_text_limit_is_ascii_digits(raw: str) -> None:
    with pytest.raises(BadRequest, match="must be an integer"):
        fields.limit_from_text(raw)


def test_text_limits_and_ids_that_pass() -> None:
    assert fields.limit_from_text(None) == 10 and fields.limit_from_text(" 7 ") == 7
    assert fields.entity_id("s000001") == "s000001" and fields.entity_id("Zürich-ü") == "Zürich-ü"
    for bad in ("s\x00", "s\x1b[2J", "s\x7f", "s\u0085x", "s\ud800"):
        with pytest.raises(BadRequest, match="control character"):
            fields.entity_id(bad)
    with pytest.raises(BadRequest, match="given 2 times"):
        fields.single_header(["1", "2"], "x")
    with pytest.raises(BadRequest, match="byte count"):
        fields.length_header("²", "x")
