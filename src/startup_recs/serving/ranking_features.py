"""Ranking features: THE feature builder of the re-ranker, used by its trainer and by serving.

One row per (entity, candidate) of a candidate *list* (the candidates retrieved for one
entity). Every column is computed from three inputs only, none of which can carry a label:

1. ``retrieval_scores`` of the list's candidates, from retrievers fitted *before* the window the
   rows come from (the stage-1 models for training rows, see docs/contracts.md "Fitting windows");
2. ``ServingData`` (``data``): feature tables and fit-window statistics (popularity, recency,
   entity interaction counts) that stop at ``data.until``;
3. the candidate list itself (within-list ranks and z-scores of each retriever's score).

Never an event, a position, a label or a timestamp of the rows being ranked: the legacy ranker's
``model_score`` column was the label in disguise, and ``tests/unit/test_ranker_noleak.py`` proves
these columns do not move when labels, positions or times do.

Columns (``names``), in order:

- per retriever ``r`` in ``retrievers`` (default :data:`RETRIEVERS`): ``r`` (raw score, 0 where
  missing), ``r_z`` (z-score within the list), ``r_rank`` (within-list rank as a fraction:
  0 = best, 1 = worst), ``r_missing`` (1 where that retriever has no score for the row: an
  unknown entity or candidate, or no such model in the bundle). ``content`` is not among them:
  its score is a fixed blend of the match features and popularity, which are columns already;
- ``pop_log`` (log1p of popularity / mean popularity: scale-free, so the shorter stage-1 window
  and the final window look alike), ``pop_pct`` (popularity percentile over all candidates),
  ``recency_log`` (log1p days since the candidate's last fit-window event), ``recency_never``;
- ``entity_log_count``, ``segment_cold``, ``segment_warm``, ``segment_hot`` (training
  interactions of the entity, the routing segment);
- ``entity_has_features`` and the match features of :func:`startup_recs.features.match_features`
  (skills overlap, sector/stage match, location, check size), only when ``data`` has feature
  tables (an id-only log has none; the config's feature list then simply lacks them).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

import numpy as np

from startup_recs.core.config import COLD_MAX, HOT_MIN
from startup_recs.core.errors import DataError
from startup_recs.serving.data import NEVER_SEEN_DAYS, ServingData
from startup_recs.serving.retrievers import Retriever

# Retrievers whose scores become features, in column order. Absent ones give 0 + missing = 1.
RETRIEVERS: tuple[str, ...] = ("two_tower", "als", "item2item")
PER_RETRIEVER: tuple[str, ...] = ("", "_z", "_rank", "_missing")
CANDIDATE_COLS: tuple[str, ...] = ("pop_log", "pop_pct", "recency_log", "recency_never")
ENTITY_COLS: tuple[str, ...] = ("entity_log_count", "segment_cold", "segment_warm", "segment_hot")


def feature_names(data: ServingData, retrievers: Sequence[str] = RETRIEVERS) -> list[str]:
    """The column names :func:`build` produces for ``data`` (depends only on what tables exist)."""
    names = [f"{r}{s}" for r in retrievers for s in PER_RETRIEVER]
    names += list(CANDIDATE_COLS) + list(ENTITY_COLS)
    if data.has_features:
        names += ["entity_has_features"] + [f"match_{n}" for n in _match_names(data)]
    return names


def build(
    use_case: str,
    entity_id: str,
    cand_idx: np.ndarray,
    retrieval_scores: Mapping[str, np.ndarray],
    data: ServingData,
    retrievers: Sequence[str] = RETRIEVERS,
) -> tuple[np.ndarray, list[str]]:
    """Features of one entity's candidate list.

    Args:
        use_case: must equal ``data.use_case``.
        entity_id: the entity the list is for.
        cand_idx: ``int [m]`` indices into ``data.candidate_ids``.
        retrieval_scores: retriever name -> ``float32 [m]`` score of each listed candidate (NaN
            = no score for that candidate); names not in ``retrievers`` are ignored.
        data: the serving data of the same fit window as the retrievers.
        retrievers: which retrievers' columns to produce (a trained ranker passes its own list).

    Returns:
        ``(X float32 [m, f], names [f])``.
    """
    cand_idx = np.asarray(cand_idx, dtype=np.int64)
    offsets = np.array([0, len(cand_idx)], dtype=np.int64)
    return build_batch(use_case, [entity_id], offsets, cand_idx, retrieval_scores, data, retrievers)


def build_batch(
    use_case: str,
    entity_ids: Sequence[str],
    offsets: np.ndarray,
    cand_idx: np.ndarray,
    retrieval_scores: Mapping[str, np.ndarray],
    data: ServingData,
    retrievers: Sequence[str] = RETRIEVERS,
) -> tuple[np.ndarray, list[str]]:
    """Features of many lists at once (training): list ``i`` is rows ``offsets[i]:offsets[i+1]``.

    ``entity_ids`` [L], ``offsets`` int [L+1] (``offsets[0] = 0``, ``offsets[-1] = N``),
    ``cand_idx`` int [N], ``retrieval_scores`` name -> float32 [N]. Row ``j`` of the result equals
    row ``j - offsets[i]`` of ``build(entity_ids[i], cand_idx[offsets[i]:offsets[i+1]], ...)``.
    """
    if use_case != data.use_case:
        from startup_recs.core.errors import ModelMismatchError

        raise ModelMismatchError(f"ranking features for {use_case!r} asked of serving data of {data.use_case!r}")
    offsets = np.asarray(offsets, dtype=np.int64)
    cand_idx = np.asarray(cand_idx, dtype=np.int64)
    n = len(cand_idx)
    if len(offsets) != len(entity_ids) + 1 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
        raise DataError("ranking features: offsets must run from 0 to the number of rows, one list per entity")
    if n and (cand_idx.min() < 0 or cand_idx.max() >= data.n_candidates):
        raise DataError("ranking features: candidate index outside the candidate space")
    sizes = np.diff(offsets)
    group = np.repeat(np.arange(len(entity_ids)), sizes)
    cols: list[np.ndarray] = []

    for r in retrievers:
        s = retrieval_scores.get(r)
        if s is None:
            s = np.full(n, np.nan, dtype=np.float32)
        s = np.asarray(s, dtype=np.float32)
        if s.shape != (n,):
            raise DataError(f"ranking features: {r} scores have shape {s.shape}, expected ({n},)")
        missing = ~np.isfinite(s)
        filled = np.where(missing, np.float32(0.0), s)
        z, rank = _within_list(filled, missing, group, offsets)
        cols += [filled, z, rank, missing.astype(np.float32)]

    pop_share, pop_pct = _popularity_stats(data)
    rec = data.recency_days[cand_idx]
    cols += [pop_share[cand_idx], pop_pct[cand_idx], np.log1p(rec), (rec >= NEVER_SEEN_DAYS).astype(np.float32)]

    counts = np.array([data.interaction_count(e) for e in entity_ids], dtype=np.float32)
    seg = np.stack([counts < COLD_MAX, (counts >= COLD_MAX) & (counts < HOT_MIN), counts >= HOT_MIN], 1)
    ent = np.concatenate([np.log1p(counts)[:, None], seg.astype(np.float32)], axis=1)[group]
    cols += list(ent.T)

    X = np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((n, 0), np.float32)
    if data.has_features:
        X = np.concatenate([X, _match_block(use_case, entity_ids, offsets, cand_idx, data)], axis=1)
    names = feature_names(data, retrievers)
    assert X.shape == (n, len(names)), (X.shape, len(names))
    return np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0), names


def gather_scores(
    retrievers: Mapping[str, Retriever], entity_id: str, cand_idx: np.ndarray,
    names: Sequence[str] = RETRIEVERS,
) -> dict[str, np.ndarray]:
    """Retrieval scores of one list for :func:`build`: ``{name: float32 [m]}`` for every retriever
    in ``names`` that is loaded and ``knows`` the entity (an unknown entity's zeros are not a
    score; leaving the key out makes the ``r_missing`` column say so)."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        r = retrievers.get(name)
        if r is not None and r.knows(entity_id):
            out[name] = np.asarray(r.score_at(entity_id, cand_idx), dtype=np.float32)
    return out


