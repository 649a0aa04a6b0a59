"""Cell-level value helpers shared by the feature specs, the encoder and the match terms.

What: raw feature columns (a pandas Series or a NumPy array, one value per row) as plain object
arrays: :func:`_tokens` / :func:`_exploded` (a multi-valued column -> ``(row int64 [m], token
str [m])`` of each row's distinct non-null items), :func:`_strings` (a categorical column ->
``(not-null bool [n], str [n])``), :func:`_numeric` (-> ``float64 [n]``, NaN where missing,
optionally ``log1p``).

Why plain arrays: the same code serves one request (200 candidates, where pandas' per-call
overhead would dominate) and millions of dataset rows. The names stay underscored: they are the
package's internals (also read by :mod:`startup_recs.serving.content`'s precomputed index), not a
public API.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd


def _is_listlike(v: Any) -> bool:
    """A cell holding several values (list, tuple or array), not one scalar."""
    return isinstance(v, list | tuple | np.ndarray)


def _values(s: pd.Series | np.ndarray) -> np.ndarray:
    """A column as an object array (no copy for an object Series)."""
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


def _numeric(s: pd.Series | np.ndarray, log1p: bool) -> np.ndarray:
    """``float64 [n]``: numbers as they are, anything unparseable NaN; ``log1p`` of the clipped
    non-negative part when asked (money amounts)."""
    if isinstance(s, np.ndarray) and s.dtype.kind in "fiu":
        x = s.astype(np.float64)
    else:
        x = pd.to_numeric(pd.Series(_values(s)), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.log1p(np.clip(x, 0.0, None)) if log1p else x

