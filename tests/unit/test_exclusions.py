"""Already-contacted candidates are excluded, viewed ones are not: the per-use-case rule
(``UseCase.exclude_events``, ``data.snapshot.exclusion_events``), kept by the serving data on disk,
followed by the answers and by the evaluation's rankings and relevant items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from startup_recs.core.usecases import USE_CASES, get_use_case
from startup_recs.data.snapshot import exclusion_events
from startup_recs.evaluation.protocol import target_window
from startup_recs.serving.data import ServingData
from startup_recs.serving.recommender import Recommender
from startup_recs.serving.retrievers import load_retrievers

T0 = pd.Timestamp("2026-03-01", tz="UTC")


def _events(rows: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": [r[0] for r in rows], "candidate_id": [r[1] for r in rows],
                         "ts": [T0 + pd.Timedelta(days=r[2]) for r in rows], "event": [r[3] for r in rows],
                         "weight": 1.0})


def test_the_rule_per_use_case() -> None:
    app = {"view", "click", "contact", "apply_received", "apply", "save"}
    assert exclusion_events("startup_developer", app, False) == ["contact", "apply_received"]
    assert exclusion_events("startup_investor", app, False) == ["contact"]
    assert exclusion_events("developer_startup", app, False) == ["apply", "contact"]
    assert exclusion_events("investor_startup", app, False) == ["contact"]
    for uc in USE_CASES.values():  # configurable per use case; default = its positives
        assert uc.excluded_by == (uc.exclude_events or uc.positive_events)
        assert "view" not in uc.excluded_by
    assert exclusion_events("startup_developer", {"view"}, False) == []  # app data: a view never excludes
    # an imported log with its own names: its positives (every event but views)
    assert exclusion_events("startup_developer", {"view", "hire"}, True) == ["hire"]


def test_viewed_candidates_stay_recommendable_contacted_ones_do_not(tmp_path) -> None:
    ev = _events([("s1", "u1", -5, "view"), ("s1", "u2", -4, "contact"), ("s1", "u3", -3, "click"),
                  ("s1", "u4", -2, "apply_received"), ("s2", "u1", -1, "contact"), ("s2", "u5", -1, "view")])
    data = ServingData.from_events(ev, "startup_developer", T0)
    idx = data.candidate_index
    assert sorted(data.seen_of("s1").tolist()) == sorted(idx[c] for c in ("u1", "u2", "u3", "u4"))  # history
    assert sorted(data.excluded_of("s1").tolist()) == sorted(idx[c] for c in ("u2", "u4"))
    assert data.exclude_events == ("contact", "apply_received")
    data.save(str(tmp_path / "serving"))
    back = ServingData.load(str(tmp_path / "serving"))
    assert {e: v.tolist() for e, v in back.excluded.items()} == {e: v.tolist() for e, v in data.excluded.items()}
    assert back.exclude_events == data.exclude_events
    rec = Recommender(back, load_retrievers(str(tmp_path), back))  # popularity: u1 first
    ids = [c["id"] for c in rec.recommend("s1", limit=10)["candidates"]]
    assert "u1" in ids and "u3" in ids and not {"u2", "u4"} & set(ids)
    # configured otherwise, a view excludes too
    strict = ServingData.from_events(ev, "startup_developer", T0, exclude_events=("contact", "view"))
    assert sorted(strict.excluded_of("s1").tolist()) == sorted(idx[c] for c in ("u1", "u2"))


def test_a_folder_written_before_the_rule_excludes_every_interaction(tmp_path) -> None:
    ev = _events([("s1", "u1", -5, "view"), ("s1", "u2", -4, "contact")])
    data = ServingData.from_events(ev, "startup_developer", T0)
    data.save(str(tmp_path / "serving"))
    meta = tmp_path / "serving" / "serving_data.json"
    import json

    obj = json.loads(meta.read_text())
    obj["files"].remove("excluded.parquet")
    meta.write_text(json.dumps(obj))
    old = ServingData.load(str(tmp_path / "serving"))
    assert old.exclude_events is None and old.excluded_of("s1").tolist() == old.seen_of("s1").tolist()


def test_evaluation_follows_the_same_rule() -> None:
    ev = _events([("s1", "u1", -5, "view"), ("s1", "u2", -4, "contact"),
                  ("s1", "u1", 1, "contact"),  # viewed before, contacted after: a hit to find
                  ("s1", "u2", 2, "contact")])  # contacted before: excluded, never a new hit
    data = ServingData.from_events(ev, "startup_developer", T0)
    t = target_window(ev, data, T0, None)
    assert t.entity_ids == ["s1"] and t.relevant[0].tolist() == [data.candidate_index["u1"]]
    assert t.n_relevant.tolist() == [1]
    # and the candidate the evaluation counts is one serving may return
    assert data.candidate_index["u1"] not in data.exclusions("s1")


@pytest.mark.parametrize("name", sorted(USE_CASES))
def test_every_use_case_names_real_events(name: str) -> None:
    from startup_recs.data.schema import ENUMS

    uc = get_use_case(name)
    assert set(uc.excluded_by) <= ENUMS[(uc.interactions_table, "event")]
    assert np.all([e in uc.positive_events for e in uc.excluded_by])
