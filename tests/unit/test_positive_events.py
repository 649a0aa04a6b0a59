"""One definition of a positive event: on an imported id-only log whose event names are not the
use case's, the ranker's labels and the evaluation's relevant items are the same events."""

from __future__ import annotations

import numpy as np
import pandas as pd

from startup_recs.data.snapshot import load_snapshot, positive_events
from startup_recs.data.split import TimeSplit
from startup_recs.datasets.common import prepare
from startup_recs.datasets.ranker import build_ranker
from startup_recs.evaluation.protocol import target_events, target_window
from startup_recs.serving.data import ServingData
from startup_recs.train.ranker_inputs import val_positive_events
from tests.unit.dataset_helpers import events_snapshot

UC = "startup_developer"  # positives: contact, apply_received; the log has neither


def _log() -> list[tuple[str, str, float, str, float]]:
    """(entity, candidate, day, event, weight); every (entity, candidate) pair occurs once, and
    every candidate is known from day 0 on (a warm-up view), so each relevant item is findable."""
    rng = np.random.default_rng(7)
    rows = [("warmup", f"c{c}", 0.0, "view", 1.0) for c in range(40)]
    for e in range(12):
        for c in rng.choice(40, size=12, replace=False):
            rows.append((f"e{e}", f"c{c}", float(rng.uniform(1, 60)), str(rng.choice(["view", "click", "purchase"])), 1.0))
    return rows


def _relevant_pairs(t, data: ServingData) -> set[tuple[str, str]]:
    assert int(t.n_relevant.sum()) == sum(len(r) for r in t.relevant)  # nothing out of reach
    return {(e, str(data.candidate_ids[i])) for e, rel in zip(t.entity_ids, t.relevant, strict=True) for i in rel}


def test_ranker_labels_and_evaluation_targets_are_the_same_events(tmp_path):
    uri = events_snapshot(tmp_path / "snap", _log(), use_case=UC)
    snap = load_snapshot(uri)
    assert snap.source == "events"
    events = snap.events(UC)
    split = TimeSplit.resolve(events["ts"], None, 14.0, 14.0)

    # the event names: views are not acting on a profile, for training and evaluation alike
    eval_names = target_events(events, UC, imported=True)
    prep = prepare(snap, UC, split)
    train_names = set(prep.events.loc[prep.positive_mask(), "event"].astype(str))
    assert eval_names == positive_events(UC, events["event"].astype(str).unique(), True) == ["click", "purchase"]
    assert train_names == set(eval_names)

    # validation window: the trainer's extra positives == the routing choice's relevant items
    val_data = ServingData.from_snapshot(snap, UC, split.val_start, events=events)
    val_target = target_window(events, val_data, split.val_start, split.split_at, imported=True)
    val_pairs = _relevant_pairs(val_target, val_data)
    trainer = val_positive_events(uri, UC, split.val_start, split.split_at)
    assert val_pairs and set(map(tuple, trainer[["entity_id", "candidate_id"]].to_numpy())) == val_pairs

    # the ranker dataset's positives (pseudo-sessions of an id-only log) per part == the targets
    out = str(tmp_path / "ranker.parquet")
    build_ranker(uri, UC, out, split=split)
    rows = pd.read_parquet(out)
    test_data = ServingData.from_snapshot(snap, UC, split.split_at, events=events)
    test_pairs = _relevant_pairs(target_window(events, test_data, split.split_at, None, imported=True), test_data)
    for part, pairs in (("val", val_pairs), ("test", test_pairs)):
        pos = rows[(rows["split"] == part) & (rows["label"] == 1)]
        assert set(zip(pos["entity_id"].astype(str), pos["candidate_id"].astype(str), strict=True)) == pairs, part