def gather_scores_batch(
    retrievers: Mapping[str, Retriever], entity_ids: Sequence[str], offsets: np.ndarray,
    cand_idx: np.ndarray, names: Sequence[str] = RETRIEVERS, chunk: int = 256,
) -> dict[str, np.ndarray]:
    """:func:`gather_scores` for many lists (layout of :func:`build_batch`): ``{name: [N]}`` with
    NaN where the retriever does not know the list's entity. Scores whole rows ``[chunk, n_c]`` at
    a time, so memory stays at ``chunk * n_c`` floats per retriever."""
    offsets = np.asarray(offsets, dtype=np.int64)
    cand_idx = np.asarray(cand_idx, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for name in names:
        r = retrievers.get(name)
        if r is None:
            continue
        col = np.full(len(cand_idx), np.nan, dtype=np.float32)
        for lo in range(0, len(entity_ids), chunk):
            ids = list(entity_ids[lo:lo + chunk])
            rows = r.score(ids)
            for j, e in enumerate(ids):
                a, b = int(offsets[lo + j]), int(offsets[lo + j + 1])
                if a < b and r.knows(e):
                    col[a:b] = rows[j, cand_idx[a:b]]
        out[name] = col
    return out


# --- pieces ------------------------------------------------------------------------------------
def _within_list(s: np.ndarray, missing: np.ndarray, group: np.ndarray,
                 offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-list z-score and rank fraction (0 best) of ``s``; missing rows get z 0, rank 1."""
    n = len(s)
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    ok = (~missing).astype(np.float64)
    v = s.astype(np.float64) * ok
    starts = offsets[:-1][np.diff(offsets) > 0]
    cnt = np.add.reduceat(ok, starts)
    tot = np.add.reduceat(v, starts)
    sq = np.add.reduceat(v * v, starts)
    mean = tot / np.maximum(cnt, 1)
    var = np.maximum(sq / np.maximum(cnt, 1) - mean ** 2, 0.0)
    # map each row to its non-empty list
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    pos = np.searchsorted(nonempty, group)
    std = np.sqrt(var)[pos]
    z = np.where(std > 1e-9, (v - mean[pos]) / np.maximum(std, 1e-9), 0.0) * ok
    # rank: sort by (group, missing last, -score); rank within group / (present count - 1)
    order = np.lexsort((-v, missing, group))
    rank_in = np.empty(n, np.float64)
    rank_in[order] = np.arange(n) - offsets[group[order]]
    denom = np.maximum(cnt[pos] - 1, 1)
    rank = np.where(missing, 1.0, np.minimum(rank_in / denom, 1.0))
    return z.astype(np.float32), rank.astype(np.float32)


_CACHE: dict[int, tuple[weakref.ref, dict]] = {}


def _cache(data: ServingData) -> dict:
    """Per-``ServingData`` memo (popularity percentiles, match feature names), dropped with it."""
    hit = _CACHE.get(id(data))
    if hit is not None and hit[0]() is data:
        return hit[1]
    memo: dict = {}
    _CACHE[id(data)] = (weakref.ref(data), memo)
    weakref.finalize(data, _CACHE.pop, id(data), None)
    return memo


def _popularity_stats(data: ServingData) -> tuple[np.ndarray, np.ndarray]:
    """``(log1p(pop / mean pop), percentile in [0, 1])`` per candidate ``[n_c]`` each."""
    memo = _cache(data)
    if "pop" not in memo:
        pop = data.popularity.astype(np.float64)
        mean = pop.mean() if len(pop) and pop.mean() > 0 else 1.0
        share = np.log1p(pop / mean).astype(np.float32)
        pct = np.zeros(len(pop), np.float32)
        if len(pop) > 1:
            from scipy.stats import rankdata

            pct = ((rankdata(pop, method="average") - 1) / (len(pop) - 1)).astype(np.float32)
        memo["pop"] = (share, pct)
    return memo["pop"]


def _match_names(data: ServingData) -> list[str]:
    """Names of the match features ``data``'s tables give (probed on one entity x one candidate)."""
    memo = _cache(data)
    if "match_names" not in memo:
        from startup_recs.features.match import match_features

        ent, cf = data.entity_features, data.candidate_features
        names: list[str] = []
        if ent is not None and cf is not None and len(ent) and len(cf):
            _, names = match_features(data.use_case, ent.iloc[0], cf.iloc[:1])
        memo["match_names"] = list(names)
    return memo["match_names"]


def _match_block(use_case: str, entity_ids: Sequence[str], offsets: np.ndarray,
                 cand_idx: np.ndarray, data: ServingData) -> np.ndarray:
    """``entity_has_features`` + match features ``[N, 1 + k]``, one batched call over all rows
    (zeros for rows whose entity has no feature row)."""
    from startup_recs.features.match import match_features

    k = len(_match_names(data))
    n = len(cand_idx)
    out = np.zeros((n, k + 1), np.float32)
    ent = data.entity_features
    if n == 0 or ent is None:
        return out
    if len(entity_ids) == 1:  # one request's list: the candidates' side is encoded once per data
        from startup_recs.serving.candidate_match import match_table

        table = match_table(data)
        if not table.knows(entity_ids[0]):
            return out
        m, names = table.features(entity_ids[0], cand_idx)
        if list(names) != _match_names(data):
            raise DataError(f"match features changed shape: {names} vs {_match_names(data)}")
        out[:, 0] = 1.0
        out[:, 1:] = m
        return out
    sizes = np.diff(offsets)
    has = np.array([e in ent.index for e in entity_ids], dtype=bool)
    rows_has = np.repeat(has, sizes)
    if not rows_has.any():
        return out
    row_ents = np.repeat(np.asarray(entity_ids, dtype=object), sizes)[rows_has]
    if len(entity_ids) == 1:
        ent_arg = ent.loc[entity_ids[0]]  # one Series: the cheap per-request path
    else:
        ent_arg = ent.loc[row_ents.tolist()].reset_index(drop=True)
    cands = data.candidate_features.iloc[cand_idx[rows_has]].reset_index(drop=True)
    m, names = match_features(use_case, ent_arg, cands)
    if list(names) != _match_names(data):
        raise DataError(f"match features changed shape: {names} vs {_match_names(data)}")
    out[rows_has, 0] = 1.0
    out[rows_has, 1:] = m
    return out
