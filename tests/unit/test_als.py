"""ALS trainer: confidence weighting, planted signal, save/load, NaN handling, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from startup_recs.cli import main
from startup_recs.core.errors import ConfigError, DataError, ModelFitError
from startup_recs.models.als import ALSModel
from startup_recs.train.als import ALSConfig, confidence, fit_als, fit_factors


def planted(seed: int = 0, n_e: int = 120, n_c: int = 200, groups: int = 6):
    """Entities and candidates in ``groups`` clusters; entities act inside their cluster, plus a
    few very popular off-cluster candidates. Returns (train matrix, held-out in-cluster pairs)."""
    rng = np.random.default_rng(seed)
    eg, cg = np.arange(n_e) % groups, np.arange(n_c) % groups
    rows, cols, held = [], [], {}
    popular = np.arange(10)  # everyone touches some of these: a strong popularity signal
    for e in range(n_e):
        inside = rng.permutation(np.flatnonzero(cg == eg[e]))[:12]
        rows += [e] * 9
        cols += list(inside[:9])
        held[e] = set(inside[9:].tolist())
        extra = rng.choice(popular, 3, replace=False)
        rows += [e] * 3
        cols += list(extra)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_e, n_c))
    return m, held


def hit_rate(scores: np.ndarray, train: sp.csr_matrix, held: dict[int, set[int]], k: int = 10) -> float:
    scores = scores.copy()
    scores[train.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([len(set(top[e]) & held[e]) / len(held[e]) for e in held]))


def test_confidence_formula():
    m = sp.csr_matrix(np.array([[0, 2, 0], [3, 0, -1]], np.float32))
    c = confidence(m, alpha=10.0)
    assert c.toarray().tolist() == [[0, 21, 0], [31, 0, 0]]  # negatives dropped
    assert confidence(m, 2.0, "binary").toarray().tolist() == [[0, 3, 0], [3, 0, 0]]
    np.testing.assert_allclose(confidence(m, 1.0, "log").data, 1 + np.log1p([2, 3]), rtol=1e-6)
    assert confidence(m, 1.0, "bm25").nnz == 2
    with pytest.raises(ConfigError):
        confidence(m, 1.0, "nope")


def test_als_learns_planted_clusters_and_beats_popularity():
    m, held = planted()
    ids_e, ids_c = [f"e{i}" for i in range(m.shape[0])], [f"c{i}" for i in range(m.shape[1])]
    model = fit_als(m, ids_e, ids_c, ALSConfig(factors=16, iterations=15, regularization=0.05, alpha=5.0, seed=1))
    als = hit_rate(model.scores(np.arange(m.shape[0])), m, held)
    pop = np.asarray(m.sum(0)).ravel()[None, :].repeat(m.shape[0], 0).astype(np.float32)
    popularity = hit_rate(pop, m, held)
    assert als > 0.35, als  # ceiling ~10/24: cluster recovered, order inside it is arbitrary
    assert als > 3 * popularity + 0.1, (als, popularity)
    assert [h["iteration"] for h in model.config["history"]] == list(range(1, 16))
    assert model.config["diagnostics"]["explained_variance"] > 0.0
    assert model.user_factors.dtype == np.float32 and model.user_factors.shape == (120, 16)


def test_same_seed_same_factors_and_save_load_round_trip(tmp_path):
    m, _ = planted(seed=3)
    ids_e, ids_c = [f"e{i}" for i in range(m.shape[0])], [f"c{i}" for i in range(m.shape[1])]
    cfg = ALSConfig(factors=8, iterations=3, seed=7, num_threads=1)
    a = fit_als(m, ids_e, ids_c, cfg, use_case="startup_developer")
    b = fit_als(m, ids_e, ids_c, cfg, use_case="startup_developer")
    np.testing.assert_allclose(a.user_factors, b.user_factors, rtol=1e-5, atol=1e-6)
    a.save(str(tmp_path), "als_reverse_v1")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["als_reverse_v1_config.json", "als_reverse_v1_item_factors.npy",
                     "als_reverse_v1_item_mapping.json", "als_reverse_v1_user_factors.npy",
                     "als_reverse_v1_user_mapping.json"]
    c = ALSModel.load(str(tmp_path), "als_reverse_v1")
    np.testing.assert_array_equal(c.scores([0, 5]), a.scores([0, 5]))
    assert c.user_ids == ids_e and c.item_ids == ids_c
    assert c.config["use_case"] == "startup_developer" and c.config["factors"] == 8


def test_nan_input_and_nan_factors_raise_model_fit_error():
    m, _ = planted()
    bad = m.copy()
    bad.data[0] = np.nan
    ids_e, ids_c = [str(i) for i in range(m.shape[0])], [str(i) for i in range(m.shape[1])]
    with pytest.raises(ModelFitError, match="NaN"):
        fit_als(bad, ids_e, ids_c, ALSConfig(factors=4, iterations=1))
    conf = confidence(m, 1.0)
    conf.data[0] = np.nan  # bypass the input check: implicit's factors go NaN
    with pytest.raises(ModelFitError, match="NaN"):
        fit_factors(conf, ALSConfig(factors=4, iterations=2))


def test_bad_shapes_and_empty_matrix():
    m, _ = planted()
    with pytest.raises(DataError, match="does not match"):
        fit_als(m, ["a"], ["b"], ALSConfig())
    with pytest.raises(DataError, match="no interactions"):
        fit_als(sp.csr_matrix((2, 2), dtype=np.float32), ["a", "b"], ["c", "d"], ALSConfig())
    with pytest.raises(ConfigError, match="CUDA"):
        import implicit.gpu

        if implicit.gpu.HAS_CUDA:
            pytest.skip("CUDA present")
        fit_als(m, [str(i) for i in range(120)], [str(i) for i in range(200)], ALSConfig(device="cuda"))


def test_cli_train_als(tmp_path, capsys):
    m, _ = planted()
    sp.save_npz(tmp_path / "als_interactions_reverse.npz", m)
    (tmp_path / "um.json").write_text(json.dumps({f"e{i}": i for i in range(m.shape[0])}))
    (tmp_path / "im.json").write_text(json.dumps({f"c{i}": i for i in range(m.shape[1])}))
    (tmp_path / "als_reverse_meta.json").write_text(json.dumps({"use_case": "startup_developer"}))
    out = tmp_path / "models"
    args = ["train", "als", "--data", str(tmp_path / "als_interactions_reverse.npz"),
            "--user-mapping", str(tmp_path / "um.json"), "--item-mapping", str(tmp_path / "im.json"),
            "--factors", "8", "--iterations", "2", "--output-dir", str(out)]
    assert main([*args, "--use-case", "startup_developer"]) == 0
    cfg = json.loads((out / "als_reverse_v1_config.json").read_text())
    assert cfg["use_case"] == "startup_developer" and cfg["n_entities"] == 120
    assert "reconstruction_mse" in cfg["diagnostics"]
    assert main([*args, "--use-case", "startup_investor"]) == 2
    assert "built for use case 'startup_developer'" in capsys.readouterr().err


def test_diagnostics_match_a_dense_reference():
    from startup_recs.train.als import diagnostics

    rng = np.random.default_rng(0)
    m = sp.random(30, 40, density=0.1, random_state=1, format="csr")
    X, Y = rng.normal(size=(30, 4)), rng.normal(size=(40, 4))
    P = (m.toarray() > 0).astype(float)
    mse = float(((P - X @ Y.T) ** 2).mean())
    d = diagnostics(m, X, Y)
    assert d["reconstruction_mse"] == pytest.approx(mse)
    assert d["explained_variance"] == pytest.approx(1 - mse / P.var())
    sampled = diagnostics(m, X, Y, max_cells=60)  # beyond max_cells: an unbiased sample estimate
    assert sampled["reconstruction_mse"] == pytest.approx(mse, rel=0.2)
