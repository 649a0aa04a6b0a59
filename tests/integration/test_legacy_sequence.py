"""The legacy guide's commands (TRAINING_REVERSE_MODELS.md), as ``recs`` subcommands with the
guide's own flags, one after another into one ``models/`` folder on the tiny marketplace: the
datasets (CSV outputs, the snapshot at its default ``data/snapshot``), ``train two-tower``,
``train als``, ``train ranker`` and the two-tower evaluation, without an error. The defaults line
up: both retrievers fit on the train window, so the ranker learns on validation pairs from
scores that never saw them (the full two-stage result: README, "Legacy scripts")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from startup_recs.cli import main

GUIDE = [  # the guide's commands, flag for flag (run from the folder holding data/ and models/)
    "dataset two-tower --use-case startup_developer --output data/two_tower_reverse_developer.csv "
    "--negative-samples 5 --min-interactions 1",
    "dataset two-tower --use-case startup_investor --output data/two_tower_reverse_investor.csv "
    "--negative-samples 5 --min-interactions 1",
    "dataset als --use-case startup_developer --output-dir data --min-interactions 1",
    "dataset ranker --use-case startup_developer --output data/ranker_reverse_developer.csv --neg-ratio 2",
    "train two-tower --data data/two_tower_reverse_developer.csv --use-case startup_developer --epochs 50 "
    "--batch-size 256 --lr 0.001 --embedding-dim 128 --output-dir models",
    "train als --data data/als_interactions_reverse.npz --user-mapping data/als_reverse_user_mapping.json "
    "--item-mapping data/als_reverse_item_mapping.json --use-case startup_developer --factors 128 "
    "--iterations 10 --output-dir models --model-name als_reverse_v1",
    "train ranker --data data/ranker_reverse_developer.csv --use-case startup_developer --epochs 20 "
    "--batch-size 128 --lr 0.001 --output-dir models",
    "train two-tower --evaluate --model models/two_tower_reverse_v1_best.pth "
    "--config models/two_tower_reverse_v1_config.json --data data/two_tower_reverse_developer.csv",
]


def test_the_guide_runs_in_order_into_one_models_folder(tiny_snapshot: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    shutil.copytree(tiny_snapshot, tmp_path / "data" / "snapshot")  # where `recs extract --out` puts it
    monkeypatch.chdir(tmp_path)
    for command in GUIDE:
        assert main(command.split()) == 0, command
    models = tmp_path / "models"
    for name in ("two_tower_reverse_v1_best.pth", "two_tower_reverse_v1_latest.pth", "two_tower_reverse_v1_config.json",
                 "two_tower_reverse_v1_encoder.json", "als_reverse_v1_user_factors.npy",
                 "als_reverse_v1_item_factors.npy", "als_reverse_v1_user_mapping.json",
                 "als_reverse_v1_item_mapping.json", "als_reverse_v1_config.json", "ranker_reverse_v1_config.json"):
        assert (models / name).is_file(), name
    ranker = json.loads((models / "ranker_reverse_v1_config.json").read_text())
    # the ranker learnt from both retrievers: each was fit before the validation window it learns on
    assert set(ranker["train"]["retrievers_used"]) >= {"two_tower", "als"}
    als_meta = json.loads((tmp_path / "data" / "als_reverse_meta.json").read_text())
    assert als_meta["fit_window"] == "train" and als_meta["cutoff"] == ranker["train"]["val_start"]
    assert json.loads((models / "two_tower_reverse_v1_config.json").read_text())["data"]["fit_on"] == "train"
    out = capsys.readouterr().out
    assert "recall@" in out.lower()  # the evaluation table of the last command
