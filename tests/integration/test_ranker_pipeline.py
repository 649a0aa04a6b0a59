"""``recs train ranker`` end to end on the tiny marketplace: stage-1 ALS (train window) gives the
features, the ranker learns on validation pairs, serving loads it, and leaky inputs are refused.

The two-tower is left out to keep this under a minute on a shared CPU; it goes through the same
``ranking_features`` columns (missing -> 0 + indicator), covered by the unit tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from startup_recs.cli import main

UC = "startup_developer"


def _recs(*argv: str) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def stage1(tiny_snapshot, tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("ranker_e2e")
    for window in ("train", "trainval"):
        assert _recs("dataset", "als", "--snapshot", tiny_snapshot, "--use-case", UC,
                     "--output-dir", w / f"als_{window}", "--fit-window", window) == 0
        d = w / f"als_{window}"
        assert _recs("train", "als", "--data", d / "als_interactions_reverse.npz",
                     "--user-mapping", d / "als_reverse_user_mapping.json",
                     "--item-mapping", d / "als_reverse_item_mapping.json", "--use-case", UC,
                     "--factors", 16, "--iterations", 8,
                     "--output-dir", w / ("stage1" if window == "train" else "final")) == 0
    assert _recs("dataset", "ranker", "--snapshot", tiny_snapshot, "--use-case", UC,
                 "--output", w / "ranker_reverse.parquet") == 0
    return w


def test_train_ranker_cli_and_serve(stage1, tiny_snapshot, capsys):
    w = stage1
    rc = _recs("train", "ranker", "--data", w / "ranker_reverse.parquet", "--use-case", UC,
               "--retrievers", w / "stage1", "--output-dir", w / "stage1", "--epochs", 8, "--seed", 0)
    assert rc == 0
    cfg = json.loads((w / "stage1" / "ranker_reverse_v1_config.json").read_text())
    assert cfg["use_case"] == UC and cfg["model"] == "ranker"
    # the default learner "auto" fits both and keeps the better one on the holdout
    choice = cfg["train"]["metrics"]["learner_choice"]
    assert cfg["learner"] == choice["chosen"] and set(choice["holdout_ndcg@10"]) == {"lightgbm", "mlp"}
    names = sorted(p.name for p in (w / "stage1").glob("ranker*"))
    assert names == (["ranker_reverse_v1_booster.txt", "ranker_reverse_v1_config.json"] if cfg["learner"] == "lightgbm"
                     else ["ranker_reverse_v1.pth", "ranker_reverse_v1_best.pth", "ranker_reverse_v1_config.json"])
    assert cfg["train"]["retrievers_used"] == ["content", "als"]  # content always loads; no two-tower here
    assert cfg["pool"]["sizes"][0] == ["content", 200]
    # the features came from data and models that end at the validation start
    assert pd.Timestamp(cfg["train"]["features_fit_until"]) <= pd.Timestamp(cfg["train"]["val_start"])
    assert any(f.startswith("match_") for f in cfg["features"])  # the synthetic data has profiles
    m = cfg["train"]["metrics"]
    assert m["train_lists"] > 0 and m["holdout_lists"] > 0
    assert 0.0 < m["holdout_ndcg@10"] <= 1.0
    # ranker beats popularity order on its held-out entities (planted affinity is feature-driven)
    assert m["holdout_ndcg@10"] > m["holdout_baselines_ndcg@10"]["pop_log"]

    # serving: the final models + the stage-1 ranker, through the Recommender
    import shutil

    for f in (w / "stage1").glob("ranker*"):
        shutil.copy2(f, w / "final" / f.name)
    from startup_recs.serving.data import ServingData
    from startup_recs.serving.recommender import Recommender
    from startup_recs.serving.rerank import Reranker
    from startup_recs.serving.retrievers import load_retrievers
    from startup_recs.serving.router import Routing

    data = ServingData.from_snapshot(tiny_snapshot, UC)
    rr = Reranker.load(str(w / "final"), UC)
    rec = Recommender(data, load_retrievers(str(w / "final"), data), Routing.load(str(w / "final")), rr)
    hot = max(data.entity_counts, key=data.entity_counts.get)
    out = rec.recommend(hot, 20)
    assert out["reranked"] is True and len(out["candidates"]) == 20
    scores = [c["score"] for c in out["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert not {c["id"] for c in out["candidates"]} & set(data.candidate_ids[data.excluded_of(hot)].tolist())


def test_final_window_retrievers_are_refused(stage1, capsys):
    """Pointing the ranker at the final (train + validation) ALS would leak: one-line error, exit 2."""
    w = stage1
    rc = _recs("train", "ranker", "--data", w / "ranker_reverse.parquet", "--use-case", UC,
               "--retrievers", w / "final", "--output-dir", w / "leaky", "--epochs", 1)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ranker features would leak") and err.count("\n") == 1
    assert not (w / "leaky").exists() or not list((w / "leaky").glob("ranker*"))


def test_use_case_mismatch_is_refused(stage1, capsys):
    w = stage1
    rc = _recs("train", "ranker", "--data", w / "ranker_reverse.parquet", "--use-case", "startup_investor",
               "--retrievers", w / "stage1", "--output-dir", w / "other", "--epochs", 1)
    assert rc == 2
    assert "built for use case 'startup_developer'" in capsys.readouterr().err


def test_scores_are_finite_for_an_entity_no_retriever_knows(stage1, tiny_snapshot):
    from startup_recs.serving import ranking_features
    from startup_recs.serving.data import ServingData
    from startup_recs.serving.rerank import Reranker
    from startup_recs.serving.retrievers import load_retrievers

    data = ServingData.from_snapshot(tiny_snapshot, UC)
    rr = Reranker.load(str(stage1 / "stage1"), UC)
    retrievers = load_retrievers(str(stage1 / "final"), data)
    cold = next(e for e in data.known_entities() if data.interaction_count(e) == 0)
    cidx = np.arange(min(50, data.n_candidates))
    s = rr.score(cold, cidx, ranking_features.gather_scores(retrievers, cold, cidx, rr.retrievers), data)
    assert s.shape == (len(cidx),) and np.isfinite(s).all()
