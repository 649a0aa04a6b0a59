"""The publish path refits every model on all events up to the watermark: the pipeline's steps as
plain functions on the tiny marketplace (tiny budgets), with one contact planted a day before the
watermark. The evaluated folder stops at split_at (the contact is a test event there); the
published bundle records ``fit_until`` == the watermark, its serving data and every model reach
it, the ranker learnt on the window after split_at, and the planted contact is excluded from the
answer. The metrics stay the evaluation of record (test window), and the report says so."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from startup_recs.core import bundle, storage
from startup_recs.data import appdb
from startup_recs.data.extract import extract_db
from startup_recs.data.snapshot import load_snapshot
from startup_recs.pipeline import data_steps, evaluate_steps, publish_steps, refit_steps, train_steps
from startup_recs.serving.data import ServingData
from startup_recs.serving.recommender import Recommender

UC = "startup_developer"
TT = {"batch_size": 512, "device": "cpu", "seed": 0}


@pytest.fixture(scope="module")
def run(tiny_db: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    w = tmp_path_factory.mktemp("fresh")
    db = w / "app.db"
    shutil.copy(tiny_db, db)
    url = f"sqlite:///{db}"
    first = w / "first"
    extract_db(url, str(first))
    snap = load_snapshot(str(first))
    ev = snap.events(UC)
    watermark = pd.Timestamp(snap.stats["watermark"])
    # a hot startup contacts a developer it never met, one day before the watermark (a test event)
    hot = ev["entity_id"].value_counts().index[0]
    met = set(ev.loc[ev["entity_id"] == hot, "candidate_id"])
    fresh_dev = next(c for c in snap.known_ids(UC, "candidate") if c not in met)
    t = (watermark - pd.Timedelta(days=1)).to_pydatetime()
    appdb.insert_rows(url, {"startup_interactions": pa.table({
        "startup_id": [hot], "user_id": [fresh_dev], "event": ["contact"], "ts": [t], "session_id": [None]})})
    s = str(w / "snapshot")
    extract_db(url, s)
    tuned = {}
    for name, best in (("two_tower", {"embedding_dim": 16}), ("als", {"factors": 16, "iterations": 4})):
        tuned[name] = w / f"tuned_{name}"
        tuned[name].mkdir()
        (tuned[name] / "best_params.json").write_text(json.dumps({"best_params": best}))

    data_steps.dataset_two_tower(s, UC, str(w / "ds_tt"))
    for window in ("train", "trainval"):
        data_steps.dataset_als(s, UC, str(w / f"ds_als_{window}"), fit_window=window)
        train_steps.train_als(str(w / f"ds_als_{window}"), UC, str(w / f"als_{window}"), params_dir=str(tuned["als"]))
    data_steps.dataset_ranker(s, UC, str(w / "ds_rk"))
    stage1_tt = train_steps.train_two_tower(str(w / "ds_tt"), UC, str(w / "tt_train"), window="train", epochs=3,
                                            params_dir=str(tuned["two_tower"]), **TT)
    final_tt = train_steps.train_two_tower(str(w / "ds_tt"), UC, str(w / "tt_trainval"), window="trainval", epochs=3,
                                           params_dir=str(tuned["two_tower"]), stage1_dir=str(w / "tt_train"), **TT)
    train_steps.train_ranker(str(w / "ds_rk"), str(w / "tt_train"), str(w / "als_train"), s, UC, str(w / "stage1"),
                             epochs=3)
    evaluate_steps.evaluate(s, str(w / "tt_trainval"), str(w / "als_trainval"), str(w / "stage1"), UC,
                            str(w / "models"), str(w / "eval"))
    info = refit_steps.refit(s, str(w / "models"), str(w / "ds_tt"), str(w / "tt_train"), UC, str(w / "fresh"),
                             tuned_two_tower=str(tuned["two_tower"]), tuned_als=str(tuned["als"]), epochs=3,
                             ranker_epochs=3, **TT)
    out = publish_steps.publish(str(w / "fresh"), str(w / "eval"), s, str(w / "published"), UC, margin=None)
    return {"w": w, "snapshot": s, "watermark": watermark, "hot": hot, "dev": fresh_dev, "info": info,
            "published": out, "stage1_tt": stage1_tt, "final_tt": final_tt}


def test_published_bundle_is_fit_until_the_watermark(run: dict) -> None:
    local, manifest = bundle.fetch_verified(str(run["w"] / "published" / UC))
    wm = storage.read_json(str(Path(run["snapshot"]) / "extract_stats.json"))["watermark"]
    assert manifest["fit_until"] == manifest["data_watermark"] == wm
    assert pd.Timestamp(manifest["refit"]["evaluated"]["fit_until"]) == pd.Timestamp(manifest["metrics"]["split_at"])
    assert manifest["metrics"]["models"]["routed_ranked"]["all"]["ndcg@10"] >= 0  # the evaluation of record
    assert "## Published models" in (local / "report.md").read_text()
    data = ServingData.load(str(local / "serving"))
    assert data.until is None  # every event of the snapshot
    events = load_snapshot(run["snapshot"]).events(UC)
    assert sum(data.entity_counts.values()) == len(events)
    # every model saw the last window: the two-tower on all splits, ALS ids of test-only entities
    tt = json.loads((local / "two_tower_reverse_v1_config.json").read_text())
    assert tt["data"]["fit_on"] == "all" and tt["data"]["fit_until"] is None
    evaluated = ServingData.load(str(run["w"] / "models" / "serving"))
    late = set(events["entity_id"]) - set(evaluated.entity_counts)
    umap = json.loads((local / "als_reverse_v1_user_mapping.json").read_text())
    assert late and late <= set(umap)
    # the ranker learnt on the window after split_at, with features fit until it
    rk_config = json.loads((local / "ranker_reverse_v1_config.json").read_text())
    rk = rk_config["train"]
    assert pd.Timestamp(rk["val_start"]) == pd.Timestamp(manifest["metrics"]["split_at"])
    evaluated_rk = json.loads((run["w"] / "models" / "ranker_reverse_v1_config.json").read_text())
    assert rk_config["learner"] == evaluated_rk["learner"] and rk["learner"] == evaluated_rk["learner"]
    assert pd.Timestamp(rk["features_fit_until"]) == pd.Timestamp(rk["val_start"])
    assert json.loads((local / "routing.json").read_text()) == json.loads((run["w"] / "models" / "routing.json").read_text())


def test_two_tower_refits_train_for_the_scaled_stage1_best_epoch(run: dict) -> None:
    best = run["stage1_tt"]["best_epoch"]
    for info in (run["final_tt"], run["info"]):
        epochs = info.get("refit_epochs", info.get("tt_refit_epochs"))
        assert 1 <= epochs <= 3 and abs(epochs - best) <= 1  # r is small on this data
    assert run["final_tt"]["stage1_best_epoch"] == best
    assert run["final_tt"]["refit_positives"] > run["final_tt"]["stage1_positives"] > 0


def test_a_contact_the_day_before_the_watermark_is_excluded(run: dict) -> None:
    hot, dev = run["hot"], run["dev"]
    evaluated = Recommender.load(str(run["w"] / "models"))
    published = Recommender.load(str(run["w"] / "published" / UC / "v1"))
    n = published.data.n_candidates
    before = {c["id"] for c in evaluated.recommend(hot, limit=n)["candidates"]}
    after = {c["id"] for c in published.recommend(hot, limit=n)["candidates"]}
    assert dev in before  # the evaluated models stop at split_at: the contact is in their future
    assert dev not in after and after  # the published bundle knows it: never recommended again
    assert published.data.candidate_index[dev] in published.data.excluded_of(hot)
    when = load_snapshot(run["snapshot"]).events(UC).query("entity_id == @hot and candidate_id == @dev")["ts"]
    assert (run["watermark"] - when.iloc[0]) == dt.timedelta(days=1)
