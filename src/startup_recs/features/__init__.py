"""The one feature code of the platform: feature specs, the encoder, and entity-candidate matches.

Shared by the dataset builders, the two-tower towers, the content-based cold start, the ranker and
serving's ``match_reasons``, so training and serving can never disagree on a vocabulary or a
feature definition.

- :class:`FeatureSpec` names a kind's columns by type: *categorical* (one string), *multi*
  (a list of strings), *numeric* (a float, optionally log1p'd, always standardised).
  :data:`SPECS` holds the app database's kinds; :func:`infer_spec` reads an imported table.
- :class:`FeatureEncoder` is fitted on the TRAIN window only and turns a feature frame into
  int64 / float32 arrays a model eats. Index 0 always means unknown (or padding); the id
  vocabulary follows the same rule, so an id never seen in training maps to 0 and the model
  falls back to its feature-only part. It saves as JSON, never pickle.
- :func:`match_features` scores how an entity and its candidates fit each other (skills overlap,
  sector/stage/location match, check size vs funding) as a dense float32 matrix, vectorised over
  hundreds of candidates per request; :func:`match_reasons` turns the same computation into short
  strings like ``"skills: python, ml"``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from startup_recs.core.errors import ModelMismatchError
from startup_recs.core.usecases import UseCase, get_use_case

FORMAT = "startup_recs.features/1"
MAX_MULTI_LEN = 32  # cap of a multi-valued column's padded width
LOG1P_FROM = 1000.0  # an inferred non-negative numeric column reaching this is log1p'd


# --- specs -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSpec:
    """Which columns of a feature table are categorical, multi-valued or numeric.

    ``log1p`` lists the numeric columns transformed by ``log1p`` before standardising
    (money amounts span orders of magnitude).
    """

    kind: str
    categorical: tuple[str, ...] = ()
    multi: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    log1p: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [*self.categorical, *self.multi, *self.numeric]

    @property
    def empty(self) -> bool:
        return not self.columns

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "categorical": list(self.categorical), "multi": list(self.multi),
                "numeric": list(self.numeric), "log1p": list(self.log1p)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(kind=d["kind"], categorical=tuple(d.get("categorical", ())), multi=tuple(d.get("multi", ())),
                   numeric=tuple(d.get("numeric", ())), log1p=tuple(d.get("log1p", ())))


SPECS: dict[str, FeatureSpec] = {
    "startup": FeatureSpec("startup", categorical=("sector", "stage", "location"), multi=("skills_needed",),
                           numeric=("funding_usd",), log1p=("funding_usd",)),
    "developer": FeatureSpec("developer", categorical=("location",), multi=("skills",),
                             numeric=("experience_years",)),
    "investor": FeatureSpec("investor", categorical=("location",), multi=("sectors", "stages"),
                            numeric=("check_size_usd",), log1p=("check_size_usd",)),
}
NO_FEATURES = FeatureSpec("none")


def _is_listlike(v: Any) -> bool:
    return isinstance(v, list | tuple | np.ndarray)


def infer_spec(df: pd.DataFrame | None, kind: str = "imported") -> FeatureSpec:
    """Spec of an imported feature table: lists -> multi, numbers -> numeric, strings -> categorical.

    Strings holding ``|`` (a list written to CSV) are multi-valued. Non-negative numbers reaching
    :data:`LOG1P_FROM` (amounts, counts: heavy right tails) are log1p'd. Timestamps and all-null columns are skipped.
    """
    if df is None:
        return NO_FEATURES
    cat, multi, num, log = [], [], [], []
    for col in df.columns:
        s = df[col]
        nonnull = s.dropna()
        if not len(nonnull):
            continue
        if pd.api.types.is_bool_dtype(s):
            cat.append(col)
        elif pd.api.types.is_numeric_dtype(s):
            num.append(col)
            lo, hi = float(nonnull.min()), float(nonnull.max())
            if lo >= 0 and hi >= LOG1P_FROM:
                log.append(col)
        elif pd.api.types.is_datetime64_any_dtype(s):
            continue
        elif _is_listlike(nonnull.iloc[0]) or nonnull.astype(str).str.contains("|", regex=False).any():
            multi.append(col)
        else:
            cat.append(col)
    return FeatureSpec(kind, tuple(cat), tuple(multi), tuple(num), tuple(log))


def spec_for(df: pd.DataFrame | None, kind: str) -> FeatureSpec:
    """The app database spec of ``kind`` when ``df`` has its columns, else one inferred from ``df``
    (kind ``"imported"``)."""
    if df is None:
        return NO_FEATURES
    known = SPECS.get(kind)
    if known is not None and set(known.columns) <= set(df.columns):
        return known
    return infer_spec(df, "imported")


# --- value helpers -----------------------------------------------------------------------------------
# They take a pandas Series or a NumPy array and work on plain object arrays: the same code serves
# one request (200 candidates, where pandas' per-call overhead would dominate) and millions of rows.
def _values(s: pd.Series | np.ndarray) -> np.ndarray:
    return s.to_numpy(dtype=object) if isinstance(s, pd.Series | pd.Index) else np.asarray(s, dtype=object)


def _tokens(v: Any) -> list[Any]:
    """One multi-valued cell's distinct items: lists/arrays as they are, ``"a|b"`` (a list written
    to CSV) split, a lone scalar as a 1-list, null/empty as []. Nulls inside a list and non-str
    items are dealt with by :func:`_exploded`, vectorised."""
    if v is None:
        return []
    if isinstance(v, str):
        return list(dict.fromkeys(v.split("|"))) if v else []
    if isinstance(v, np.ndarray):
        return list(dict.fromkeys(v.tolist()))
    if isinstance(v, list | tuple):
        return list(dict.fromkeys(v))
    if isinstance(v, float) and v != v:
        return []
    return [v]


def _exploded(s: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row position int64, token str object array) of every distinct non-null token per row."""
    lists = [_tokens(v) for v in _values(s)]
    lens = np.fromiter(map(len, lists), np.int64, len(lists))
    rows = np.repeat(np.arange(len(lists), dtype=np.int64), lens)
    toks = np.fromiter(itertools.chain.from_iterable(lists), dtype=object, count=int(lens.sum()))
    keep = ~pd.isna(toks)
    if not keep.all():
        rows, toks = rows[keep], toks[keep]
    if len(toks) and pd.api.types.infer_dtype(toks, skipna=False) != "string":
        toks = np.array([str(t) for t in toks], dtype=object)
    return rows, toks


