"""The feature encoder: vocabularies and statistics fitted on the train window, saved as JSON.

What: :class:`FeatureEncoder` (one side: entities or candidates) turns a raw feature frame into
arrays a model eats: ``id`` int64 [n]; a categorical column int64 [n]; a multi-valued column
int64 [n, max_len] (0-padded, at most :data:`MAX_MULTI_LEN` wide); a numeric column float32 [n]
standardised (0 where missing). :class:`PairEncoder` holds both sides of one use case (the
datasets' ``_vocab.json``, the two-tower's ``_encoder.json``); :func:`encode_side`,
:func:`save_encoders`, :func:`load_encoders` and :func:`as_indexed` (a frame indexed by string id).

Index 0 always means unknown (or padding), for values and for ids alike: an id never seen in
training maps to 0 and the model falls back to its feature-only part.

Why fitted on train only: a vocabulary or a mean that saw validation or test rows would leak
them into training. JSON, never pickle: the files are read by serving and by other versions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from startup_recs.core.errors import ModelMismatchError
from startup_recs.features.specs import FeatureSpec, spec_for
from startup_recs.features.values import _exploded, _numeric, _strings

FORMAT = "startup_recs.features/1"
MAX_MULTI_LEN = 32  # cap of a multi-valued column's padded width


@dataclass
class FeatureEncoder:
    """Vocabularies and numeric statistics of one side (entities or candidates).

    ``ids[i]`` has index ``i + 1``; ``vocab[col][i]`` has index ``i + 1``; 0 = unknown / padding.
    ``numeric[col] = {"mean", "std", "log1p"}``; ``max_len[col]`` is a multi column's padded width.
    """

    spec: FeatureSpec
    ids: list[str] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)
    numeric: dict[str, dict[str, float | bool]] = field(default_factory=dict)
    max_len: dict[str, int] = field(default_factory=dict)
    _index: dict[str, pd.Index] = field(default_factory=dict, repr=False, compare=False)

    # --- fit --------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, df: pd.DataFrame | None, spec: FeatureSpec | None = None, *, ids: Iterable[Any] | None = None,
            min_count: int = 1, max_multi_len: int = MAX_MULTI_LEN) -> FeatureEncoder:
        """Fit on the TRAIN window's rows.

        ``df``: raw feature columns indexed by id (or None: id-only). ``ids``: the id vocabulary,
        normally the ids with training interactions; default ``df.index``. Only rows of ``df``
        whose id is in ``ids`` feed the vocabularies and statistics, so a value seen only on an
        entity that never trained stays unknown (its embedding would be untrained anyway).
        """
        spec = spec if spec is not None else spec_for(df, "imported")
        if ids is None:
            ids = [] if df is None else df.index
        id_list = sorted({str(i) for i in ids})
        enc = cls(spec=spec, ids=id_list)
        if df is None or spec.empty:
            return enc
        missing = [c for c in spec.columns if c not in df.columns]
        if missing:
            raise ModelMismatchError(f"feature table lacks column(s) {missing} of spec {spec.kind!r}")
        rows = df[df.index.astype(str).isin(id_list)] if id_list else df.iloc[:0]
        for col in spec.categorical:
            mask, vals = _strings(rows[col])
            counts = pd.Series(vals[mask]).value_counts()
            enc.vocab[col] = _ordered(counts, min_count)
        for col in spec.multi:
            r, toks = _exploded(rows[col])
            counts = pd.Series(toks).value_counts()
            enc.vocab[col] = _ordered(counts, min_count)
            width = int(np.bincount(r).max()) if len(r) else 1
            enc.max_len[col] = max(1, min(width, max_multi_len))
        for col in spec.numeric:
            x = _numeric(rows[col], col in spec.log1p)
            x = x[np.isfinite(x)]
            mean = float(x.mean()) if len(x) else 0.0
            std = float(x.std()) if len(x) > 1 else 1.0
            enc.numeric[col] = {"mean": mean, "std": std if std > 1e-12 else 1.0, "log1p": col in spec.log1p}
        return enc

    # --- transform --------------------------------------------------------------------------------
    def _idx(self, name: str, values: list[str]) -> pd.Index:
        if name not in self._index:
            self._index[name] = pd.Index(values, dtype=object)
        return self._index[name]

    def encode_ids(self, ids: Iterable[Any]) -> np.ndarray:
        """int64 [n]: index of each id (1..n_ids), 0 for an id unseen in training."""
        values = pd.Index(np.asarray(list(ids) if not isinstance(ids, np.ndarray | pd.Index | pd.Series) else ids,
                                     dtype=object)).astype(str)
        return (self._idx("__id__", self.ids).get_indexer(values) + 1).astype(np.int64)

    def transform(self, df: pd.DataFrame | None, ids: Iterable[Any] | None = None) -> dict[str, np.ndarray]:
        """Arrays for rows ``ids`` (default ``df.index``): ``{"id": int64 [n], col: ...}``.

        categorical -> int64 [n]; multi -> int64 [n, max_len] (0-padded, unknown tokens dropped);
        numeric -> float32 [n] standardised, 0 where missing. Ids absent from ``df`` get unknown
        features (all zeros).
        """
        if ids is None:
            if df is None:
                raise ValueError("transform needs ids when there is no feature table")
            ids = df.index
        ids = pd.Index(np.asarray(ids, dtype=object)).astype(str)
        out: dict[str, np.ndarray] = {"id": self.encode_ids(ids)}
        if self.spec.empty:
            return out
        if df is None:
            rows = pd.DataFrame(index=ids, columns=self.spec.columns, dtype=object)
        else:
            missing = [c for c in self.spec.columns if c not in df.columns]
            if missing:
                raise ModelMismatchError(
                    f"feature dimension mismatch: {self.spec.kind} features lack column(s) {missing}")
            src = df if df.index.dtype == object else df.set_axis(df.index.astype(str))
            rows = src.reindex(ids) if not src.index.equals(ids) else src
        n = len(ids)
        for col in self.spec.categorical:
            mask, vals = _strings(rows[col])
            code = self._idx(col, self.vocab[col]).get_indexer(vals) + 1
            out[col] = np.where(mask, code, 0).astype(np.int64)
        for col in self.spec.multi:
            width = self.max_len[col]
            arr = np.zeros((n, width), np.int64)
            r, toks = _exploded(rows[col])
            code = self._idx(col, self.vocab[col]).get_indexer(toks) + 1
            keep = code > 0
            r, code = r[keep], code[keep]
            if len(r):
                pos = pd.Series(r).groupby(r).cumcount().to_numpy()
                ok = pos < width
                arr[r[ok], pos[ok]] = code[ok]
            out[col] = arr
        for col in self.spec.numeric:
            st = self.numeric[col]
            x = _numeric(rows[col], bool(st["log1p"]))
            z = (x - st["mean"]) / st["std"]
            out[col] = np.where(np.isfinite(z), z, 0.0).astype(np.float32)
        return out

    # --- sizes --------------------------------------------------------------------------------------
    @property
    def n_ids(self) -> int:
        """Rows of an id embedding table (including index 0 = unknown)."""
        return len(self.ids) + 1

    def sizes(self) -> dict[str, int]:
        """Embedding rows per categorical/multi column (including index 0)."""
        return {c: len(v) + 1 for c, v in self.vocab.items()}

    # --- JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "spec": self.spec.to_dict(), "ids": self.ids, "vocab": self.vocab,
                "numeric": self.numeric, "max_len": self.max_len}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureEncoder:
        if "entity" in d and "candidate" in d and "spec" not in d:
            raise ModelMismatchError("this JSON holds a PairEncoder (both sides): use PairEncoder.from_json")
        if d.get("format") != FORMAT:
            raise ModelMismatchError(f"not a feature encoder of format {FORMAT!r} (got {d.get('format')!r})")
        return cls(spec=FeatureSpec.from_dict(d["spec"]), ids=list(d["ids"]),
                   vocab={k: list(v) for k, v in d["vocab"].items()},
                   numeric={k: dict(v) for k, v in d["numeric"].items()},
                   max_len={k: int(v) for k, v in d["max_len"].items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | dict[str, Any]) -> FeatureEncoder:
        return cls.from_dict(json.loads(text) if isinstance(text, str | bytes) else dict(text))


def _ordered(counts: pd.Series, min_count: int) -> list[str]:
    """Vocabulary by descending count, ties by value (deterministic)."""
    kept = counts[counts >= min_count]
    frame = pd.DataFrame({"v": kept.index.astype(str), "c": kept.to_numpy()})
    return frame.sort_values(["c", "v"], ascending=[False, True], kind="stable")["v"].tolist()


def as_indexed(df: pd.DataFrame | None, side: str) -> pd.DataFrame | None:
    """A feature frame indexed by string id: accepts a ``<side>_id`` column (the sidecar layout) or
    an id index (the snapshot views)."""
    if df is None:
        return None
    col = f"{side}_id"
    if col in df.columns:
        df = df.set_index(col)
    if df.index.dtype != object or not all(isinstance(i, str) for i in df.index[:1]):
        df = df.set_axis(df.index.astype(str))
    df = df.rename_axis(col)  # a new frame: the caller's keeps its index name
    return df[~df.index.duplicated(keep="last")] if df.index.has_duplicates else df


@dataclass
class PairEncoder:
    """The two sides' encoders of one use case (the datasets' ``_vocab.json``, the two-tower's
    ``_encoder.json``): ``{"format", "entity": {...}, "candidate": {...}}``."""

    entity: FeatureEncoder
    candidate: FeatureEncoder

    def side(self, side: str) -> FeatureEncoder:
        if side not in ("entity", "candidate"):
            raise ValueError(f"side must be 'entity' or 'candidate', not {side!r}")
        return self.entity if side == "entity" else self.candidate

    @classmethod
    def fit(cls, entity_df: pd.DataFrame | None, candidate_df: pd.DataFrame | None,
            entity_ids: Iterable[Any] | None = None, candidate_ids: Iterable[Any] | None = None, *,
            entity_spec: FeatureSpec | None = None, candidate_spec: FeatureSpec | None = None,
            entity_kind: str = "imported", candidate_kind: str = "imported", min_count: int = 1) -> PairEncoder:
        """Fit both sides on the fit window. Frames: id index or ``<side>_id`` column + raw features.

        ``*_ids``: the ids with fit-window interactions (the id vocabularies and the rows whose
        values enter the feature vocabularies). ``*_kind`` (``startup``/``developer``/``investor``)
        picks the app database spec when the frame has its columns; otherwise it is inferred.
        """
        e = as_indexed(entity_df, "entity")
        c = as_indexed(candidate_df, "candidate")
        e_spec = entity_spec if entity_spec is not None else spec_for(e, entity_kind)
        c_spec = candidate_spec if candidate_spec is not None else spec_for(c, candidate_kind)
        return cls(FeatureEncoder.fit(e, e_spec, ids=entity_ids, min_count=min_count),
                   FeatureEncoder.fit(c, c_spec, ids=candidate_ids, min_count=min_count))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "entity": self.entity.to_dict(), "candidate": self.candidate.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PairEncoder:
        if not isinstance(d, dict) or "entity" not in d or "candidate" not in d:
            raise ModelMismatchError("not a pair encoder: expected JSON with 'entity' and 'candidate'")
        return cls(FeatureEncoder.from_dict(d["entity"]), FeatureEncoder.from_dict(d["candidate"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | dict[str, Any]) -> PairEncoder:
        return cls.from_dict(json.loads(text) if isinstance(text, str | bytes) else dict(text))


def encode_side(encoder: PairEncoder, side: str, df: pd.DataFrame | None,
                ids: Iterable[Any] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Encode one side: ``(id indices int64 [n], {feature: array})`` for the rows of ``df``
    (id index or ``<side>_id`` column), or for ``ids`` looked up in ``df`` (missing -> unknown)."""
    frame = as_indexed(df, side)
    out = encoder.side(side).transform(frame, ids=ids)
    return out.pop("id"), out


def save_encoders(uri: str, encoder: PairEncoder) -> None:
    """Write a :class:`PairEncoder` as JSON (``_vocab.json``) atomically."""
    from startup_recs.core import storage

    storage.write_bytes(uri, (encoder.to_json() + "\n").encode())


def load_encoders(uri: str) -> PairEncoder:
    """Read a ``_vocab.json`` / ``_encoder.json`` written by :func:`save_encoders`."""
    from startup_recs.core import storage

    return PairEncoder.from_dict(storage.read_json(uri))
