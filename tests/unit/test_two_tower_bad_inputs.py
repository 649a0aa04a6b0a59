"""Bad input to the two-tower trainer: one-line typed errors, exit code 2 from the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from startup_recs.cli import main
from startup_recs.core.errors import ConfigError, DataError, ModelFitError, ModelMismatchError
from startup_recs.models.two_tower import TwoTowerModel
from startup_recs.train.two_tower import TwoTowerConfig, evaluate_saved, train
from tests.unit.two_tower_data import make_dataset

torch.set_num_threads(1)
STEM = "two_tower_reverse_v1"


def cfg(**kw) -> TwoTowerConfig:
    base = dict(epochs=2, batch_size=64, embedding_dim=16, hidden_dim=32, feature_dim=8, progress=False)
    base.update(kw)
    return TwoTowerConfig(**base)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("bad"), n_startups=24, n_devs=60, pos_per_startup=8)


@pytest.fixture(scope="module")
def model_dir(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("m")
    train(cfg(), str(data), str(out))
    return out


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_one_line(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _one_line_error(capsys, ["train", "two-tower", "--data", str(data), "--output-dir", str(tmp_path),
                             "--device", "cuda"], "CUDA is not available")
    assert not list(tmp_path.iterdir())  # nothing written


def test_missing_or_malformed_dataset(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture) -> None:
    _one_line_error(capsys, ["train", "two-tower", "--data", str(tmp_path / "nope.parquet")], "not found")
    bad = tmp_path / "bad.parquet"
    pd.read_parquet(data).drop(columns="label").to_parquet(bad)
    with pytest.raises(DataError, match="missing column"):
        train(cfg(), str(bad), str(tmp_path / "o"))
    df = pd.read_parquet(data)
    df.loc[0, "split"] = "holdout"
    df.to_parquet(bad)
    with pytest.raises(DataError, match="unknown split"):
        train(cfg(), str(bad), str(tmp_path / "o"))
    df = pd.read_parquet(data)
    df.loc[0, "weight"] = -1.0
    df.to_parquet(bad)
    with pytest.raises(DataError, match="non-negative"):
        train(cfg(), str(bad), str(tmp_path / "o"))


def test_empty_validation_split(tmp_path: Path, data: Path) -> None:
    src = pd.read_parquet(data)
    src = src[src["split"] != "val"]
    path = tmp_path / "noval.parquet"
    src.to_parquet(path)
    for side in ("entities", "candidates", "meta.json"):
        ext = "" if side.endswith(".json") else ".parquet"
        shutil.copy(str(data).replace(".parquet", f"_{side}{ext}"), str(path).replace(".parquet", f"_{side}{ext}"))
    with pytest.raises(DataError, match="validation split is empty"):
        train(cfg(), str(path), str(tmp_path / "o"))
    # ... while a trainval fit with fixed epochs needs no validation
    assert train(cfg(fit_on="trainval"), str(path), str(tmp_path / "o"))["epochs_run"] == 2


def test_nan_loss_raises_model_fit_error(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFitError, match="loss became nan"):
        train(cfg(temperature=1e-45), str(data), str(tmp_path))


@pytest.mark.parametrize("flag,value", [("batch_size", 1), ("epochs", 0), ("lr", -1.0), ("fit_on", "everything"),
                                        ("temperature", 0.0)])
def test_bad_hyperparameters(data: Path, tmp_path: Path, flag: str, value: object) -> None:
    with pytest.raises(ConfigError):
        train(cfg(**{flag: value}), str(data), str(tmp_path))


def test_use_case_mismatch(data: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _one_line_error(capsys, ["train", "two-tower", "--data", str(data), "--use-case", "startup_investor",
                             "--output-dir", str(tmp_path)], "startup_investor", "startup_developer")
    other = make_dataset(tmp_path / "inv", n_startups=24, n_devs=60, pos_per_startup=8, use_case="startup_investor")
    with pytest.raises(ModelMismatchError, match="startup_investor"):
        evaluate_saved(str(model_dir / f"{STEM}_best.pth"), str(model_dir / f"{STEM}_config.json"), str(other))
    with pytest.raises(ModelMismatchError):
        TwoTowerModel.from_dir(str(model_dir), "startup_investor")


def test_feature_dimension_mismatch(data: Path, model_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    # weights of a 32-dim model against a 16-dim config
    big = tmp_path / "big"
    train(cfg(embedding_dim=32), str(data), str(big))
    _one_line_error(capsys, ["train", "two-tower", "--evaluate", "--data", str(data),
                             "--model", str(big / f"{STEM}_best.pth"), "--config", str(model_dir / f"{STEM}_config.json")],
                    "feature dimension mismatch")
    # data without a feature column the model was trained on
    path = tmp_path / "nofeat.parquet"
    shutil.copy(data, path)
    pd.read_parquet(str(data).replace(".parquet", "_entities.parquet")).drop(columns="sector").to_parquet(
        str(path).replace(".parquet", "_entities.parquet"))
    shutil.copy(str(data).replace(".parquet", "_candidates.parquet"), str(path).replace(".parquet", "_candidates.parquet"))
    shutil.copy(str(data).replace(".parquet", "_meta.json"), str(path).replace(".parquet", "_meta.json"))
    with pytest.raises(ModelMismatchError, match="feature dimension mismatch.*sector"):
        evaluate_saved(str(model_dir / f"{STEM}_best.pth"), str(model_dir / f"{STEM}_config.json"), str(path))
    model = TwoTowerModel.from_dir(str(model_dir), "startup_developer")
    with pytest.raises(ModelMismatchError, match="sector"):
        model.encode_entities(pd.DataFrame({"entity_id": ["x"], "stage": ["seed"]}))


def test_resume_errors(data: Path, model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no two_tower_reverse_v1_latest.pth"):
        train(cfg(), str(data), str(tmp_path), resume=True)
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    with pytest.raises(ModelMismatchError, match="embedding_dim"):
        train(cfg(embedding_dim=32, epochs=3), str(data), str(copy), resume=True)
    conf = json.loads((copy / f"{STEM}_config.json").read_text())
    assert conf["hyperparameters"]["embedding_dim"] == 16  # untouched
