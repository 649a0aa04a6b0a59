"""``--request-timeout`` / ``--max-queue``: one definition for ``recs serve`` and ``python -m
predictors``; a flag wins over ``RECS_REQUEST_TIMEOUT`` / ``RECS_MAX_QUEUE``, which win over the
work queue's defaults."""

from __future__ import annotations

import argparse

import pytest

from predictors.server import limits_of
from predictors.work_queue import DEFAULT_MAX_QUEUE, DEFAULT_TIMEOUT_S
from startup_recs.cli import build_parser
from startup_recs.serving.flags import add_serve_flags


def _predictor_args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_serve_flags(p, default_host="0.0.0.0")
    return p.parse_args(["--bundle", "x", *argv])


def test_flag_wins_over_env_and_env_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECS_REQUEST_TIMEOUT", raising=False)
    monkeypatch.delenv("RECS_MAX_QUEUE", raising=False)
    d = limits_of(_predictor_args())
    assert (d.request_timeout_s, d.max_queue) == (DEFAULT_TIMEOUT_S, DEFAULT_MAX_QUEUE)
    monkeypatch.setenv("RECS_REQUEST_TIMEOUT", "7")
    monkeypatch.setenv("RECS_MAX_QUEUE", "9")
    e = limits_of(_predictor_args())
    assert (e.request_timeout_s, e.max_queue) == (7.0, 9)
    f = limits_of(_predictor_args("--request-timeout", "3", "--max-queue", "5"))
    assert (f.request_timeout_s, f.max_queue) == (3.0, 5)


def test_recs_serve_has_the_same_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECS_MAX_QUEUE", "9")
    args = build_parser().parse_args(["serve", "--bundle", "x", "--request-timeout", "4"])
    got = limits_of(args)
    assert (got.request_timeout_s, got.max_queue) == (4.0, 9)
