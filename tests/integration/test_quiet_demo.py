"""Quiet local runs: kfp.local's executor output goes to log files, the console gets one line per
pipeline task. A toy pipeline through the real kfp.local (seconds), then ``recs demo --size tiny``
end to end, its stdout counted (slow: the whole pipeline for four use cases)."""


import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("kfp")

from kfp import dsl, local  # noqa: E402

from pipelines.progress import quiet_run  # noqa: E402
from tests.integration.predictor_support import REPO, free_port  # noqa: E402

MAX_DEMO_LINES = 80


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def _shout(use_case: str, out: dsl.Output[dsl.Artifact]):
    import os

    for i in range(50):
        print(f"executor chatter {use_case} {i}")
    os.makedirs(out.path, exist_ok=True)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def _first() -> str:
    print("the first task talks too")
    return "ok"


@dsl.pipeline(name="quiet-toy")
def _toy(use_cases: list = ["a_b", "c_d"]):  # noqa: B006 - KFP reads the default
    _first().set_caching_options(False)
    with dsl.ParallelFor(use_cases, parallelism=2) as uc:
        _shout(use_case=uc).set_display_name("shout")


def test_a_quiet_run_prints_one_line_per_task_and_logs_the_rest(tmp_path: Path, capfd) -> None:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               enable_caching=True, cache_root=str(tmp_path / "cache"))
    lines: list[str] = []
    for _ in range(2):  # the second run: the loop's task comes from kfp's cache
        with quiet_run(tmp_path / "logs", ["a_b", "c_d"], lines.append, max_parallel=2):
            _toy()
    out, _ = capfd.readouterr()
    assert "chatter" not in out and "the first task" not in out, out[:500]  # nothing of kfp's on stdout
    assert len(lines) == 6 and lines[0].split() == ["task", "a_b", "c_d"] == lines[3].split()
    runs = [{line.split()[0]: line for line in lines[i + 1:i + 3]} for i in (0, 3)]  # tasks in finishing order
    assert set(runs[0]) == set(runs[1]) == {"first", "shout"}
    assert "(all use cases)" in runs[0]["first"]
    assert len(re.findall(r"\d s\b", runs[0]["shout"])) == 2 and "cached" not in runs[0]["shout"]
    assert runs[1]["shout"].split() == ["shout", "cached", "cached"]
    log = (tmp_path / "logs" / "a_b" / "shout.log").read_text()
    assert "executor chatter a_b 49" in log
    assert "the first task talks too" in (tmp_path / "logs" / "first.log").read_text()
    assert (tmp_path / "logs" / "kfp.log").is_file()


@pytest.mark.slow
def test_recs_demo_tiny_prints_at_most_80_lines(tmp_path: Path) -> None:
    """The whole demo on the tiny marketplace (small budgets): every task line, the quality tables
    and the curl calls fit in 80 lines of stdout; the executor logs are under logs/."""
    work = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'src'}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "startup_recs.cli", "demo", "--size", "tiny", "--workdir", str(work),
           "--port", str(free_port()), "--param", "tt_epochs=1", "--param", "tune_als_trials=1",
           "--param", "tune_item2item_trials=1"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    lines = res.stdout.splitlines()
    try:
        assert len(lines) <= MAX_DEMO_LINES, res.stdout
        assert any(line.strip().startswith("evaluate ") for line in lines), res.stdout
        assert any("NDCG@10 / Recall@10" in line for line in lines)
        assert f"executor logs in {work / 'logs'}/" in res.stdout
        assert (work / "logs" / "startup_developer" / "evaluate.log").is_file()
        assert res.returncode == 0 or "no bundle published for" in res.stderr, res.stderr[-2000:]
        if res.returncode == 0:
            assert any(line.strip().startswith("curl -s") for line in lines)
        _check_ranker_signal(work, env)
    finally:
        pid = next((w for line in lines if line.startswith("predictor: recs serve (pid ")
                    for w in [line.split("pid ")[1].split(")")[0]]), None)
        if pid:
            subprocess.run(["kill", pid], check=False)


def _check_ranker_signal(work: Path, env: dict[str, str]) -> None:
    """``benchmarks/bench_ranker_signal.py`` on the demo's ranker run: it refits the trained
    learner on the same lists (the pipeline's holdout NDCG@10 to the digit), each extra column is
    one more feature and half the lists are fewer lists. What the planted columns are worth is a
    measurement at demo size (README: + planted taste 1.24-1.35x): the tiny world trains on ~70
    lists, where any one column more or less moves the holdout NDCG@10 by up to 25 %."""
    import json

    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_ranker_signal.py"), "--workdir",
                          str(work), "--use-case", "startup_developer"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["scenario"]: r for r in map(json.loads, (ln for ln in res.stdout.splitlines() if ln.startswith("{")))}
    assert {"as trained", "another negative draw", "- als", "- match components", "half the lists",
            "+ planted match", "+ planted taste"} <= set(rows)
    saved = [json.loads(p.read_text()) for p in work.glob("kfp_root/*/**/train-ranker/model/ranker_reverse_v1_config.json")]
    trained = next(c for c in saved if c["use_case"] == "startup_developer")["train"]["metrics"]["holdout_ndcg@10"]
    assert rows["as trained"]["holdout_ndcg@10"] == pytest.approx(trained, abs=1e-4)
    for planted in ("+ planted taste", "+ planted match"):
        assert rows[planted]["features"] == rows["as trained"]["features"] + 1
        assert rows[planted]["train_lists"] == rows["as trained"]["train_lists"]
    assert rows["half the lists"]["train_lists"] < rows["as trained"]["train_lists"]
