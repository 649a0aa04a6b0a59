"""A/B experiments (startup_recs.serving.experiments): sticky assignment, the split, spec parsing,
and answers from the assigned arm's bundle, hot-reloaded like the control's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from startup_recs.core import bundle
from startup_recs.core.errors import ConfigError
from startup_recs.serving.experiments import (
    Experiment,
    assign,
    bucket,
    parse_experiment,
    parse_experiments,
)
from startup_recs.serving.reload import BundleSlot


class Answers:
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.data = f"data-of-{tag}"

    def recommend(self, entity_id: str, limit: int, **options) -> dict:
        return {"tag": self.tag, "entity_id": entity_id, "model_version": self.tag, "limit": limit, **options}

    def recommend_batch(self, ids: list[str], limits: list[int]) -> list[dict]:
        return [{**self.recommend(e, n), "batched": True} for e, n in zip(ids, limits, strict=True)]


def loader(local_dir: Path) -> Answers:
    return Answers(json.loads((local_dir / "model.json").read_text())["tag"])


def publish(models: Path, tag: str, use_case: str = "startup_developer") -> dict:
    staging = models.parent / f"staging-{tag}"
    staging.mkdir(parents=True)
    (staging / "model.json").write_text(json.dumps({"tag": tag}))
    return bundle.publish(staging, str(models), use_case, metrics={}, watermark=None)


IDS = [f"s{i:06d}" for i in range(10_000)]


def test_assignment_is_sticky_and_stable_across_processes():
    arms = [assign("exp", e, 0.2) for e in IDS[:200]]
    assert arms == [assign("exp", e, 0.2) for e in IDS[:200]]  # same entity, same arm
    code = ("from startup_recs.serving.experiments import bucket; "
            "print(repr([bucket('exp', f's{i:06d}') for i in range(50)]))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    assert eval(other.stdout) == [bucket("exp", e) for e in IDS[:50]]  # not Python's salted hash()
    # pinned: sha256("exp\0s000000")[:8] / 2**64
    assert bucket("exp", "s000000") == pytest.approx(int.from_bytes(
        __import__("hashlib").sha256(b"exp\x00s000000").digest()[:8], "big") / 2**64)


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5, 0.8])
def test_split_is_within_three_points_of_the_share_over_10k_ids(share):
    treated = sum(assign("startup_developer:v2", e, share) == "treatment" for e in IDS)
    assert abs(treated / len(IDS) - share) <= 0.03


def test_a_new_name_reshuffles_the_entities():
    a = {e for e in IDS if assign("one", e, 0.5) == "treatment"}
    b = {e for e in IDS if assign("two", e, 0.5) == "treatment"}
    overlap = len(a & b) / len(a)
    assert 0.45 < overlap < 0.55  # independent splits, not the same half again


def test_parse_experiment_forms_and_errors():
    s = parse_experiment("startup_developer=/models/startup_developer/v2:20")
    assert (s.use_case, s.source, s.percent, s.share, s.name) == (
        "startup_developer", "/models/startup_developer/v2", 20.0, 0.2, "startup_developer:v2")
    s = parse_experiment("startup_investor=s3://bucket/models/startup_investor/v7:12.5:spring-test")
    assert (s.source, s.percent, s.name) == ("s3://bucket/models/startup_investor/v7", 12.5, "spring-test")
    assert parse_experiment("startup_developer=s3://b/m/latest:50").source == "s3://b/m/latest"
    for bad in ("startup_developer=/m/v2", "nope=/m/v2:20", "/m/v2:20", "startup_developer=/m/v2:0",
                "startup_developer=/m/v2:100", "startup_developer=:20", "startup_developer=/m/v2:nan"):
        with pytest.raises(ConfigError):
            parse_experiment(bad)
    with pytest.raises(ConfigError, match="one at a time"):
        parse_experiments(["startup_developer=/a:10", "startup_developer=/b:10"], ["startup_developer"])
    with pytest.raises(ConfigError, match="no --bundle serves"):
        parse_experiments(["startup_investor=/a:10"], ["startup_developer"])


def test_answers_come_from_the_assigned_arm_and_the_treatment_hot_reloads(tmp_path):
    control_root, treatment_root = tmp_path / "a" / "models", tmp_path / "b" / "models"
    publish(control_root, "A")
    publish(treatment_root, "B1")
    spec = parse_experiment(f"startup_developer={treatment_root / 'startup_developer'}:30:t")
    exp = Experiment(spec, BundleSlot(spec.source, "startup_developer", loader=loader))
    control = BundleSlot(str(control_root / "startup_developer"), "startup_developer", loader=exp.wrap(loader))
    # treatment not loaded yet: its entities get the control's answer, labelled as what was served
    control.refresh()
    model = control.current.model
    treated = next(e for e in IDS if exp.arm(e) == "treatment")
    kept = next(e for e in IDS if exp.arm(e) == "control")
    a = model.recommend(treated, 5)
    assert a["tag"] == "A" and a["experiment"] == {"name": "t", "arm": "control", "fallback": True}
    exp.treatment.refresh()
    a, b = model.recommend(treated, 5), model.recommend(kept, 5)
    assert a["tag"] == "B1" and a["experiment"] == {"name": "t", "arm": "treatment"}
    assert b["tag"] == "A" and b["experiment"] == {"name": "t", "arm": "control"}
    assert model.data == "data-of-A"  # everything else is the control's
    assert model.recommend(treated, 5, filters="f")["filters"] == "f"  # request options reach the arm's model
    # a batch: each arm's entities in one batch of its own model, answers in request order
    ids = IDS[:40]
    answers = model.recommend_batch(ids, [3] * len(ids))
    assert [x["entity_id"] for x in answers] == ids
    assert [x["tag"] for x in answers] == ["B1" if exp.arm(e) == "treatment" else "A" for e in ids]
    assert all(x["batched"] for x in answers)
    # the treatment's source moves on: the next poll swaps it in, the control stays
    publish(treatment_root, "B2")
    assert exp.treatment.refresh() is True
    assert model.recommend(treated, 5)["tag"] == "B2" and model.recommend(kept, 5)["tag"] == "A"
    assert exp.describe()["treatment_version"] == "v2"
