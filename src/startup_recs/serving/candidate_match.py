"""The candidate side of the match features, encoded once per bundle: per-request match features
and reasons without pandas.

What: :class:`MatchTable` holds, for one :class:`~startup_recs.serving.data.ServingData`, every
candidate's match columns in an encoded form (multi-valued columns as CSR token codes, categorical
columns as integer codes, numbers as ``float64``) and the entity table's raw columns as plain
object arrays. :meth:`MatchTable.features` equals
``startup_recs.features.match.match_features(uc, entity_row, candidate_features.iloc[cand_idx])``
and :meth:`MatchTable.reasons` equals ``match_reasons_batch(...)`` on the same rows, value for
value (tests/unit/test_candidate_match.py), but per request only the entity's one row is
tokenised; the candidates' side is array gathers.

Why: at 100k candidates the re-rank of 200 candidates spent 1.3 ms of 1.4 ms in the match features,
nearly all of it re-tokenising the same 200 candidate rows (Python per row) and pandas ``iloc``.

Exactness: only the known terms of ``TERMS`` (the app database's columns) are encoded. Anything
else (imported tables' generic terms, which read the column *values* to pick a term, or tokens
that collide once converted to ``str``) goes through the original term functions on plain
arrays, so the answer is the same either way.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from startup_recs.core.usecases import get_use_case
from startup_recs.features.match import (
    TERMS,
    _check_fit,
    _in_set,
    _overlap,
    _same,
    _Term,
    _terms_for,
)
from startup_recs.features.values import _exploded, _numeric, _strings, _values
from startup_recs.serving.data import ServingData

MAX_PADDED = 64  # widest list column kept as a padded code matrix (wider: original functions)


def exploded(col: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``features.values._exploded`` (row int64 [t], token object [t]) of a whole column, with a
    vectorised path for the layout Parquet gives: every cell a list or array of ``str`` without
    repeats (one ``np.concatenate`` instead of a Python call per row: ~5x faster at 1M rows).
    Anything else (``"a|b"`` strings, nulls, numbers, a repeated token) takes the original."""
    vals = _values(col)
    cells = vals.tolist()
    if len(cells) and all(type(v) is np.ndarray or type(v) is list for v in cells):
        lens = np.fromiter(map(len, cells), np.int64, len(cells))
        if lens.sum():
            toks = np.concatenate([np.asarray(v, dtype=object) for v in cells]) if any(
                type(v) is list for v in cells) else np.concatenate(cells).astype(object)
            if pd.api.types.infer_dtype(toks, skipna=False) == "string":
                rows = np.repeat(np.arange(len(cells), dtype=np.int64), lens)
                codes, uniq = pd.factorize(toks)
                keys = rows * max(len(uniq), 1) + codes
                if pd.Index(keys).is_unique:  # hashed: np.unique's sort was the slowest step
                    return rows, toks
    return _exploded(col)


@dataclass(frozen=True)
class _Tokens:
    """A multi-valued column of all candidates as a padded code matrix: ``padded`` int32
    ``[n_c, width]`` (-1 pads; duplicates kept, as the original counts them), ``count`` float64
    [n_c] = tokens per row, ``vocab``: token (str) -> code. ``usable`` is False when a row is wider
    than :data:`MAX_PADDED` or holds one token twice once made str (then: original functions)."""

    padded: np.ndarray
    count: np.ndarray
    vocab: dict[str, int]
    usable: bool

    @classmethod
    def build(cls, col: np.ndarray) -> _Tokens:
        rows, toks = exploded(col)
        codes, uniq = pd.factorize(toks) if len(toks) else (np.zeros(0, np.int64), [])
        count = np.bincount(rows, minlength=len(col))
        width = int(count.max()) if len(count) else 0
        pairs = rows * max(len(uniq), 1) + codes
        usable = width <= MAX_PADDED and pd.Index(pairs).is_unique
        padded = np.full((len(col), max(width, 1) if usable else 1), -1, np.int32)
        if usable and len(toks):
            start = np.zeros(len(col) + 1, np.int64)
            np.cumsum(count, out=start[1:])
            padded[rows, np.arange(len(toks)) - start[rows]] = codes
        return cls(padded, count.astype(np.float64), {str(u): i for i, u in enumerate(uniq)}, usable)

    def mask(self, codes: np.ndarray) -> np.ndarray:
        """bool [vocab + 1] true at ``codes``; the last slot (index -1, the padding) stays False."""
        out = np.zeros(len(self.vocab) + 1, bool)
        out[codes] = True
        out[-1] = False
        return out


