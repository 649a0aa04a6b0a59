"""Artifact file names are a public contract: published bundles and the legacy scripts use them.

Every name is spelled out here in full, so a change to the naming rule fails loudly.
"""

from __future__ import annotations

import pytest

from startup_recs.core import artifacts
from startup_recs.core.usecases import USE_CASES, get_use_case


@pytest.mark.parametrize(("use_case", "sfx"), [("startup_developer", "_reverse"), ("startup_investor", "_reverse"),
                                               ("developer_startup", ""), ("investor_startup", "")])
def test_suffix_follows_the_use_case_direction(use_case: str, sfx: str) -> None:
    assert artifacts.suffix(use_case) == sfx == artifacts.suffix(get_use_case(use_case))
    assert artifacts.model_stem("als", use_case) == f"als{sfx}_v1"
    assert artifacts.dataset_stem("two_tower", use_case) == f"two_tower{sfx}"


def test_two_tower_names() -> None:
    assert artifacts.two_tower_files("startup_developer").as_dict() == {
        "best": "two_tower_reverse_v1_best.pth",
        "latest": "two_tower_reverse_v1_latest.pth",
        "config": "two_tower_reverse_v1_config.json",
        "encoder": "two_tower_reverse_v1_encoder.json",
        "history": "two_tower_reverse_v1_history.json",
        "candidate_embeddings": "two_tower_reverse_v1_candidate_embeddings.npy",
        "candidate_ids": "two_tower_reverse_v1_candidate_ids.json",
        "entity_embeddings": "two_tower_reverse_v1_entity_embeddings.npy",
        "entity_ids": "two_tower_reverse_v1_entity_ids.json",
    }
    forward = artifacts.two_tower_files("developer_startup")
    assert forward.stem == "two_tower_v1" and forward.best == "two_tower_v1_best.pth"
    assert list(forward.as_dict()) == list(artifacts.two_tower_files("startup_investor").as_dict())


def test_als_model_and_dataset_names() -> None:
    f = artifacts.als_files("startup_investor")
    assert f.stem == "als_reverse_v1"
    assert f.data_files() == {
        "user_factors": "als_reverse_v1_user_factors.npy",
        "item_factors": "als_reverse_v1_item_factors.npy",
        "user_mapping": "als_reverse_v1_user_mapping.json",
        "item_mapping": "als_reverse_v1_item_mapping.json",
    }
    assert f.config == "als_reverse_v1_config.json"
    assert artifacts.als_files("investor_startup").item_factors == "als_v1_item_factors.npy"
    assert artifacts.als_files_named("my_als").user_mapping == "my_als_user_mapping.json"
    assert artifacts.als_dataset_files("startup_developer").as_dict() == {
        "matrix": "als_interactions_reverse.npz",
        "user_mapping": "als_reverse_user_mapping.json",
        "item_mapping": "als_reverse_item_mapping.json",
        "meta": "als_reverse_meta.json",
    }
    assert artifacts.als_dataset_files("developer_startup").as_dict() == {
        "matrix": "als_interactions.npz", "user_mapping": "als_user_mapping.json",
        "item_mapping": "als_item_mapping.json", "meta": "als_meta.json",
    }
    assert artifacts.is_als_dataset_meta("als_reverse_meta.json") and artifacts.is_als_dataset_meta("als_meta.json")
    assert not artifacts.is_als_dataset_meta("ranker_reverse_meta.json")


def test_item2item_and_ranker_names() -> None:
    assert artifacts.item2item_files("startup_developer").names() == (
        "item2item_reverse_v1_config.json", "item2item_reverse_v1_item_mapping.json",
        "item2item_reverse_v1_weights.npy", "item2item_reverse_v1_similarity.npz")
    assert artifacts.item2item_files("investor_startup").stem == "item2item_v1"
    assert artifacts.ranker_files("startup_developer").as_dict() == {
        "final": "ranker_reverse_v1.pth", "best": "ranker_reverse_v1_best.pth",
        "booster": "ranker_reverse_v1_booster.txt", "config": "ranker_reverse_v1_config.json"}
    assert artifacts.ranker_files("developer_startup").config == "ranker_v1_config.json"


def test_dataset_files_and_sidecars() -> None:
    assert artifacts.two_tower_dataset("startup_developer") == "two_tower_reverse.parquet"
    assert artifacts.ranker_dataset("investor_startup") == "ranker.parquet"
    assert artifacts.sidecar("d/two_tower_reverse.parquet", artifacts.VOCAB_SIDECAR) == "d/two_tower_reverse_vocab.json"
    assert artifacts.sidecar("s3://b/x.csv", artifacts.META_SIDECAR) == "s3://b/x_meta.json"
    assert artifacts.sidecar("x", artifacts.ENTITIES_SIDECAR) == "x_entities.parquet"
    assert (artifacts.CANDIDATES_SIDECAR, artifacts.PROPENSITY_SIDECAR) == ("candidates.parquet", "propensity.json")


def test_folder_level_names() -> None:
    assert (artifacts.SERVING_DIR, artifacts.SERVING_META, artifacts.SERVING_CANDIDATES, artifacts.SERVING_ENTITIES,
            artifacts.SERVING_SEEN) == ("serving", "serving_data.json", "candidates.parquet", "entities.parquet",
                                        "seen.parquet")
    assert artifacts.SERVING_EXCLUDED == "excluded.parquet"
    assert artifacts.serving_feature_table(artifacts.ENTITY_FEATURES) == "entity_features.parquet"
    assert artifacts.serving_feature_table(artifacts.CANDIDATE_FEATURES) == "candidate_features.parquet"
    assert (artifacts.ROUTING, artifacts.MANIFEST, artifacts.LATEST) == ("routing.json", "manifest.json", "latest")
    assert (artifacts.METRICS, artifacts.REPORT, artifacts.TRAINING_CURVES_PLOT) == (
        "metrics.json", "report.md", "training_curves.png")
    assert artifacts.ndcg_plot(10) == "ndcg_at_10.png"
    assert (artifacts.BEST_PARAMS, artifacts.TRIALS, artifacts.TUNING_DIR, artifacts.TUNING_REPORT) == (
        "best_params.json", "trials.csv", "tuning", "tuning.md")
    assert artifacts.EXTRACT_STATS == "extract_stats.json"


def test_every_use_case_has_distinct_names_per_direction() -> None:
    stems = {uc: artifacts.two_tower_files(uc).stem for uc in USE_CASES}
    assert set(stems.values()) == {"two_tower_reverse_v1", "two_tower_v1"}
