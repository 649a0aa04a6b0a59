"""Ranking features: THE feature builder of the re-ranker, used by its trainer and by serving.

One row per (entity, candidate) of a candidate *pool* (:mod:`startup_recs.serving.pool`: the
union of several retrievers' top-N lists for one entity). Every column is computed from four
inputs only, none of which can carry a label:

1. ``retrieval_scores`` of the pool's candidates, from retrievers fitted *before* the window the
   rows come from (the stage-1 models for training rows, see docs/contracts.md "Fitting windows");
2. ``listed``: each candidate's position in each retriever's own top-N list (the pool builder's
   by-product);
3. ``ServingData`` (``data``): feature tables and fit-window statistics (popularity, recency,
   entity interaction counts) that stop at ``data.until``;
4. the pool itself (within-pool ranks and z-scores of each retriever's score).

Never an event, a position in a logged session, a label or a timestamp of the rows being ranked:
``tests/unit/test_ranker_noleak.py`` proves these columns do not move when labels, positions or
times do, for every column below and every training window.

No train/serve skew. The ranker learns on stage-1 retrievers (fit on the train window) and
serves on the final refit (train + validation): raw scores of two different fits live on
different scales (a cosine of a 2-epoch and of a 10-epoch two-tower, ALS factors of another
regularisation). So a retriever enters only through *per-pool* normalised columns: its rank
fraction and z-score within the pool, and its own list position; no raw score
(``tests/unit/test_ranking_features_skew.py`` compares the distributions of stage-1 and final
features). Popularity is scale-free too (share of the mean, percentile).

Columns (``names``), in order:

- per retriever ``r`` in ``retrievers`` (default :data:`RETRIEVERS`): ``r_rank`` (within-pool
  rank as a fraction: 0 = best, 1 = worst), ``r_z`` (z-score within the pool), ``r_listed``
  (``log1p`` of the candidate's position in r's own top-N, 0 when absent), ``r_unlisted`` (1 when
  not in r's top-N), ``r_missing`` (1 where that retriever has no score for the row: an unknown
  entity, or no such model in the bundle);
- ``pool_n_lists`` (how many retrievers listed the candidate), ``pool_size_log``;
- ``pop_log`` (log1p of popularity / mean popularity), ``pop_pct`` (popularity percentile over
  all candidates), ``recency_log`` (log1p days since the candidate's last fit-window event),
  ``recency_never``;
- ``entity_log_count``, ``entity_log_seen`` (distinct candidates it interacted with),
  ``segment_cold``, ``segment_warm``, ``segment_hot`` (routing segment); ``pair_seen`` (the
  entity already interacted with this candidate in the fit window, e.g. viewed it: only contacts
  exclude a candidate from answers);
- only with feature tables: ``entity_has_features``, every component of
  :func:`startup_recs.features.match_features` (``match_skills_overlap``, ``_jaccard``,
  ``_coverage``, ``match_same_location``; investors ``match_sector_match``, ``match_stage_match``,
  ``match_check_log_ratio``, ``match_check_fit``...), and the raw numeric attributes of both sides
  (``ent_<col>`` / ``cand_<col>``, signed log1p; ``ent_stage_rank`` / ``cand_stage_rank`` for a
  ``stage`` column of the app's stage vocabulary), so a learner can form interactions the match
  terms do not spell out (stage x experience, funding x check size).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from startup_recs.core.config import COLD_MAX, HOT_MIN
from startup_recs.core.errors import DataError
from startup_recs.serving.data import NEVER_SEEN_DAYS, ServingData
from startup_recs.serving.retrievers import Retriever

# Retrievers whose scores become features, in column order. Absent ones give missing = 1.
RETRIEVERS: tuple[str, ...] = ("content", "two_tower", "als", "item2item")
PER_RETRIEVER: tuple[str, ...] = ("_rank", "_z", "_listed", "_unlisted", "_missing")
POOL_COLS: tuple[str, ...] = ("pool_n_lists", "pool_size_log")
CANDIDATE_COLS: tuple[str, ...] = ("pop_log", "pop_pct", "recency_log", "recency_never")
ENTITY_COLS: tuple[str, ...] = ("entity_log_count", "entity_log_seen", "segment_cold", "segment_warm",
                                "segment_hot")
PAIR_COLS: tuple[str, ...] = ("pair_seen",)
# The app's funding stages, earliest first (startups.stage, investors.stages): an ordinal feature.
STAGE_ORDER: tuple[str, ...] = ("pre_seed", "seed", "series_a", "series_b", "series_c", "growth")


def feature_names(data: ServingData, retrievers: Sequence[str] = RETRIEVERS) -> list[str]:
    """The column names :func:`build` produces for ``data`` (depends only on what tables exist)."""
    names = [f"{r}{s}" for r in retrievers for s in PER_RETRIEVER]
    names += list(POOL_COLS) + list(CANDIDATE_COLS) + list(ENTITY_COLS) + list(PAIR_COLS)
    if data.has_features:
        names += ["entity_has_features"] + [f"match_{n}" for n in _match_names(data)]
        names += [n for n, _ in _attributes(data)]
    return names


def retrievers_of(names: Sequence[str]) -> list[str]:
    """The retriever names a feature list was built with (column order)."""
    return [f[: -len("_missing")] for f in names if f.endswith("_missing")]


def build(
    use_case: str,
    entity_id: str,
    cand_idx: np.ndarray,
    retrieval_scores: Mapping[str, np.ndarray],
    data: ServingData,
    retrievers: Sequence[str] = RETRIEVERS,
    listed: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Features of one entity's pool.

    Args:
        use_case: must equal ``data.use_case``.
        entity_id: the entity the pool is for.
        cand_idx: ``int [m]`` indices into ``data.candidate_ids``.
        retrieval_scores: retriever name -> ``float32 [m]`` score of each pool candidate (NaN
            or a missing key = no score); names not in ``retrievers`` are ignored.
        data: the serving data of the same fit window as the retrievers.
        retrievers: which retrievers' columns to produce (a trained ranker passes its own list).
        listed: retriever name -> ``int [m]`` position in that retriever's own top-N (-1 = not
            listed); a missing key = not listed by it.

    Returns:
        ``(X float32 [m, f], names [f])``.
    """
    cand_idx = np.asarray(cand_idx, dtype=np.int64)
    offsets = np.array([0, len(cand_idx)], dtype=np.int64)
    return build_batch(use_case, [entity_id], offsets, cand_idx, retrieval_scores, data, retrievers, listed)


