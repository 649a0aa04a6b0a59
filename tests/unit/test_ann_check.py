"""evaluation/ann_check.py: exact and ANN rankings of the same retriever side by side."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("faiss")

from startup_recs.evaluation import ann_check  # noqa: E402
from startup_recs.evaluation.metrics import summarize  # noqa: E402
from startup_recs.serving.data import ServingData  # noqa: E402
from startup_recs.serving.retrievers import EmbeddingRetriever  # noqa: E402


def test_compare_reports_recall_and_ndcg_change() -> None:
    rng = np.random.default_rng(0)
    n_c, n_e, d = 4_000, 300, 16
    cands = [f"c{i}" for i in range(n_c)]
    ents = [f"e{i}" for i in range(n_e)]
    ev = pd.DataFrame({"entity_id": rng.choice(ents, 2_000), "candidate_id": rng.choice(cands, 2_000),
                       "ts": pd.Timestamp("2026-01-01", tz="UTC"), "weight": 1.0})
    data = ServingData.from_events(ev, "startup_developer", None,
                                   candidate_features=pd.DataFrame({"x": np.zeros(n_c)}, index=cands))
    centres = rng.standard_normal((40, d))
    cv = (centres[rng.integers(0, 40, n_c)] + 0.3 * rng.standard_normal((n_c, d))).astype(np.float32)
    evec = (centres[rng.integers(0, 40, n_e)] + 0.3 * rng.standard_normal((n_e, d))).astype(np.float32)
    r = EmbeddingRetriever("als", data, ents, evec, cv)
    test_ids = ents[:100]
    relevant = [rng.choice(n_c, 3, replace=False) for _ in test_ids]
    out = ann_check.compare(data, {"als": r}, test_ids,
                            lambda top: summarize(top, relevant, n_c, [10], np.array(["warm"] * len(test_ids), object),
                                                  np.full(len(test_ids), 3)),
                            [10])
    row = out["als"]
    assert row["kind"] == "ivf_flat" and row["served"] == "exact" and "nprobe" in row
    assert row["ann_recall@200"] >= 0.9
    ndcg = row["ndcg@10"]
    assert ndcg["change"] == pytest.approx(ndcg["ann"] - ndcg["exact"])
