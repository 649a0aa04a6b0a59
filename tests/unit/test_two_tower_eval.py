"""The trainer's full-ranking validation: queries, exclusions and metrics on a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from startup_recs.core.errors import DataError
from startup_recs.train.two_tower_eval import build_queries, embedding_scorer, popularity_scorer, rank_metrics

# entity 0: fit c0, test c1 c2; entity 1: fit c3, test c3 (already seen: not relevant) and c0;
# entity 2: only fit rows (no query).
ENT = np.array([0, 0, 0, 1, 1, 1, 2])
CAND = np.array([0, 1, 2, 3, 3, 0, 1])
LABEL = np.ones(7, np.int8)
SPLIT = np.array(["train", "test", "test", "train", "test", "test", "train"])


def test_queries_exclude_fit_positives_and_drop_seen_relevants() -> None:
    q = build_queries(ENT, CAND, LABEL, SPLIT, ("train",), "test")
    assert q.entity_rows.tolist() == [0, 1]
    assert list(zip(*q.exclude, strict=True)) == [(0, 0), (1, 3)]
    assert sorted(zip(*q.relevant, strict=True)) == [(0, 1), (0, 2), (1, 0)]


def test_popularity_metrics_by_hand() -> None:
    q = build_queries(ENT, CAND, LABEL, SPLIT, ("train",), "test")
    # popularity c0 > c1 > c2 > c3; entity 0 ranks c1, c2, c3 (c0 excluded); entity 1 ranks c0, c1, c2
    m = rank_metrics(popularity_scorer(torch.tensor([4.0, 3.0, 2.0, 1.0])), q, 4, ks=(1, 2))
    assert m["recall@1"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["recall@2"] == pytest.approx(1.0) and m["ndcg@2"] == pytest.approx(1.0)
    # reversed popularity: entity 0 ranks c3, c2, c1 -> one hit at rank 2; entity 1 ranks c2, c1, c0
    m = rank_metrics(popularity_scorer(torch.tensor([1.0, 2.0, 3.0, 4.0])), q, 4, ks=(2,))
    assert m["recall@2"] == pytest.approx((0.5 + 0.0) / 2)
    ideal0 = 1 + 1 / np.log2(3)
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3) / ideal0 + 0.0) / 2)
    assert m["users"] == 2


def test_embedding_scorer_and_empty_queries() -> None:
    q = build_queries(ENT, CAND, LABEL, SPLIT, ("train",), "test")
    ent = torch.eye(4)[[2, 0, 1]]  # entity 0 points at c2, entity 1 at c0
    m = rank_metrics(embedding_scorer(ent, torch.eye(4), q), q, 4, ks=(1,))
    assert m["recall@1"] == pytest.approx((0.5 + 1.0) / 2)
    none = build_queries(ENT, CAND, LABEL, np.full(7, "train"), ("train",), "test")
    with pytest.raises(DataError, match="no evaluation queries"):
        rank_metrics(popularity_scorer(torch.ones(4)), none, 4)