def build_batch(
    use_case: str,
    entity_ids: Sequence[str],
    offsets: np.ndarray,
    cand_idx: np.ndarray,
    retrieval_scores: Mapping[str, np.ndarray],
    data: ServingData,
    retrievers: Sequence[str] = RETRIEVERS,
    listed: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Features of many pools at once (training): pool ``i`` is rows ``offsets[i]:offsets[i+1]``.

    ``entity_ids`` [L], ``offsets`` int [L+1] (``offsets[0] = 0``, ``offsets[-1] = N``),
    ``cand_idx`` int [N], ``retrieval_scores`` name -> float32 [N], ``listed`` name -> int [N].
    Row ``j`` of the result equals row ``j - offsets[i]`` of ``build(entity_ids[i], ...)`` of that
    pool alone (every within-list statistic is per pool).
    """
    if use_case != data.use_case:
        from startup_recs.core.errors import ModelMismatchError

        raise ModelMismatchError(f"ranking features for {use_case!r} asked of serving data of {data.use_case!r}")
    offsets = np.asarray(offsets, dtype=np.int64)
    cand_idx = np.asarray(cand_idx, dtype=np.int64)
    listed = listed or {}
    n = len(cand_idx)
    if len(offsets) != len(entity_ids) + 1 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
        raise DataError("ranking features: offsets must run from 0 to the number of rows, one list per entity")
    if n and (cand_idx.min() < 0 or cand_idx.max() >= data.n_candidates):
        raise DataError("ranking features: candidate index outside the candidate space")
    sizes = np.diff(offsets)
    group = np.repeat(np.arange(len(entity_ids)), sizes)
    cols: list[np.ndarray] = []

    n_lists = np.zeros(n, np.float32)
    for r in retrievers:
        s = retrieval_scores.get(r)
        s = np.full(n, np.nan, dtype=np.float32) if s is None else np.asarray(s, dtype=np.float32)
        if s.shape != (n,):
            raise DataError(f"ranking features: {r} scores have shape {s.shape}, expected ({n},)")
        missing = ~np.isfinite(s)
        filled = np.where(missing, np.float32(0.0), s)
        z, rank = _within_list(filled, missing, group, offsets, cand_idx)
        pos = listed.get(r)
        pos = np.full(n, -1, np.int64) if pos is None else np.asarray(pos, np.int64)
        if pos.shape != (n,):
            raise DataError(f"ranking features: {r} list positions have shape {pos.shape}, expected ({n},)")
        unlisted = pos < 0
        n_lists += ~unlisted
        cols += [rank, z, np.where(unlisted, 0.0, np.log1p(np.maximum(pos, 0))).astype(np.float32),
                 unlisted.astype(np.float32), missing.astype(np.float32)]
    cols += [n_lists, np.log1p(sizes.astype(np.float32))[group]]

    pop_share, pop_pct = _popularity_stats(data)
    rec = data.recency_days[cand_idx]
    cols += [pop_share[cand_idx], pop_pct[cand_idx], np.log1p(rec), (rec >= NEVER_SEEN_DAYS).astype(np.float32)]

    counts = np.array([data.interaction_count(e) for e in entity_ids], dtype=np.float32)
    n_seen = np.array([len(data.seen_of(e)) for e in entity_ids], dtype=np.float32)
    seg = np.stack([counts < COLD_MAX, (counts >= COLD_MAX) & (counts < HOT_MIN), counts >= HOT_MIN], 1)
    ent = np.concatenate([np.log1p(counts)[:, None], np.log1p(n_seen)[:, None], seg.astype(np.float32)], axis=1)
    cols += list(ent[group].T)
    cols.append(_pair_seen(entity_ids, offsets, cand_idx, data))

    X = np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((n, 0), np.float32)
    if data.has_features:
        X = np.concatenate([X, _match_block(use_case, entity_ids, offsets, cand_idx, data),
                            _attribute_block(entity_ids, group, cand_idx, data)], axis=1)
    names = feature_names(data, retrievers)
    assert X.shape == (n, len(names)), (X.shape, len(names))
    return np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0), names


def gather_scores(
    retrievers: Mapping[str, Retriever], entity_id: str, cand_idx: np.ndarray,
    names: Sequence[str] = RETRIEVERS,
) -> dict[str, np.ndarray]:
    """Retrieval scores of one list: ``{name: float32 [m]}`` for every retriever in ``names``
    that is loaded and ``knows`` the entity (an unknown entity's zeros are not a score; leaving
    the key out makes the ``r_missing`` column say so)."""
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


def pools_to_batch(pools: Sequence[Any], retrievers: Sequence[str]) -> tuple[
        list[str], np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Concatenate :class:`~startup_recs.serving.pool.Pool` objects into :func:`build_batch`'s
    layout: ``(entity_ids, offsets, cand_idx, scores, listed)`` with NaN / -1 where a retriever
    has no score / did not list a candidate."""
    sizes = [len(p) for p in pools]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(offsets[-1])
    cand = np.concatenate([p.cand for p in pools] + [np.zeros(0, np.int64)]).astype(np.int64)
    scores: dict[str, np.ndarray] = {}
    listed: dict[str, np.ndarray] = {}
    for r in retrievers:
        s = np.full(n, np.nan, np.float32)
        pos = np.full(n, -1, np.int64)
        for i, p in enumerate(pools):
            a, b = offsets[i], offsets[i + 1]
            if r in p.scores:
                s[a:b] = p.scores[r]
            if r in p.listed:
                pos[a:b] = p.listed[r]
        scores[r], listed[r] = s, pos
    return [p.entity_id for p in pools], offsets, cand, scores, listed


# --- pieces ------------------------------------------------------------------------------------
def _within_list(s: np.ndarray, missing: np.ndarray, group: np.ndarray, offsets: np.ndarray,
                 tie: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-list z-score and rank fraction (0 best) of ``s``; missing rows get z 0, rank 1.

    Equal scores are ranked by ``tie`` (the candidate index), so a row's rank never depends on
    the order the pool lists its candidates in (training shuffles them; serving does not)."""
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
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    pos = np.searchsorted(nonempty, group)
    std = np.sqrt(var)[pos]
    z = np.where(std > 1e-9, (v - mean[pos]) / np.maximum(std, 1e-9), 0.0) * ok
    # rank: sort by (group, missing last, -score); rank within group / (present count - 1)
    order = np.lexsort((np.arange(n) if tie is None else tie, -v, missing, group))
    rank_in = np.empty(n, np.float64)
    rank_in[order] = np.arange(n) - offsets[group[order]]
    denom = np.maximum(cnt[pos] - 1, 1)
    rank = np.where(missing, 1.0, np.minimum(rank_in / denom, 1.0))
    return z.astype(np.float32), rank.astype(np.float32)


def _pair_seen(entity_ids: Sequence[str], offsets: np.ndarray, cand_idx: np.ndarray, data: ServingData) -> np.ndarray:
    """``float32 [N]``: 1 where the entity already interacted with the candidate in the fit window
    (``data.seen``: viewed it, say) without being excluded from its answers (only contacts are)."""
    out = np.zeros(len(cand_idx), np.float32)
    for i, e in enumerate(entity_ids):
        seen = data.seen_of(e)
        a, b = int(offsets[i]), int(offsets[i + 1])
        if len(seen) and b > a:
            out[a:b] = np.isin(cand_idx[a:b], seen)
    return out


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
    """``entity_has_features`` + match features ``[N, 1 + k]`` (zeros for rows whose entity has no
    feature row): per list from the data's :class:`~startup_recs.serving.candidate_match.MatchTable`
    (equal to :func:`startup_recs.features.match.match_features` on the rows, tested there), or
    one batched pandas call over all rows for tables the match table cannot encode."""
    from startup_recs.features.match import match_features
    from startup_recs.serving.candidate_match import match_table

    k = len(_match_names(data))
    n = len(cand_idx)
    out = np.zeros((n, k + 1), np.float32)
    ent = data.entity_features
    if n == 0 or ent is None:
        return out
    if not getattr(match_table(data), "_pandas_only", True) or len(entity_ids) == 1:
        # the candidates' side encoded once per data, one vectorised pass per list: the serving
        # path, also for training's thousands of lists (the pandas path below joins every row)
        table = match_table(data)
        for i, e in enumerate(entity_ids):
            a, b = int(offsets[i]), int(offsets[i + 1])
            if b == a or not table.knows(e):
                continue
            m, names = table.features(e, cand_idx[a:b])
            if list(names) != _match_names(data):
                raise DataError(f"match features changed shape: {names} vs {_match_names(data)}")
            out[a:b, 0] = 1.0
            out[a:b, 1:] = m
        return out
    sizes = np.diff(offsets)
    has = np.array([e in ent.index for e in entity_ids], dtype=bool)
    rows_has = np.repeat(has, sizes)
    if not rows_has.any():
        return out
    row_ents = np.repeat(np.asarray(entity_ids, dtype=object), sizes)[rows_has]
    ent_arg = ent.loc[row_ents.tolist()].reset_index(drop=True)
    cands = data.candidate_features.iloc[cand_idx[rows_has]].reset_index(drop=True)
    m, names = match_features(use_case, ent_arg, cands)
    if list(names) != _match_names(data):
        raise DataError(f"match features changed shape: {names} vs {_match_names(data)}")
    out[rows_has, 0] = 1.0
    out[rows_has, 1:] = m
    return out


def _numeric_columns(df: pd.DataFrame | None) -> list[str]:
    if df is None:
        return []
    return [str(c) for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]


def _has_stage(df: pd.DataFrame | None) -> bool:
    if df is None or "stage" not in df.columns:
        return False
    vals = set(df["stage"].dropna().astype(str).unique().tolist())
    return bool(vals) and vals <= set(STAGE_ORDER)


def _attributes(data: ServingData) -> list[tuple[str, np.ndarray]]:
    """``[(name, values)]``: per-row attribute columns of both sides, computed once per data.

    Entity attributes are ``float32 [n_entities_with_features]`` in ``entity_features`` order;
    candidate attributes ``float32 [n_c]`` in candidate order. NaN = unknown (0 in the matrix).
    """
    memo = _cache(data)
    if "attrs" not in memo:
        out: list[tuple[str, np.ndarray]] = []
        for prefix, df in (("ent", data.entity_features), ("cand", data.candidate_features)):
            for col in _numeric_columns(df):
                x = df[col].to_numpy(np.float64)
                out.append((f"{prefix}_{col}", (np.sign(x) * np.log1p(np.abs(x))).astype(np.float32)))
            if _has_stage(df):
                order = {s: i / (len(STAGE_ORDER) - 1) for i, s in enumerate(STAGE_ORDER)}
                out.append((f"{prefix}_stage_rank",
                            df["stage"].map(order).to_numpy(np.float64).astype(np.float32)))
        memo["attrs"] = out
    return memo["attrs"]


def _attribute_block(entity_ids: Sequence[str], group: np.ndarray, cand_idx: np.ndarray,
                     data: ServingData) -> np.ndarray:
    """``[N, n_attributes]``: the entity's attributes repeated over its rows, the candidate's own."""
    attrs = _attributes(data)
    out = np.zeros((len(cand_idx), len(attrs)), np.float32)
    if not attrs or not len(cand_idx):
        return out
    ent = data.entity_features
    pos = ent.index.get_indexer([str(e) for e in entity_ids]) if ent is not None else np.full(len(entity_ids), -1)
    row_pos = pos[group]
    for j, (name, values) in enumerate(attrs):
        if name.startswith("ent_"):
            v = np.where(row_pos >= 0, values[np.maximum(row_pos, 0)], np.nan)
        else:
            v = values[cand_idx]
        out[:, j] = v
    return out
