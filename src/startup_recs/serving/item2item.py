"""The item-to-item retriever (EASE or item-kNN, :mod:`startup_recs.models.item2item`) in serving.

An entity's scores are its fit-window history (``ServingData.seen``, binarised) times the
candidate x candidate weights. It registers itself as ``item2item`` in the retriever registry, so
routing, ranking features, evaluation and the predictor pick it up wherever its files exist.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from startup_recs.core import artifacts
from startup_recs.core.errors import ModelMismatchError
from startup_recs.models.item2item import Item2ItemModel
from startup_recs.serving.data import ServingData
from startup_recs.serving.retrievers import Retriever, register_retriever


class Item2ItemRetriever(Retriever):
    """``score = history [n, n_items] @ W`` mapped onto ``data.candidate_ids`` (``float32 [n, n_c]``;
    candidates the model never saw score 0); ``knows`` entities with a fit-window history."""

    name = "item2item"

    def __init__(self, data: ServingData, model: Item2ItemModel, item_ids: Sequence[str]) -> None:
        super().__init__(data)
        self.model = model
        # model column of each serving candidate (-1: the model never saw it) and back
        self.col_of = pd_index_positions(item_ids, data.candidate_ids)
        self.model_cols = np.flatnonzero(self.col_of >= 0)  # serving positions covered by the model
        self.n_items = len(item_ids)

    def _history(self, entity_ids: Sequence[str]) -> sp.csr_matrix:
        rows, cols = [], []
        for r, e in enumerate(entity_ids):
            c = self.col_of[self.data.seen_of(e)]
            c = c[c >= 0]
            rows.append(np.full(len(c), r))
            cols.append(c)
        r_all = np.concatenate(rows) if rows else np.empty(0, np.int64)
        c_all = np.concatenate(cols) if cols else np.empty(0, np.int64)
        return sp.csr_matrix((np.ones(len(r_all), np.float32), (r_all, c_all)), shape=(len(entity_ids), self.n_items))

    def knows(self, entity_id: str) -> bool:
        return bool((self.col_of[self.data.seen_of(entity_id)] >= 0).any())

    def score(self, entity_ids: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(entity_ids), self.data.n_candidates), np.float32)
        s = self.model.score(self._history(entity_ids))  # [n, n_items]
        out[:, self.model_cols] = s[:, self.col_of[self.model_cols]]
        return out

    @property
    def info(self) -> dict:
        return {"name": self.name, "method": self.model.config.chosen, "candidates": self.n_items}


def pd_index_positions(model_ids: Sequence[str], candidate_ids: np.ndarray) -> np.ndarray:
    """For each serving candidate, its column in the model (``int64 [n_c]``, -1 where absent)."""
    import pandas as pd

    return pd.Index([str(c) for c in model_ids]).get_indexer(list(candidate_ids)).astype(np.int64)


@register_retriever("item2item")
def load_item2item(models_dir: str, data: ServingData) -> Retriever | None:
    """The item-to-item model of ``data``'s use case, or None when ``models_dir`` has none."""
    name = artifacts.item2item_files(data.use_case).stem
    if not Item2ItemModel.exists(models_dir, name):
        return None
    model, mapping = Item2ItemModel.load(models_dir, name)
    if model.config.use_case != data.use_case:
        raise ModelMismatchError(f"item2item was trained for {model.config.use_case!r}, the data is {data.use_case!r}")
    item_ids = [c for c, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
    return Item2ItemRetriever(data, model, item_ids)
