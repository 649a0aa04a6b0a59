"""Threads per kfp.local task: the use cases running side by side share the cores."""

from __future__ import annotations

import os

from pipelines.local import THREAD_ENV, _threads_per_task, task_threads


def test_threads_split_the_cores_between_the_use_cases_at_once() -> None:
    assert task_threads(2, 4) == 1  # the demo on this laptop: four use cases, two cores
    assert task_threads(16, 4) == 4
    assert task_threads(16, 1) == 16
    assert task_threads(1, 1) == 1 and task_threads(0, 3) == 1


def test_an_omp_setting_is_a_ceiling_not_a_floor() -> None:
    assert task_threads(16, 2, "2") == 2  # OMP_NUM_THREADS=2 stays the most a task gets
    assert task_threads(16, 2, "32") == 8
    assert task_threads(2, 4, "2") == 1
    assert task_threads(8, 1, "") == 8 and task_threads(8, 1, "x") == 8 and task_threads(8, 1, "0") == 8


def test_the_setting_lasts_for_the_run_only(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with _threads_per_task(4) as n:
        assert n == 1 and all(os.environ[k] == "1" for k in THREAD_ENV)
    assert os.environ["OMP_NUM_THREADS"] == "2" and "MKL_NUM_THREADS" not in os.environ
