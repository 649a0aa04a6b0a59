"""EASE against a dense NumPy reference; kNN fallback; save/load round trip."""

import numpy as np
import pytest
import scipy.sparse as sp

from startup_recs.core.errors import ModelFitError
from startup_recs.models.item2item import Item2ItemConfig, Item2ItemModel
from startup_recs.train.item2item import ease_max_candidates, fit_ease, fit_item2item


def _matrix(seed: int = 0, n_e: int = 40, n_c: int = 25) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((n_e, n_c)) < 0.2).astype(np.float32))


def test_ease_matches_dense_reference() -> None:
    x = _matrix()
    lam = 5.0
    xd = x.toarray().astype(np.float64)
    p = np.linalg.inv(xd.T @ xd + lam * np.eye(xd.shape[1]))
    ref = np.eye(xd.shape[1]) - p / np.diag(p)  # Steck's closed form
    np.testing.assert_allclose(fit_ease(x, lam), ref, atol=1e-4)
    assert np.all(np.diag(fit_ease(x, lam)) == 0)


def test_memory_limit_is_computed_and_enforced() -> None:
    assert ease_max_candidates(4 * 1024**3) == 12385
    with pytest.raises(ModelFitError, match="over the"):
        fit_item2item(_matrix(), Item2ItemConfig("startup_developer", method="ease", memory_budget=1000))
    auto = fit_item2item(_matrix(), Item2ItemConfig("startup_developer", memory_budget=1000))
    assert auto.config.chosen == "bm25" and sp.issparse(auto.weights)


def test_co_occurrence_is_recovered() -> None:
    # candidates 0 and 1 always co-occur; an entity with only 0 should get 1 on top
    rows = [[0, 1], [0, 1], [0, 1], [2, 3], [2, 3], [4]]
    x = sp.csr_matrix((np.ones(sum(map(len, rows)), np.float32),
                       ([i for i, r in enumerate(rows) for _ in r], [c for r in rows for c in r])), shape=(6, 5))
    for method in ("ease", "cosine"):
        m = fit_item2item(x, Item2ItemConfig("startup_developer", method=method, lam=1.0, neighbours=5))
        s = m.score(sp.csr_matrix(np.array([[1, 0, 0, 0, 0]], np.float32)))
        s[0, 0] = -np.inf
        assert int(np.argmax(s[0])) == 1, method


@pytest.mark.parametrize("method", ["ease", "bm25"])
def test_save_load_round_trip(tmp_path, method) -> None:
    x = _matrix(1)
    m = fit_item2item(x, Item2ItemConfig("startup_investor", method=method))
    m.save(tmp_path, "item2item_reverse_v1", {f"c{i}": i for i in range(x.shape[1])})
    back, mapping = Item2ItemModel.load(tmp_path, "item2item_reverse_v1")
    assert mapping["c3"] == 3 and back.config.chosen == method
    np.testing.assert_array_equal(back.score(x[:5]), m.score(x[:5]))
