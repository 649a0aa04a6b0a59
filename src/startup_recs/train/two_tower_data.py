"""Two-tower dataset -> tensors the trainer indexes directly (no per-sample Python).

Reads the pairs file written by ``recs dataset two-tower`` (rows ``entity_id, candidate_id,
label, weight, neg_type, ts, split``) and its sidecars ``X_entities.parquet`` /
``X_candidates.parquet`` (id + raw features of every known id), ``X_vocab.json`` and
``X_meta.json``. Every entity and candidate row is encoded once into :class:`SideTensors`; a
training batch is then a gather of row indices. Hard negatives are kept per entity as a CSR
index (``offsets`` [n_entities + 1], ``rows`` [n_hard]) so a batch samples them vectorised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import DataError
from startup_recs.core.usecases import get_use_case
from startup_recs.models.two_tower import (
    SideTensors,
    TowerSpec,
    encode_side,
    fit_encoder,
    side_tensors,
    tower_spec,
)

log = logging.getLogger(__name__)

# fit window -> dataset splits: stage 1, the evaluated final refit, the published refit (every event)
FIT_SPLITS = {"train": ("train",), "trainval": ("train", "val"), "all": ("train", "val", "test")}
PAIR_COLUMNS = ("entity_id", "candidate_id", "label", "split")


@dataclass
class TwoTowerData:
    """Everything the trainer and the evaluator need, encoded for one fit window."""

    use_case: str
    fit_on: str  # "train" | "trainval"
    meta: dict[str, Any]
    encoder: Any
    entity_ids: np.ndarray  # [n_e] str, sidecar order
    candidate_ids: np.ndarray  # [n_c] str
    entity_spec: TowerSpec
    candidate_spec: TowerSpec
    entities: SideTensors  # [n_e] rows
    candidates: SideTensors  # [n_c] rows
    pairs: pd.DataFrame  # entity_row, candidate_row (int64), label, weight, neg_type, split

    def positives(self, splits: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(entity_rows [n], candidate_rows [n], weights [n] float32) of positives in ``splits``."""
        p = self.pairs
        m = (p["label"].to_numpy() > 0) & p["split"].isin(splits).to_numpy()
        return (torch.from_numpy(p["entity_row"].to_numpy()[m]), torch.from_numpy(p["candidate_row"].to_numpy()[m]),
                torch.from_numpy(p["weight"].to_numpy(np.float32)[m]))

    def hard_negatives(self, splits: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """CSR of hard-negative candidate rows per entity row: (offsets [n_e + 1], rows [n])."""
        p = self.pairs
        m = (p["neg_type"].to_numpy() == "hard") & p["split"].isin(splits).to_numpy() & (p["label"].to_numpy() <= 0)
        ent = p["entity_row"].to_numpy()[m]
        cand = p["candidate_row"].to_numpy()[m]
        order = np.argsort(ent, kind="stable")
        counts = np.bincount(ent, minlength=len(self.entity_ids))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return torch.from_numpy(offsets), torch.from_numpy(cand[order].astype(np.int64))

    def log_q(self, splits: tuple[str, ...]) -> torch.Tensor:
        """[n_c] float32: log of each candidate's frequency among the positives of ``splits``
        (the probability that a random in-batch candidate is this one)."""
        _, cand, _ = self.positives(splits)
        counts = np.bincount(cand.numpy(), minlength=len(self.candidate_ids)).astype(np.float64)
        q = np.maximum(counts, 1.0) / max(counts.sum(), 1.0)
        return torch.from_numpy(np.log(q).astype(np.float32))


def _read_side(uri: str, id_col: str, pair_ids: np.ndarray) -> pd.DataFrame:
    """A sidecar table (id column first) covering every id of the pairs; id-only when absent."""
    if storage.exists(uri):
        df = storage.read_table(uri).to_pandas()
        if id_col not in df.columns:
            if not len(df.columns):
                raise DataError(f"{uri} has no columns")
            df = df.rename(columns={df.columns[0]: id_col})
        df[id_col] = df[id_col].astype(str)
        if df[id_col].duplicated().any():
            raise DataError(f"{uri} repeats ids in {id_col!r}")
    else:
        log.info("%s not found: id-only %s", uri, id_col)
        df = pd.DataFrame({id_col: pd.Series([], dtype=str)})
    missing = pd.Index(pd.unique(pair_ids)).difference(pd.Index(df[id_col]))
    if len(missing):  # ids of pairs must be encodable: add them as rows without features
        df = pd.concat([df, pd.DataFrame({id_col: missing.astype(str)})], ignore_index=True)
    return df.reset_index(drop=True)


def _dataset_specs(data_uri: str) -> dict[str, Any] | None:
    """The feature specs the dataset builder chose (from ``X_vocab.json``), if it wrote them."""
    uri = artifacts.sidecar(data_uri, artifacts.VOCAB_SIDECAR)
    if not storage.exists(uri):
        return None
    from startup_recs.features import FeatureSpec

    obj = storage.read_json(uri)
    try:
        return {side: FeatureSpec.from_dict(obj[side]["spec"]) for side in ("entity", "candidate")}
    except (KeyError, TypeError):
        return None


def read_pairs(data_uri: str) -> pd.DataFrame:
    if not storage.exists(data_uri):
        raise DataError(f"two-tower dataset not found: {data_uri}")
    table = storage.read_table(data_uri)
    miss = [c for c in PAIR_COLUMNS if c not in table.column_names]
    if miss:
        raise DataError(f"{data_uri} is not a two-tower dataset: missing column(s) {', '.join(miss)}")
    if not table.num_rows:
        raise DataError(f"{data_uri} has no rows")
    if "neg_type" in table.column_names:  # random negatives are unused (in-batch negatives replace them)
        keep = pc.or_(pc.greater(table["label"], 0), pc.equal(table["neg_type"].cast(pa.string()), "hard"))
        table = table.filter(keep)
    pairs = table.to_pandas()
    pairs["entity_id"] = pairs["entity_id"].astype(str)
    pairs["candidate_id"] = pairs["candidate_id"].astype(str)
    pairs["split"] = pairs["split"].astype(str)
    bad = set(pairs["split"].unique()) - {"train", "val", "test"}
    if bad:
        raise DataError(f"{data_uri}: unknown split value(s) {sorted(bad)}; expected train|val|test")
    pairs["label"] = pairs["label"].astype(np.int8)
    pairs["weight"] = pairs["weight"].astype(np.float32) if "weight" in pairs else np.float32(1.0)
    if not np.isfinite(pairs["weight"].to_numpy()).all() or (pairs["weight"].to_numpy() < 0).any():
        raise DataError(f"{data_uri}: weight must be finite and non-negative")
    if "neg_type" not in pairs:
        pairs["neg_type"] = np.where(pairs["label"] > 0, "pos", "random")
    pairs["neg_type"] = pairs["neg_type"].astype(str)
    return pairs


def load_dataset(data_uri: str, fit_on: str = "train", encoder: Any = None,
                 use_case: str | None = None) -> TwoTowerData:
    """Read the dataset and encode both sides.

    ``encoder``: a fitted feature encoder (evaluation of a saved model, or resume); by default
    one is fitted on the rows of the fit window (``train`` or ``train`` + ``val``) so nothing
    from later windows reaches the vocabularies. Raises :class:`DataError` for bad data.
    """
    pairs = read_pairs(data_uri)
    meta_uri = artifacts.sidecar(data_uri, artifacts.META_SIDECAR)
    meta = storage.read_json(meta_uri) if storage.exists(meta_uri) else {}
    uc = meta.get("use_case") or use_case
    if not uc:
        raise DataError(f"{data_uri}: no use case in {meta_uri}; pass --use-case")
    splits = FIT_SPLITS[fit_on]
    fit = pairs[pairs["split"].isin(splits)]
    if not (fit["label"] > 0).any():
        raise DataError(f"{data_uri}: no positive pairs in the fit window ({'+'.join(splits)})")
    ent_df = _read_side(artifacts.sidecar(data_uri, artifacts.ENTITIES_SIDECAR), "entity_id",
                        pairs["entity_id"].to_numpy())
    cand_df = _read_side(artifacts.sidecar(data_uri, artifacts.CANDIDATES_SIDECAR), "candidate_id",
                         pairs["candidate_id"].to_numpy())
    if encoder is None:
        ucase = get_use_case(uc)
        fit_pos = fit[fit["label"] > 0]
        encoder = fit_encoder(ent_df.set_index("entity_id"), cand_df.set_index("candidate_id"),
                              fit_pos["entity_id"].unique(), fit_pos["candidate_id"].unique(),
                              specs=_dataset_specs(data_uri), kinds=(ucase.entity_kind, ucase.candidate_kind))
    e_spec, c_spec = tower_spec(encoder, "entity"), tower_spec(encoder, "candidate")
    e_ids, e_feats = encode_side(encoder, "entity", ent_df)
    c_ids, c_feats = encode_side(encoder, "candidate", cand_df)
    ent_index = pd.Index(ent_df["entity_id"])
    cand_index = pd.Index(cand_df["candidate_id"])
    pairs["entity_row"] = ent_index.get_indexer(pairs["entity_id"]).astype(np.int64)
    pairs["candidate_row"] = cand_index.get_indexer(pairs["candidate_id"]).astype(np.int64)
    return TwoTowerData(
        use_case=uc, fit_on=fit_on, meta=meta, encoder=encoder,
        entity_ids=ent_df["entity_id"].to_numpy(dtype=str), candidate_ids=cand_df["candidate_id"].to_numpy(dtype=str),
        entity_spec=e_spec, candidate_spec=c_spec,
        entities=side_tensors(e_spec, e_ids, e_feats), candidates=side_tensors(c_spec, c_ids, c_feats),
        pairs=pairs,
    )
