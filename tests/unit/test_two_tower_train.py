"""Two-tower trainer on tiny planted-signal data: quality, artifacts, save/load, resume, fallbacks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from startup_recs.cli import main
from startup_recs.models.two_tower import TwoTowerModel
from startup_recs.train.two_tower import TwoTowerConfig, best_epoch_of, evaluate_saved, fit, train
from tests.unit.two_tower_data import make_dataset

torch.set_num_threads(1)
UC = "startup_developer"
STEM = "two_tower_reverse_v1"


def small_cfg(**kw) -> TwoTowerConfig:
    base = dict(epochs=20, batch_size=64, embedding_dim=32, hidden_dim=64, feature_dim=16, lr=3e-3,
                patience=4, progress=False, seed=0)
    base.update(kw)
    return TwoTowerConfig(**base)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tt"))


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("models")
    return out, train(small_cfg(), str(data), str(out))


def test_learns_the_planted_signal_and_beats_popularity(trained: tuple[Path, dict], data: Path) -> None:
    out, _ = trained
    res = evaluate_saved(str(out / f"{STEM}_best.pth"), str(out / f"{STEM}_config.json"), str(data))
    tt, pop = res["two_tower"], res["popularity"]
    assert tt["users"] == pop["users"] > 30
    assert tt["recall@10"] >= 1.5 * pop["recall@10"] and tt["recall@10"] - pop["recall@10"] >= 0.15, res
    assert tt["ndcg@10"] >= 1.5 * pop["ndcg@10"], res


def test_writes_every_artifact(trained: tuple[Path, dict], data: Path) -> None:
    out, config = trained
    for key in ("best", "latest", "config", "encoder", "history", "candidate_embeddings", "candidate_ids",
                "entity_embeddings", "entity_ids"):
        assert (out / config["files"][key]).is_file(), key
    assert config["use_case"] == UC and config["hyperparameters"]["embedding_dim"] == 32
    assert 1 <= config["best_epoch"] <= config["epochs_run"] <= 20
    assert best_epoch_of(str(out), UC) == config["best_epoch"]  # the final refit's --epochs
    cand = np.load(out / f"{STEM}_candidate_embeddings.npy", allow_pickle=False)
    cand_ids = json.loads((out / f"{STEM}_candidate_ids.json").read_text())
    sidecar = pd.read_parquet(str(data).replace(".parquet", "_candidates.parquet"))
    assert cand_ids == sidecar["candidate_id"].tolist() and cand.shape == (len(cand_ids), 32)  # every candidate
    assert np.allclose(np.linalg.norm(cand, axis=1), 1.0, atol=1e-5)
    hist = json.loads((out / f"{STEM}_history.json").read_text())
    assert [h["epoch"] for h in hist] == list(range(1, config["epochs_run"] + 1))
    assert hist[-1]["loss"] < hist[0]["loss"] and all("recall@20" in h for h in hist)
    assert max(h["recall@20"] for h in hist) == pytest.approx(config["best_val"])
    # best: a plain state_dict; latest: model + optimizer + epoch, both weights_only-loadable.
    best = torch.load(out / f"{STEM}_best.pth", weights_only=True)
    latest = torch.load(out / f"{STEM}_latest.pth", weights_only=True)
    assert "entity_tower.id_emb.weight" in best and latest["epoch"] == config["epochs_run"]
    assert "optimizer" in latest and "model" in latest


def test_save_load_gives_identical_scores(trained: tuple[Path, dict], data: Path) -> None:
    out, _ = trained
    model = TwoTowerModel.from_dir(str(out), UC)
    ents = pd.read_parquet(str(data).replace(".parquet", "_entities.parquet"))
    cands = pd.read_parquet(str(data).replace(".parquet", "_candidates.parquet"))
    e = model.encode_entities(ents)
    c = model.encode_candidates(cands)
    assert np.array_equal(c, np.load(out / f"{STEM}_candidate_embeddings.npy"))
    assert np.array_equal(e, np.load(out / f"{STEM}_entity_embeddings.npy"))
    # ids + a frame indexed by id (the serving call) gives the same rows
    feats = cands.set_index("candidate_id")
    ids = ["d005", "d001"]
    assert np.allclose(model.encode_candidates(ids, feats.loc[ids]), c[[5, 1]], atol=1e-6)  # batch-size noise
    again = TwoTowerModel.from_dir(str(out), UC)
    assert np.array_equal(again.encode_entities(ents) @ again.encode_candidates(cands).T, e @ c.T)


def test_unknown_ids_fall_back_to_features(trained: tuple[Path, dict], data: Path) -> None:
    out, _ = trained
    model = TwoTowerModel.from_dir(str(out), UC)
    ents = pd.read_parquet(str(data).replace(".parquet", "_entities.parquet"))
    cands = pd.read_parquet(str(data).replace(".parquet", "_candidates.parquet"))
    c = model.encode_candidates(cands)
    # A brand-new startup that copies s000's profile (cluster 0) gets an embedding from features
    # alone, and it points at cluster-0 developers.
    new = ents.iloc[[0]].assign(entity_id="s_new_never_seen")
    v = model.encode_entities(new)[0]
    assert np.isfinite(v).all() and abs(np.linalg.norm(v) - 1) < 1e-5
    assert not np.allclose(v, model.encode_entities(ents.iloc[[0]])[0])  # no id part
    top = np.argsort(-(c @ v))[:20]
    cluster0 = np.arange(len(cands)) % 4 == 0
    assert cluster0[top].mean() >= 0.6, cluster0[top].mean()  # chance: 0.25
    # the feature-only vector equals the known startup's vector with its id embedding removed
    x = model.entity_tower
    with torch.no_grad():
        known_id = model.encoder.entity.encode_ids(["s000"])[0]
        assert known_id > 0 and x.id_emb.weight[0].abs().sum() == 0


def test_resume_continues_exactly(data: Path, tmp_path: Path) -> None:
    cfg = small_cfg(fit_on="trainval", epochs=4, embedding_dim=16, hidden_dim=32)
    m_full, _ = fit(cfg, str(data), str(tmp_path / "full"))
    fit(small_cfg(fit_on="trainval", epochs=2, embedding_dim=16, hidden_dim=32), str(data), str(tmp_path / "part"))
    m_res, conf = fit(cfg, str(data), str(tmp_path / "part"), resume=True)
    assert conf["epochs_run"] == 4 and conf["best_epoch"] == 4
    hist = json.loads((tmp_path / "part" / f"{STEM}_history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    for (k, a), (_, b) in zip(m_full.state_dict().items(), m_res.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k
    latest = torch.load(tmp_path / "part" / f"{STEM}_latest.pth", weights_only=True)
    assert latest["epoch"] == 4


def test_fit_on_trainval_runs_fixed_epochs_without_validation(data: Path, tmp_path: Path) -> None:
    conf = train(small_cfg(fit_on="trainval", epochs=3, patience=1), str(data), str(tmp_path))
    assert conf["epochs_run"] == 3 and conf["best_epoch"] == 3 and not conf["stopped_early"]
    hist = json.loads((tmp_path / f"{STEM}_history.json").read_text())
    assert all("recall@20" not in h for h in hist)
    # the encoder of the trainval fit knows ids first seen in validation
    pairs = pd.read_parquet(data)
    train_ids = set(pairs[(pairs.split == "train") & (pairs.label > 0)].candidate_id)
    val_only = sorted(set(pairs[(pairs.split == "val") & (pairs.label > 0)].candidate_id) - train_ids)
    enc = json.loads((tmp_path / f"{STEM}_encoder.json").read_text())
    assert val_only and set(val_only) <= set(enc["candidate"]["ids"])


def test_id_only_data_trains_and_beats_popularity(tmp_path: Path) -> None:
    path = make_dataset(tmp_path / "d", features=False, n_startups=40, pos_per_startup=16, seed=1)
    conf = train(small_cfg(epochs=30, patience=6, temperature=0.3), str(path), str(tmp_path / "m"))
    assert conf["model"]["entity"]["features"] == [] and conf["model"]["candidate"]["features"] == []
    res = evaluate_saved(str(tmp_path / "m" / f"{STEM}_best.pth"), str(tmp_path / "m" / f"{STEM}_config.json"), str(path))
    assert res["two_tower"]["recall@10"] > 1.2 * res["popularity"]["recall@10"], res
    model = TwoTowerModel.from_dir(str(tmp_path / "m"), UC)
    v = model.encode_entities(["never_seen"])  # unknown id, no features: the shared base vector
    assert v.shape == (1, 32) and np.isfinite(v).all()


def test_cli_train_and_evaluate(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m"
    assert main(["train", "two-tower", "--data", str(data), "--output-dir", str(out), "--epochs", "2",
                 "--batch-size", "64", "--embedding-dim", "16", "--device", "cpu", "--no-progress",
                 "--fit-on", "trainval", "--hard-negatives", "1", "--temperature", "0.1"]) == 0
    conf = json.loads((out / f"{STEM}_config.json").read_text())
    hp = conf["hyperparameters"]
    assert (hp["epochs"], hp["hard_negatives"], hp["temperature"], hp["fit_on"]) == (2, 1, 0.1, "trainval")
    capsys.readouterr()
    assert main(["train", "two-tower", "--evaluate", "--data", str(data), "--model", str(out / f"{STEM}_best.pth"),
                 "--config", str(out / f"{STEM}_config.json")]) == 0
    table = capsys.readouterr().out
    assert "| two_tower |" in table and "| popularity |" in table and "ndcg@10" in table


def test_latest_checkpoint_loads_through_from_dir(trained: tuple[Path, dict]) -> None:
    out, _ = trained
    m = TwoTowerModel.from_dir(str(out), UC, which="latest")
    state = torch.load(io.BytesIO((out / f"{STEM}_latest.pth").read_bytes()), weights_only=True)["model"]
    assert torch.equal(m.state_dict()["candidate_tower.id_emb.weight"], state["candidate_tower.id_emb.weight"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_training_learns(data: Path, tmp_path: Path) -> None:
    conf = train(small_cfg(device="cuda"), str(data), str(tmp_path))
    res = evaluate_saved(str(tmp_path / f"{STEM}_best.pth"), str(tmp_path / f"{STEM}_config.json"), str(data),
                         device="cuda")
    assert conf["best_val"] > 0 and res["two_tower"]["recall@10"] >= 1.5 * res["popularity"]["recall@10"]
