"""Hot reload (startup_recs.serving.reload) on real bundles published with startup_recs.core.bundle.

The loader here reads one JSON file of the bundle: the slot's logic (resolve, verify, swap,
refuse) is what is under test; the predictor's integration tests load the real Recommender.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from startup_recs.core import bundle
from startup_recs.core.errors import BundleError, ConfigError
from startup_recs.serving.reload import BundleSlot, Poller, expand_sources, load_bundle, use_case_of


class Answers:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def recommend(self, entity_id: str, limit: int) -> dict:
        return {"tag": self.tag, "entity_id": entity_id}


def loader(local_dir: Path) -> Answers:
    return Answers(json.loads((local_dir / "model.json").read_text())["tag"])


def publish(models: Path, use_case: str, tag: str) -> dict:
    staging = models.parent / f"staging-{use_case}-{tag}"
    staging.mkdir(parents=True)
    (staging / "model.json").write_text(json.dumps({"tag": tag}))
    return bundle.publish(staging, str(models), use_case, metrics={}, watermark=None)


def corrupt_latest(models: Path, use_case: str) -> None:
    ptr = json.loads((models / use_case / "latest").read_text())
    (models / use_case / ptr["path"] / "model.json").write_text(json.dumps({"tag": "tampered"}))


def test_slot_loads_then_hot_swaps_and_old_object_stays_usable(tmp_path):
    models = tmp_path / "models"
    publish(models, "startup_developer", "one")
    swaps = []
    slot = BundleSlot(str(models / "startup_developer"), "startup_developer", loader=loader,
                      on_swap=lambda old, new: swaps.append((old and old.version, new.version)))
    assert slot.current is None
    assert slot.refresh() is True
    first = slot.current
    assert first.version == "v1" and first.model.tag == "one" and first.manifest["use_case"] == "startup_developer"
    assert slot.refresh() is False  # nothing new
    publish(models, "startup_developer", "two")
    assert slot.refresh() is True
    assert slot.current.version == "v2" and slot.current.model.tag == "two"
    assert first.model.recommend("s1", 3)["tag"] == "one"  # an in-flight request's object still answers
    assert swaps == [(None, "v1"), ("v1", "v2")]


def test_corrupt_new_bundle_is_refused_and_old_keeps_serving(tmp_path, caplog):
    models = tmp_path / "models"
    publish(models, "startup_developer", "one")
    slot = BundleSlot(str(models / "startup_developer"), "startup_developer", loader=loader, retry_after_s=3600)
    slot.refresh()
    publish(models, "startup_developer", "two")
    corrupt_latest(models, "startup_developer")
    with caplog.at_level(logging.DEBUG, logger="startup_recs.serving.reload"):
        assert slot.refresh() is False
        assert slot.refresh() is False  # same broken target: not retried, not logged again
    assert slot.current.version == "v1" and slot.current.model.tag == "one"
    assert "checksum mismatch for model.json" in slot.last_error
    refusals = [r for r in caplog.records if " refused, " in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING
    assert "keeps serving v1" in refusals[0].getMessage()
    publish(models, "startup_developer", "three")  # a good v3 replaces the bad v2
    assert slot.refresh() is True and slot.current.model.tag == "three" and slot.last_error is None


def test_missing_source_is_not_ready_until_a_bundle_appears(tmp_path):
    models = tmp_path / "models"
    slot = BundleSlot(str(models / "startup_investor"), "startup_investor", loader=loader)
    assert slot.refresh() is False and slot.current is None
    assert "no bundle here" in slot.last_error
    publish(models, "startup_investor", "late")
    assert slot.refresh() is True and slot.current.model.tag == "late"


def test_bundle_of_another_use_case_and_broken_loader_are_bundle_errors(tmp_path):
    models = tmp_path / "models"
    publish(models, "startup_developer", "one")
    with pytest.raises(BundleError, match="is a 'startup_developer' bundle, expected 'startup_investor'"):
        load_bundle(str(models / "startup_developer"), use_case="startup_investor", loader=loader)

    def broken(_dir: Path) -> Answers:
        raise ValueError("cannot reshape array")

    with pytest.raises(BundleError, match="cannot load \\(ValueError: cannot reshape array\\)"):
        load_bundle(str(models / "startup_developer"), loader=broken)


def test_expand_sources_forms(tmp_path):
    models = tmp_path / "models"
    publish(models, "startup_developer", "a")
    publish(models, "startup_investor", "b")
    root = str(models)
    assert expand_sources([root]) == {"startup_developer": f"{root}/startup_developer",
                                      "startup_investor": f"{root}/startup_investor"}
    assert expand_sources([f"{root}/startup_investor/v1"]) == {"startup_investor": f"{root}/startup_investor/v1"}
    assert expand_sources([f"startup_developer={root}/startup_developer"]) == {
        "startup_developer": f"{root}/startup_developer"}
    assert use_case_of(f"{root}/startup_developer/latest") == "startup_developer"
    with pytest.raises(ConfigError, match="two bundles given for use case startup_developer"):
        expand_sources([root, f"{root}/startup_developer"])
    with pytest.raises(ConfigError, match="cannot tell the use case"):
        expand_sources([str(tmp_path / "nowhere")])


def test_poller_picks_up_a_new_version(tmp_path):
    models = tmp_path / "models"
    publish(models, "startup_developer", "one")
    slot = BundleSlot(str(models / "startup_developer"), "startup_developer", loader=loader)
    slot.refresh()
    poller = Poller([slot], 0.05).start()
    try:
        publish(models, "startup_developer", "two")
        deadline = time.time() + 5
        while slot.current.version != "v2" and time.time() < deadline:
            time.sleep(0.02)
    finally:
        poller.stop()
    assert slot.current.model.tag == "two"
    with pytest.raises(ConfigError):
        Poller([slot], 0)
