"""End to end on the tiny synthetic marketplace: datasets -> ALS + two-tower stage 1 and final
-> evaluate with the warm route chosen on validation -> metrics.json, report, plots; the models
folder then serves through Recommender.load. Real CLI, real files, no mocks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from startup_recs.cli import main
from startup_recs.serving.data import ServingData
from startup_recs.serving.recommender import Recommender, UnknownEntityError

UC = "startup_developer"
ALS_FLAGS = ["--factors", "32", "--iterations", "15", "--regularization", "0.1", "--alpha", "1",
             "--weighting", "binary", "--seed", "0"]


def _run(*args: str) -> None:
    assert main(list(args)) == 0, args


@pytest.fixture(scope="module")
def evaluated(tiny_snapshot: str, tiny_oracle: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("e2e")
    for window, models in (("train", "stage1"), ("trainval", "models")):
        ds = root / f"als_{window}"
        _run("dataset", "als", "--snapshot", tiny_snapshot, "--use-case", UC, "--output-dir", str(ds),
             "--fit-window", window)
        _run("train", "als", "--data", str(ds / "als_interactions_reverse.npz"),
             "--user-mapping", str(ds / "als_reverse_user_mapping.json"),
             "--item-mapping", str(ds / "als_reverse_item_mapping.json"),
             "--use-case", UC, *ALS_FLAGS, "--output-dir", str(root / models))
    tt = root / "tt" / "two_tower_reverse.parquet"
    _run("dataset", "two-tower", "--snapshot", tiny_snapshot, "--use-case", UC, "--output", str(tt))
    for window, models in (("train", "stage1"), ("trainval", "models")):
        _run("train", "two-tower", "--data", str(tt), "--use-case", UC, "--epochs", "2", "--embedding-dim", "32",
             "--fit-on", window, "--output-dir", str(root / models), "--no-progress", "--seed", "0")
    out = root / "eval"
    _run("evaluate", "--snapshot", tiny_snapshot, "--models", str(root / "models"), "--val-models",
         str(root / "stage1"), "--use-case", UC, "--out", str(out), "--oracle", tiny_oracle, "--k", "10,20")
    return {"root": root, "out": out, "metrics": json.loads((out / "metrics.json").read_text())}


def test_metrics_shape(evaluated):
    m = evaluated["metrics"]
    assert m["k"] == [10, 20] and m["use_case"] == UC and m["split_at"]
    assert {"popularity", "als", "two_tower", "content", "routed", "oracle"} <= set(m["models"])
    for name, by_seg in m["models"].items():
        assert set(by_seg) == {"all", "cold", "warm", "hot"}, name
        allm = by_seg["all"]
        for key in ("recall@10", "ndcg@10", "map@10", "hitrate@10", "coverage@10", "ndcg@20", "users"):
            assert key in allm, (name, key)
        assert 0.0 <= allm["ndcg@10"] <= 1.0 and allm["users"] == m["n_test_entities"]
        assert sum(by_seg[s]["users"] for s in ("cold", "warm", "hot")) == allm["users"]
    assert m["routing"]["chosen_on"] == "validation"
    by_seg = m["routing"]["val_ndcg@10_by_segment"]
    assert set(by_seg) == {"cold", "warm", "hot"} and set(by_seg["warm"]) == {"als", "two_tower", "content"}
    chosen = m["validation"]["chosen"]
    for seg, head in chosen.items():  # each segment's head is its best on validation (or the default)
        if head is not None:
            assert by_seg[seg][head] == max(by_seg[seg].values()), seg
            assert m["routing"].get(seg, m["routing"]["warm"]) == head
    assert m["validation"]["segment_entities"]["warm"] >= 0
    assert "validation" in m and m["validation"]["split_at"] == m["split_at"]
    # exact vs ANN side by side per learned retriever (the tiny catalogue is too small for an IVF index)
    assert {"als", "two_tower"} <= set(m["ann"]) and all("skipped" in v or "ann_recall@200" in v
                                                           for v in m["ann"].values())
    out = evaluated["out"]
    assert (out / "report.md").read_text().count("| routed |") >= 2
    assert (out / "ndcg_at_10.png").stat().st_size > 1000
    assert (out / "training_curves.png").exists()  # ALS / two-tower loss histories
    routing = json.loads((evaluated["root"] / "models" / "routing.json").read_text())
    assert routing["warm"] == m["routing"]["warm"]


def test_oracle_is_the_ceiling_and_cold_routes_to_content(evaluated):
    models = evaluated["metrics"]["models"]
    oracle = models["oracle"]["all"]["ndcg@10"]
    assert oracle > max(v["all"]["ndcg@10"] for n, v in models.items() if n != "oracle")
    # routed: a segment whose head is content (always knows everyone) equals content there
    from startup_recs.serving.router import Routing

    routing = Routing.from_dict(evaluated["metrics"]["routing"])
    for seg in ("cold", "warm", "hot"):
        if routing.chain(seg)[0] == "content":
            assert models["routed"][seg]["ndcg@10"] == pytest.approx(models["content"][seg]["ndcg@10"])
    for route in evaluated["metrics"]["routes"]:
        seg, name = route.split(":")
        assert name in routing.chain(seg), route


def test_no_test_event_leaks_into_training_or_serving(evaluated, tiny_snapshot):
    from startup_recs.data.snapshot import load_snapshot

    split_at = pd.Timestamp(evaluated["metrics"]["split_at"])
    val_start = pd.Timestamp(evaluated["metrics"]["val_start"])
    ev = load_snapshot(tiny_snapshot).events(UC)
    ts = pd.to_datetime(ev["ts"], utc=True)
    data = ServingData.load(str(evaluated["root"] / "models" / "serving"))
    assert data.until == split_at
    before = ev[ts < split_at]
    assert sum(data.entity_counts.values()) == len(before)
    np.testing.assert_allclose(data.popularity.sum(), before["weight"].sum(), rtol=1e-5)
    # every pair first seen after the split is absent from "seen"
    pairs_before = set(zip(before["entity_id"], before["candidate_id"], strict=True))
    seen = {(e, str(data.candidate_ids[c])) for e, cs in data.seen.items() for c in cs}
    assert seen == pairs_before
    # already contacted (the use case's exclude_events, not a view) before the split: excluded
    contacted = before[before["event"].astype(str).isin(["contact", "apply_received"])]
    excluded = {(e, str(data.candidate_ids[c])) for e, cs in data.excluded.items() for c in cs}
    assert excluded == set(zip(contacted["entity_id"], contacted["candidate_id"], strict=True)) < seen
    # the ALS models were fitted on their windows only
    for models, cutoff in (("stage1", val_start), ("models", split_at)):
        umap = json.loads((evaluated["root"] / models / "als_reverse_v1_user_mapping.json").read_text())
        cfg = json.loads((evaluated["root"] / models / "als_reverse_v1_config.json").read_text())
        window = ev[ts < cutoff]
        assert set(umap) == set(window["entity_id"])
        assert cfg["nnz"] == len(window[["entity_id", "candidate_id"]].drop_duplicates())


def test_models_folder_serves(evaluated):
    rec = Recommender.load(str(evaluated["root"] / "models"))
    data = rec.data
    hot = max(data.entity_counts, key=data.entity_counts.get)
    a = rec.recommend(hot, limit=15)
    hot_head = rec.router.routing.chain("hot")[0]
    assert a["method_used"] == f"hot:{hot_head}" and len(a["candidates"]) == 15
    contacted = {str(data.candidate_ids[c]) for c in data.excluded_of(hot)}
    assert contacted and not contacted & {c["id"] for c in a["candidates"]}
    with pytest.raises(UnknownEntityError):
        rec.recommend("no-such-startup")
    assert Path(evaluated["root"] / "models" / "serving" / "serving_data.json").exists()


def _planted_log(path: Path, seed: int = 0) -> None:
    """An id-only interaction log with a planted cluster structure: 400 entities and 500
    candidates in 10 clusters; an entity acts on candidates of its own cluster (plus a few
    globally popular ones) at uniform times over 120 days."""
    rng = np.random.default_rng(seed)
    n_e, n_c, groups = 400, 500, 10
    cgroup = np.arange(n_c) % groups
    start = pd.Timestamp("2026-01-01", tz="UTC")
    rows = []
    for e in range(n_e):
        own = np.flatnonzero(cgroup == e % groups)
        n = rng.integers(4, 30)
        picks = list(rng.choice(own, size=min(n, len(own)), replace=False))
        picks += list(rng.choice(20, size=3, replace=False))  # candidates 0..19: popular everywhere
        for c in picks:
            rows.append((f"e{e}", f"c{c}", start + pd.Timedelta(seconds=int(rng.integers(0, 120 * 86400)))))
    pd.DataFrame(rows, columns=["user", "item", "when"]).to_csv(path, index=False)


def test_id_only_imported_log_trains_and_als_beats_popularity(tmp_path):
    """On an imported id-only log the system still trains and evaluates, and ALS must
    beat popularity; content falls back to popularity (no features)."""
    log_csv = tmp_path / "log.csv"
    _planted_log(log_csv)
    uc = "developer_startup"
    snap = tmp_path / "snap"
    _run("extract", "--events", str(log_csv), "--use-case", uc, "--out", str(snap),
         "--entity-col", "user", "--candidate-col", "item", "--time-col", "when")
    for window, models in (("train", "stage1"), ("trainval", "models")):
        ds = tmp_path / f"als_{window}"
        _run("dataset", "als", "--snapshot", str(snap), "--use-case", uc, "--output-dir", str(ds), "--fit-window", window)
        _run("train", "als", "--data", str(ds / "als_interactions.npz"), "--user-mapping", str(ds / "als_user_mapping.json"),
             "--item-mapping", str(ds / "als_item_mapping.json"), "--use-case", uc, "--factors", "16",
             "--iterations", "15", "--regularization", "0.1", "--output-dir", str(tmp_path / models))
    out = tmp_path / "eval"
    _run("evaluate", "--snapshot", str(snap), "--models", str(tmp_path / "models"), "--val-models",
         str(tmp_path / "stage1"), "--use-case", uc, "--out", str(out))
    m = json.loads((out / "metrics.json").read_text())["models"]
    als, pop = m["als"]["all"]["ndcg@10"], m["popularity"]["all"]["ndcg@10"]
    assert als > 2 * pop and als > 0.1, (als, pop)
    assert m["content"]["all"]["ndcg@10"] == pytest.approx(pop)  # no features: popularity
    assert "oracle" not in m and "two_tower" not in m


def test_models_of_another_use_case_are_refused_before_anything_is_written(evaluated, tiny_snapshot, capsys):
    serving = evaluated["root"] / "models" / "serving" / "serving_data.json"
    before = serving.read_bytes()
    rc = main(["evaluate", "--snapshot", tiny_snapshot, "--models", str(evaluated["root"] / "models"),
               "--use-case", "startup_investor", "--out", str(evaluated["root"] / "bad")])
    assert rc == 2
    assert "trained for use case 'startup_developer'" in capsys.readouterr().err
    assert serving.read_bytes() == before