def _strings(s: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(not-null mask, values as str with "" for null) of a categorical column."""
    vals = _values(s)
    mask = ~pd.isna(vals)
    out = np.where(mask, vals, "")
    if len(out) and pd.api.types.infer_dtype(out, skipna=False) != "string":
        out = np.array([str(v) for v in out], dtype=object)
    return mask, out


# --- encoder ----------------------------------------------------------------------------------------
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


def _numeric(s: pd.Series | np.ndarray, log1p: bool) -> np.ndarray:
    if isinstance(s, np.ndarray) and s.dtype.kind in "fiu":
        x = s.astype(np.float64)
    else:
        x = pd.to_numeric(pd.Series(_values(s)), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.log1p(np.clip(x, 0.0, None)) if log1p else x


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


# --- match features ---------------------------------------------------------------------------------
Column = np.ndarray  # one side's column: length 1 (broadcast) or n


@dataclass(frozen=True)
class _Term:
    """One match computation between a startup-side column and a user-side column.

    ``compute(S, U, n)`` (columns of length 1 or n) -> list of float arrays [n], named ``names``;
    ``reason(s, u, values)`` -> a short string or None for one pair, from that pair's values.
    """

    names: tuple[str, ...]
    needs_s: str
    needs_u: str
    compute: Callable[[Column, Column, int], list[np.ndarray]]
    reason: Callable[[Any, Any, np.ndarray], str | None]


def _bcast(x: np.ndarray, n: int) -> np.ndarray:
    return np.broadcast_to(x, (n,)) if len(x) == 1 and n != 1 else x


def _member(tokens: np.ndarray, pool: Iterable[Any]) -> np.ndarray:
    """bool [len(tokens)]: token in ``pool`` (a Python set: cheapest for one request's sizes)."""
    pool = set(pool)
    return np.fromiter((t in pool for t in tokens), bool, len(tokens))


def _overlap(a: Column, b: Column, n: int) -> list[np.ndarray]:
    """|A∩B|, Jaccard, |A∩B|/|A| per row (A = startup side, e.g. skills needed)."""
    ra, ta = _exploded(a)
    rb, tb = _exploded(b)
    na = _bcast(np.bincount(ra, minlength=len(a)).astype(np.float64), n)
    nb = _bcast(np.bincount(rb, minlength=len(b)).astype(np.float64), n)
    if len(a) == 1 and n != 1:  # one startup against many users
        ov = np.bincount(rb[_member(tb, ta)], minlength=n).astype(np.float64)
    elif len(b) == 1 and n != 1:  # one user against many startups
        ov = np.bincount(ra[_member(ta, tb)], minlength=n).astype(np.float64)
    else:  # row-aligned pairs: (row, token) keys present on both sides
        codes, uniq = pd.factorize(np.concatenate([ta, tb]))
        t = max(len(uniq), 1)
        ka = np.sort(ra * t + codes[:len(ta)])
        kb = rb * t + codes[len(ta):]
        pos = np.minimum(np.searchsorted(ka, kb), max(len(ka) - 1, 0))
        hit = ka[pos] == kb if len(ka) else np.zeros(len(kb), bool)
        ov = np.bincount(rb[hit], minlength=n).astype(np.float64)
    union = na + nb - ov
    jac = np.divide(ov, union, out=np.zeros(n), where=union > 0)
    cov = np.divide(ov, na, out=np.zeros(n), where=na > 0)
    return [ov, jac, cov]


def _in_set(a: Column, b: Column, n: int) -> list[np.ndarray]:
    """1 where the startup's categorical value is in the user's list (e.g. sector in sectors)."""
    mask, vals = _strings(a)
    mask, vals = _bcast(mask, n), _bcast(vals, n)
    rb, tb = _exploded(b)
    if len(b) == n:
        hit = tb == vals[rb] if len(tb) else np.zeros(0, bool)
        out = np.bincount(rb[hit], minlength=n) > 0
    else:  # one user row against many startups
        out = _member(vals, tb)
    return [(out & mask).astype(np.float64)]


def _same(a: Column, b: Column, n: int) -> list[np.ndarray]:
    ma, va = _strings(a)
    mb, vb = _strings(b)
    ma, va, mb, vb = (_bcast(x, n) for x in (ma, va, mb, vb))
    return [(ma & mb & (va == vb)).astype(np.float64)]


def _check_fit(a: Column, b: Column, n: int) -> list[np.ndarray]:
    """Investor check size vs startup funding: log ratio and a fit flag (check 1%-50% of the raise)."""
    f = _bcast(_numeric(a, False), n)
    c = _bcast(_numeric(b, False), n)
    ok = (f > 0) & (c > 0)
    ratio = np.divide(c, f, out=np.zeros(n), where=ok)
    logr = np.log(np.where(ok, ratio, 1.0))
    fit = ok & (ratio >= CHECK_FIT[0]) & (ratio <= CHECK_FIT[1])
    return [np.where(ok, logr, 0.0), fit.astype(np.float64)]


CHECK_FIT = (0.01, 0.5)  # a check between 1% and 50% of the startup's funding "fits"


def _fmt_usd(x: float) -> str:
    return f"${x / 1e6:.1f}M" if x >= 1e6 else f"${x / 1e3:.0f}k"


def _reason_overlap(label: str) -> Callable[[Any, Any, np.ndarray], str | None]:
    def reason(s: Any, u: Any, v: np.ndarray) -> str | None:
        if v[0] <= 0:
            return None
        common = sorted({str(t) for t in _tokens(s)} & {str(t) for t in _tokens(u)})
        shown = ", ".join(common[:3]) + (", ..." if len(common) > 3 else "")
        return f"{label}: {shown}"
    return reason


def _reason_in_set(label: str) -> Callable[[Any, Any, np.ndarray], str | None]:
    return lambda s, u, v: f"{label}: {s}" if v[0] > 0 else None


def _reason_same(label: str) -> Callable[[Any, Any, np.ndarray], str | None]:
    return lambda s, u, v: f"same {label}: {s}" if v[0] > 0 else None


def _reason_check(s: Any, u: Any, v: np.ndarray) -> str | None:
    return f"check size {_fmt_usd(float(u))} fits funding {_fmt_usd(float(s))}" if v[1] > 0 else None


# Terms per user role, (startup column, user column). Order fixes the feature matrix's columns.
TERMS: dict[str, list[_Term]] = {
    "developer": [
        _Term(("skills_overlap", "skills_jaccard", "skills_coverage"), "skills_needed", "skills",
              _overlap, _reason_overlap("skills")),
        _Term(("same_location",), "location", "location", _same, _reason_same("location")),
    ],
    "investor": [
        _Term(("sector_match",), "sector", "sectors", _in_set, _reason_in_set("sector")),
        _Term(("stage_match",), "stage", "stages", _in_set, _reason_in_set("stage")),
        _Term(("same_location",), "location", "location", _same, _reason_same("location")),
        _Term(("check_log_ratio", "check_fit"), "funding_usd", "check_size_usd", _check_fit, _reason_check),
    ],
}


def _column_kind(col: Column) -> str | None:
    """"num" | "multi" | "cat" of a raw column from its values (None: all null)."""
    if col.dtype.kind in "fiub":
        return "num"
    first = next((v for v in col if v is not None and not (isinstance(v, float) and v != v)), None)
    if first is None:
        return None
    if _is_listlike(first) or any(isinstance(v, str) and "|" in v for v in col):
        return "multi"
    if isinstance(first, int | float | np.number):
        return "num"
    return "cat"


def _generic_terms(s: dict[str, Column], u: dict[str, Column]) -> list[_Term]:
    """Imported tables: compare same-named columns (categorical equality, list overlap)."""
    terms = []
    for col in [c for c in s if c in u]:
        ks, ku = _column_kind(s[col]), _column_kind(u[col])
        if ks is None or ku is None or "num" in (ks, ku):
            continue
        if "multi" in (ks, ku):
            terms.append(_Term((f"{col}_overlap", f"{col}_jaccard", f"{col}_coverage"), col, col,
                               _overlap, _reason_overlap(col)))
        else:
            terms.append(_Term((f"same_{col}",), col, col, _same, _reason_same(col)))
    return terms


def _columns(x: pd.Series | pd.DataFrame) -> dict[str, Column]:
    """Raw feature columns as arrays: a Series (one row) gives length-1 object arrays."""
    if isinstance(x, pd.Series):
        out = {}
        for k, v in x.items():
            arr = np.empty(1, dtype=object)
            arr[0] = v
            out[str(k)] = arr
        return out
    return {str(c): x[c].to_numpy() for c in x.columns}


def _sides(uc: UseCase, entity: Any, candidates: pd.DataFrame | pd.Series | None
           ) -> tuple[dict[str, Column] | None, dict[str, Column] | None, int]:
    """(startup side, user side, n) whatever the direction of the use case."""
    n = 0 if candidates is None else (1 if isinstance(candidates, pd.Series) else len(candidates))
    if entity is None or candidates is None:
        return None, None, n
    m = 1 if isinstance(entity, pd.Series) else len(entity)
    if m not in (1, n):
        raise ValueError(f"entity frame has {m} rows; expected 1 or one per candidate ({n})")
    ent, cand = _columns(entity), _columns(candidates)
    return (ent, cand, n) if uc.entity_is_startup else (cand, ent, n)


def _terms_for(uc: UseCase, s: dict[str, Column], u: dict[str, Column]) -> list[_Term]:
    known = TERMS.get(uc.user_role, [])
    present = [t for t in known if t.needs_s in s and t.needs_u in u]
    return present or _generic_terms(s, u)


def match_features(use_case: str | UseCase, entity: pd.Series | pd.DataFrame | None,
                   candidates: pd.DataFrame | None) -> tuple[np.ndarray, list[str]]:
    """How well each candidate fits the entity: float32 [n_candidates, k] and the k feature names.

    ``entity`` is one raw feature row (a Series) or a frame row-aligned with ``candidates``
    (one entity per candidate, for scoring many pairs at once). Raw columns as the snapshot's
    feature views give them. Developer use cases: skills overlap / Jaccard / coverage of the
    startup's needs, same location. Investor: sector in the investor's sectors, stage in stages,
    same location, log(check / funding) and a fit flag. Imported tables: same-named columns.
    Without features (id-only) the matrix is ``[n, 0]``. About 1 ms for 200 candidates.
    """
    uc = use_case if isinstance(use_case, UseCase) else get_use_case(use_case)
    s, u, n = _sides(uc, entity, candidates)
    if s is None or u is None or n == 0:
        return np.zeros((n, 0), np.float32), []
    out = np.zeros((n, 0), np.float32)
    cols, names = [], []
    for term in _terms_for(uc, s, u):
        for name, arr in zip(term.names, term.compute(s[term.needs_s], u[term.needs_u], n), strict=True):
            cols.append(arr)
            names.append(name)
    if cols:
        out = np.stack(cols, axis=1).astype(np.float32)
    return out, names


def match_reasons(use_case: str | UseCase, entity_row: pd.Series | None,
                  candidate_row: pd.Series | None) -> list[str]:
    """Short human reasons for one pair, from the same terms as :func:`match_features`.

    E.g. ``["skills: ml, python", "same location: Berlin"]``; empty without features.
    """
    uc = use_case if isinstance(use_case, UseCase) else get_use_case(use_case)
    s, u, _ = _sides(uc, entity_row, candidate_row)
    if s is None or u is None:
        return []
    out = []
    for term in _terms_for(uc, s, u):
        a, b = s[term.needs_s], u[term.needs_u]
        values = np.array([float(np.asarray(v)[0]) for v in term.compute(a, b, 1)])
        text = term.reason(a[0], b[0], values)
        if text:
            out.append(text)
    return out


def match_reasons_batch(use_case: str | UseCase, entity_row: pd.Series | None,
                        candidates: pd.DataFrame | None) -> list[list[str]]:
    """:func:`match_reasons` for one entity and many candidates at once (one vectorised pass):
    a list of reason lists, one per candidate row, in order."""
    uc = use_case if isinstance(use_case, UseCase) else get_use_case(use_case)
    s, u, n = _sides(uc, entity_row, candidates)
    if s is None or u is None:
        return [[] for _ in range(n)]
    out: list[list[str]] = [[] for _ in range(n)]
    for term in _terms_for(uc, s, u):
        a, b = s[term.needs_s], u[term.needs_u]
        values = np.stack([np.asarray(v, np.float64) for v in term.compute(a, b, n)], axis=1)
        for i in np.flatnonzero(values.any(axis=1)):
            text = term.reason(a[i if len(a) > 1 else 0], b[i if len(b) > 1 else 0], values[i])
            if text:
                out[i].append(text)
    return out