@dataclass(frozen=True)
class _Codes:
    """A categorical column of all candidates: ``codes`` int32 [n_c] (-1 = null), ``vocab``."""

    codes: np.ndarray
    vocab: dict[str, int]

    @classmethod
    def build(cls, col: np.ndarray) -> _Codes:
        mask, vals = _strings(col)
        codes = np.full(len(col), -1, np.int32)
        vocab: dict[str, int] = {}
        if mask.any():
            c, uniq = pd.factorize(vals[mask])
            codes[mask] = c
            vocab = {str(u): i for i, u in enumerate(uniq)}
        return cls(codes, vocab)


@dataclass(frozen=True)
class _EntityTokens:
    """The entity table's list column as codes of a candidate vocabulary (CSR over entity rows):
    ``count`` = the entity's tokens (all of them, known to candidates or not); ``collide`` = its
    tokens repeat once made str (the original then counts differently: fall back)."""

    indptr: np.ndarray
    codes: np.ndarray  # int32, -1 = a token no candidate holds
    count: np.ndarray
    collide: np.ndarray

    @classmethod
    def build(cls, col: np.ndarray, vocab: dict[str, int]) -> _EntityTokens:
        rows, toks = exploded(col)
        codes = np.fromiter((vocab.get(t, -1) for t in toks), np.int32, len(toks))
        count = np.bincount(rows, minlength=len(col))
        indptr = np.zeros(len(col) + 1, np.int64)
        np.cumsum(count, out=indptr[1:])
        f, _ = pd.factorize(toks) if len(toks) else (np.zeros(0, np.int64), None)
        keys = rows * max(len(toks), 1) + f
        repeated = pd.Index(keys).duplicated() if len(toks) else np.zeros(0, bool)  # hashed, not sorted
        collide = np.bincount(rows[repeated], minlength=len(col)) > 0
        return cls(indptr, codes, count.astype(np.float64), collide)

    def of(self, i: int) -> np.ndarray:
        c = self.codes[self.indptr[i]:self.indptr[i + 1]]
        return c[c >= 0]


def _entity_codes(col: np.ndarray, vocab: dict[str, int]) -> np.ndarray:
    """int32 [n_e]: each entity's categorical value as a candidate-vocabulary code (-2: null or
    a value no candidate has, so it never equals a candidate's code, -1 = null)."""
    mask, vals = _strings(col)
    return np.fromiter((vocab.get(v, -2) if m else -2 for m, v in zip(mask, vals, strict=True)), np.int32, len(col))


@dataclass(frozen=True)
class _Encoded:
    """One known term with both sides encoded: ``cand`` over candidates (:class:`_Tokens`,
    :class:`_Codes` or float64 numbers) and ``ent`` over entity rows (:class:`_EntityTokens`,
    int32 codes or float64 numbers). ``cand_is_startup``: the candidate is the term's startup side."""

    term: _Term
    cand_is_startup: bool
    cand: Any
    ent: Any

    def values(self, i: int, cand: np.ndarray) -> list[np.ndarray] | None:
        """The term's float64 columns for entity row ``i`` x ``cand`` (None: fall back)."""
        m = len(cand)
        t, c, e = self.term.compute, self.cand, self.ent
        if t is _check_fit:  # the original formula on the numbers
            a, b = (c[cand], e[i:i + 1]) if self.cand_is_startup else (e[i:i + 1], c[cand])
            return self.term.compute(a, b, m)
        if t is _same:
            return [(c.codes[cand] == e[i]).astype(np.float64)]
        if t is _in_set and not self.cand_is_startup:  # entity = startup value, candidate = list
            if not c.usable:
                return None
            if e[i] < 0:
                return [np.zeros(m, np.float64)]
            return [(c.padded[cand] == e[i]).any(axis=1).astype(np.float64)]
        if t is _in_set:  # entity = user list, candidate = startup value
            emask = np.zeros(len(c.vocab) + 1, bool)  # last slot: a null candidate (-1)
            emask[e.of(i)] = True
            emask[-1] = False
            return [emask[c.codes[cand]].astype(np.float64)]
        # overlap of two lists
        if not c.usable or e.collide[i]:
            return None
        ov = c.mask(e.of(i))[c.padded[cand]].sum(axis=1).astype(np.float64)
        n_ent = e.count[i]
        n_cand = c.count[cand]
        na, nb = (n_cand, n_ent) if self.cand_is_startup else (n_ent, n_cand)
        union = na + nb - ov
        jac = np.divide(ov, union, out=np.zeros(m), where=union > 0)
        cov = np.divide(ov, na, out=np.zeros(m), where=na > 0)
        return [ov, jac, cov]


class MatchTable:
    """Match features / reasons of one entity against chosen candidates of ``data``.

    Build once per :class:`ServingData` (:func:`match_table` caches it); ~1-3 s at 1M candidates.
    """

    def __init__(self, data: ServingData) -> None:
        self.use_case = get_use_case(data.use_case)
        ef, cf = data.entity_features, data.candidate_features
        self.available = ef is not None and cf is not None and len(ef.columns) > 0 and len(cf.columns) > 0
        self.names: list[str] = []
        self._encoded: list[_Encoded] | None = None
        self._cand: dict[str, np.ndarray] = {}
        self._ent: dict[str, np.ndarray] = {}
        self._row: dict[str, int] = {}
        self._pandas_only = False
        if not self.available:
            return
        if ef.index.has_duplicates:  # .loc gives a frame there: keep the original code path
            self._pandas_only = True
            self._data = data
            return
        self._cand = {str(c): cf[c].to_numpy() for c in cf.columns}
        self._ent = {str(c): ef[c].to_numpy(dtype=object) for c in ef.columns}
        self._row = {str(e): i for i, e in enumerate(ef.index)}
        startup_is_entity = self.use_case.entity_is_startup
        s_keys, u_keys = (self._ent, self._cand) if startup_is_entity else (self._cand, self._ent)
        known = [t for t in TERMS.get(self.use_case.user_role, []) if t.needs_s in s_keys and t.needs_u in u_keys]
        if not known:  # generic terms depend on the values of the rows at hand: original functions
            return
        encoded = []
        for t in known:
            cand_col, ent_col = (t.needs_u, t.needs_s) if startup_is_entity else (t.needs_s, t.needs_u)
            col, ecol = self._cand[cand_col], self._ent[ent_col]
            cand_enc: Any
            if t.compute is _overlap:
                cand_enc = _Tokens.build(col)
                ent_enc: Any = _EntityTokens.build(ecol, cand_enc.vocab)
            elif t.compute is _same:
                cand_enc = _Codes.build(col)
                ent_enc = _entity_codes(ecol, cand_enc.vocab)
            elif t.compute is _in_set and startup_is_entity:  # startup value vs candidates' lists
                cand_enc = _Tokens.build(col)
                ent_enc = _entity_codes(ecol, cand_enc.vocab)
            elif t.compute is _in_set:  # the entity's list vs candidate startups' values
                cand_enc = _Codes.build(col)
                ent_enc = _EntityTokens.build(ecol, cand_enc.vocab)
            elif t.compute is _check_fit:
                cand_enc, ent_enc = _numeric(col, False), _numeric(ecol, False)
            else:  # a term this module does not know how to encode
                return
            encoded.append(_Encoded(t, not startup_is_entity, cand_enc, ent_enc))
        self._encoded = encoded
        self.names = [n for e in encoded for n in e.term.names]

    # --- per request --------------------------------------------------------------------------
    def knows(self, entity_id: str) -> bool:
        """Whether the entity has a feature row (else its match columns are zeros)."""
        if self._pandas_only:
            return entity_id in self._data.entity_features.index
        return entity_id in self._row

    def _entity_cols(self, entity_id: str) -> dict[str, np.ndarray]:
        i = self._row[entity_id]
        out = {}
        for k, col in self._ent.items():
            arr = np.empty(1, dtype=object)
            arr[0] = col[i]
            out[k] = arr
        return out

    def _pair(self, term: _Term, i: int, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(startup-side column, user-side column) of one term: the entity's as a 1-array."""
        ent_col, cand_col = (term.needs_s, term.needs_u) if self.use_case.entity_is_startup \
            else (term.needs_u, term.needs_s)
        ent = np.empty(1, dtype=object)
        ent[0] = self._ent[ent_col][i]
        cands = self._cand[cand_col][cand]
        return (ent, cands) if self.use_case.entity_is_startup else (cands, ent)

    def _sides(self, entity_id: str, cand: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(startup side, user side) column dicts, as ``features.match._sides`` makes them."""
        ent = self._entity_cols(entity_id)
        cands = {k: v[cand] for k, v in self._cand.items()}
        return (ent, cands) if self.use_case.entity_is_startup else (cands, ent)

    def _values(self, entity_id: str, cand: np.ndarray) -> tuple[list[tuple[_Term, np.ndarray]], list[str]]:
        """``[(term, float64 [m, len(term.names)])]`` and the feature names, for a known entity."""
        out = []
        if self._encoded is None:  # generic terms: the original functions on plain arrays
            s, u = self._sides(entity_id, cand)
            names = []
            for t in _terms_for(self.use_case, s, u):
                out.append((t, np.stack([np.asarray(v, np.float64) for v in t.compute(s[t.needs_s], u[t.needs_u],
                                                                                       len(cand))], axis=1)))
                names += list(t.names)
            return out, names
        i = self._row[entity_id]
        for e in self._encoded:
            vals = e.values(i, cand)
            if vals is None:  # tokens that collide once made str: the original term function
                s, u = self._sides(entity_id, cand)
                vals = e.term.compute(s[e.term.needs_s], u[e.term.needs_u], len(cand))
            out.append((e.term, np.stack([np.asarray(v, np.float64) for v in vals], axis=1)))
        return out, self.names

    def features(self, entity_id: str, cand_idx: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """``(float32 [m, k], names)`` = ``match_features(uc, entity_row, candidates.iloc[cand_idx])``
        for an entity with a feature row (:meth:`knows`)."""
        cand = np.asarray(cand_idx, dtype=np.int64)
        if self._pandas_only:
            from startup_recs.features.match import match_features

            d = self._data
            return match_features(self.use_case, d.entity_features.loc[entity_id], d.candidate_features.iloc[cand])
        if len(cand) == 0:  # as the original: no rows, no names
            return np.zeros((0, 0), np.float32), []
        values, names = self._values(entity_id, cand)
        if not values:
            return np.zeros((len(cand), 0), np.float32), []
        return np.concatenate([v for _, v in values], axis=1).astype(np.float32), list(names)

    def block(self, entity_id: str, cand_idx: np.ndarray, k: int) -> np.ndarray:
        """``float32 [m, 1 + k]``: ``entity_has_features`` then the ``k`` match features (zeros for
        an entity without a feature row), as ``ranking_features._match_block`` for one list."""
        cand = np.asarray(cand_idx, dtype=np.int64)
        out = np.zeros((len(cand), k + 1), np.float32)
        if not len(cand) or not self.knows(entity_id):
            return out
        m, _ = self.features(entity_id, cand)
        out[:, 0] = 1.0
        out[:, 1:] = m
        return out

    def reasons(self, entity_id: str, cand_idx: np.ndarray) -> list[list[str]]:
        """One reason list per candidate = ``match_reasons_batch(uc, entity_row, candidates.iloc[cand_idx])``."""
        cand = np.asarray(cand_idx, dtype=np.int64)
        out: list[list[str]] = [[] for _ in range(len(cand))]
        if not len(cand) or not self.available or not self.knows(entity_id):
            return out
        if self._pandas_only:
            from startup_recs.features.match import match_reasons_batch

            d = self._data
            return match_reasons_batch(self.use_case, d.entity_features.loc[entity_id], d.candidate_features.iloc[cand])
        values, _ = self._values(entity_id, cand)
        row = self._row[entity_id]
        for term, v in values:
            a, b = self._pair(term, row, cand)
            for i in np.flatnonzero(v.any(axis=1)):
                text = term.reason(a[i if len(a) > 1 else 0], b[i if len(b) > 1 else 0], v[i])
                if text:
                    out[i].append(text)
        return out


_CACHE: dict[int, tuple[weakref.ref, MatchTable]] = {}


def match_table(data: ServingData) -> MatchTable:
    """The :class:`MatchTable` of ``data``, built on first use and dropped with ``data``."""
    hit = _CACHE.get(id(data))
    if hit is not None and hit[0]() is data:
        return hit[1]
    table = MatchTable(data)
    _CACHE[id(data)] = (weakref.ref(data), table)
    weakref.finalize(data, _CACHE.pop, id(data), None)
    return table
