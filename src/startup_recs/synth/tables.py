"""The simulated marketplace as the app database's tables, the oracle, and summaries.

What: :func:`generate` (world -> shortlists -> behaviour -> tables) returns the six app tables
(``startups``, ``users``, ``startup_interactions``, ``user_interactions``,
``recommendation_sessions``, ``impressions``; validated against ``startup_recs.data.schema``) plus
``"oracle"``: ``use_case, entity_id, candidate_id, affinity (float32, the planted noise-free
affinity), rank (int32, 1 = best), mutual_affinity, mutual_rank`` (reverse rows: the mutual
ceiling; null on forward rows), the top-K per entity (K per direction from ``SizeSpec.oracle_k``). :func:`segment_counts` and :func:`event_counts` summarise a result.

Units: timestamps are ``timestamp[us, UTC]``; ids are strings (``s000042`` startups, ``u0000042``
users, ``sess00000042`` sessions); list columns are Arrow ``list<string>`` (the app database
stores them as JSON text, see :mod:`startup_recs.data.appdb`).

Why: the ids are built column-wise with Arrow kernels (no per-row Python objects), so bench size
(~10M events) builds in seconds; everything is deterministic for a given size and seed.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from startup_recs.core.config import segment_of
from startup_recs.data import schema
from startup_recs.synth.affinity import Shortlist, World, build_world, shortlist
from startup_recs.synth.reciprocity import add_replies, mutual_scores
from startup_recs.synth.sessions import simulate
from startup_recs.synth.world import (
    FORWARD,
    LOCATIONS,
    MODEL_VERSION,
    NAME_A,
    NAME_B,
    REVERSE,
    SECTORS,
    SKILLS,
    STAGES,
)


def _mask_to_lists(masks: np.ndarray, vocab: tuple[str, ...]) -> pa.Array:
    """uint64 bit masks -> Arrow list<string> (items in vocabulary order)."""
    n = len(masks)
    m = len(vocab)
    bits = ((masks[:, None] >> np.arange(m, dtype=np.uint64)[None, :]) & np.uint64(1)).astype(bool)
    rows, cols = np.nonzero(bits)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    values = pa.array(np.asarray(vocab, dtype=object)[cols], type=pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _take(ids: np.ndarray, idx: np.ndarray) -> pa.Array:
    """``ids[idx]`` as an Arrow string array (vectorised take instead of Python objects)."""
    return pa.array(ids, pa.string()).take(pa.array(np.asarray(idx, dtype=np.int64).ravel()))


def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=pa.int64()).cast(schema.TS)


def _session_ids(idx: np.ndarray) -> pa.Array:
    """Session index -> id string ("sess00000001"); -1 -> null."""
    idx = np.asarray(idx, dtype=np.int64)
    digits = pc.utf8_lpad(pa.array(np.maximum(idx, 0)).cast(pa.string()), width=8, padding="0")
    ids = pc.binary_join_element_wise("sess", digits, "")
    return pc.if_else(pa.array(idx < 0), pa.nulls(len(idx), pa.string()), ids)


def _tables(w: World, sim: dict[str, dict[str, np.ndarray]]) -> dict[str, pa.Table]:
    S, U = w.S, w.U
    n_s = len(S.ids)
    names = [f"{NAME_A[a]}{NAME_B[b]} {i}" for i, (a, b) in enumerate(zip(
        np.arange(n_s) * 7 % len(NAME_A), np.arange(n_s) * 13 % len(NAME_B), strict=True))]
    startups = pa.table({
        "startup_id": pa.array(S.ids, pa.string()),
        "name": pa.array(names, pa.string()),
        "sector": pa.array(np.asarray(SECTORS, dtype=object)[S.sector], pa.string()),
        "stage": pa.array(np.asarray(STAGES, dtype=object)[S.stage], pa.string()),
        "location": pa.array(np.asarray(LOCATIONS, dtype=object)[S.loc], pa.string()),
        "skills_needed": _mask_to_lists(S.skills, SKILLS),
        "funding_usd": pa.array(S.funding.round(-3)),
        "created_at": _ts(S.created),
    })
    users = pa.table({
        "user_id": pa.array(U.ids, pa.string()),
        "role": pa.array(np.where(U.is_dev, "developer", "investor").astype(object), pa.string()),
        "skills": _mask_to_lists(U.skills, SKILLS),
        "sectors": _mask_to_lists(U.sectors, SECTORS),
        "stages": _mask_to_lists(U.stages, STAGES),
        "location": pa.array(np.asarray(LOCATIONS, dtype=object)[U.loc], pa.string()),
        "experience_years": pa.array(U.experience, mask=np.isnan(U.experience)),
        "check_size_usd": pa.array(np.round(U.check, -3), mask=np.isnan(U.check)),
        "created_at": _ts(U.created),
    })
    rev, fwd = sim["rev"], sim["fwd"]
    startup_interactions = pa.table({
        "startup_id": _take(S.ids, rev["s"]),
        "user_id": _take(U.ids, rev["u"]),
        "event": pa.array(rev["event"], pa.string()),
        "ts": _ts(rev["ts"]),
        "session_id": _session_ids(rev["session"]),
    })
    user_interactions = pa.table({
        "user_id": _take(U.ids, fwd["u"]),
        "startup_id": _take(S.ids, fwd["s"]),
        "event": pa.array(fwd["event"], pa.string()),
        "ts": _ts(fwd["ts"]),
        "session_id": _session_ids(fwd["session"]),
    })
    ss = sim["sessions"]
    is_rev = np.isin(ss["uc"], REVERSE)
    order = np.argsort(ss["ts"], kind="stable")
    ent_ids = pc.if_else(pa.array(is_rev[order]), _take(S.ids, np.where(is_rev, ss["ent"], 0)[order]),
                         _take(U.ids, np.where(is_rev, 0, ss["ent"])[order]))
    sessions = pa.table({
        "session_id": _session_ids(np.arange(len(ss["ts"]))[order]),
        "entity_id": ent_ids,
        "use_case": pa.array(ss["uc"][order], pa.string()),
        "ts": _ts(ss["ts"][order]),
    })
    im = sim["impressions"]
    s_uc = ss["uc"][im["session"]]
    im_rev = np.isin(s_uc, REVERSE)
    cand_ids = pc.if_else(pa.array(im_rev), _take(U.ids, np.where(im_rev, im["cand"], 0)),
                          _take(S.ids, np.where(im_rev, 0, im["cand"])))
    impressions = pa.table({
        "session_id": _session_ids(im["session"]),
        "candidate_id": cand_ids,
        "position": pa.array(im["pos"].astype(np.int32)),
        "model_version": pa.array(np.full(len(cand_ids), MODEL_VERSION, dtype=object), pa.string()),
    })
    raw = {"startups": startups, "users": users, "startup_interactions": startup_interactions,
           "user_interactions": user_interactions, "recommendation_sessions": sessions,
           "impressions": impressions}
    return {name: schema.validate(raw[name], name) for name in schema.APP_TABLES}


def oracle_table(w: World, lists: dict[str, Shortlist]) -> pa.Table:
    """The oracle: each entity's top-K candidates by true affinity (rank 1 = best), from the
    shortlists; K per direction is ``spec.oracle_k`` (0 = not written). Reverse rows also carry
    the mutual ceiling: ``mutual_affinity`` (:func:`~startup_recs.synth.reciprocity.mutual_scores`,
    the planted log-probability of a contact that is answered) and ``mutual_rank`` (1 = best
    among the entity's K rows); null on forward rows."""
    parts = []
    k_rev, k_fwd = w.spec.oracle_k
    for use_case in (*REVERSE, *FORWARD):
        k = k_rev if use_case in REVERSE else k_fwd
        sl = lists[use_case]
        k = min(k, sl.cand.shape[1])
        if k <= 0:
            continue
        ent_ids, cand_ids = (w.S.ids, w.U.ids) if use_case in REVERSE else (w.U.ids, w.S.ids)
        n = len(sl.rows)
        if use_case in REVERSE:
            mutual = mutual_scores(w, use_case, sl.rows, sl.cand[:, :k])
            order = np.argsort(-mutual, axis=1, kind="stable")
            mrank = np.empty_like(order)
            np.put_along_axis(mrank, order, np.arange(1, k + 1)[None, :], axis=1)
            m_aff, m_rank = pa.array(mutual.ravel()), pa.array(mrank.ravel().astype(np.int32))
        else:
            m_aff, m_rank = pa.nulls(n * k, pa.float32()), pa.nulls(n * k, pa.int32())
        parts.append(pa.table({
            "use_case": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n * k, np.int32)),
                                                       pa.array([use_case])).cast(pa.string()),
            "entity_id": _take(ent_ids, np.repeat(sl.rows, k)),
            "candidate_id": _take(cand_ids, sl.cand[:, :k]),
            "affinity": pa.array(sl.aff[:, :k].ravel().astype(np.float32)),
            "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), n)),
            "mutual_affinity": m_aff,
            "mutual_rank": m_rank,
        }, schema=ORACLE_SCHEMA))
    return pa.concat_tables(parts) if parts else ORACLE_SCHEMA.empty_table()


ORACLE_SCHEMA = pa.schema([("use_case", pa.string()), ("entity_id", pa.string()),
                           ("candidate_id", pa.string()), ("affinity", pa.float32()),
                           ("rank", pa.int32()), ("mutual_affinity", pa.float32()), ("mutual_rank", pa.int32())])


def generate(size: str = "tiny", seed: int = 0) -> dict[str, pa.Table]:
    """Generate a marketplace: the six app tables (validated) plus ``"oracle"``. The answers to
    first moves (``reply`` rows, :mod:`startup_recs.synth.reciprocity`) come last, from their own
    random stream: the rest of the marketplace is what it was without them."""
    w, rng = build_world(size, seed)
    k_short = w.spec.shortlist_k
    lists = {uc: shortlist(w, uc, k_short, rng) for uc in (*REVERSE, *FORWARD)}
    tables = _tables(w, add_replies(w, simulate(w, rng, lists), seed))
    tables["oracle"] = oracle_table(w, lists)
    return tables


# --- summaries -----------------------------------------------------------------------------------
def segment_counts(tables: dict[str, pa.Table]) -> dict[str, dict[str, int]]:
    """Startups per segment (cold < 5, warm 5-19, hot 20+ events over the whole log) for each
    reverse use case; startups without any event of that use case count as cold."""
    users, events = tables["users"], tables["startup_interactions"]
    role = dict(zip(users.column("user_id").to_pylist(), users.column("role").to_pylist(), strict=True))
    ev_role = np.array([role.get(u) for u in events.column("user_id").to_pylist()], dtype=object)
    sids = np.asarray(events.column("startup_id").to_pylist(), dtype=object)
    all_startups = tables["startups"].column("startup_id").to_pylist()
    out = {}
    for use_case, r in (("startup_developer", "developer"), ("startup_investor", "investor")):
        uniq, cnt = np.unique(sids[ev_role == r], return_counts=True)
        counts = dict(zip(uniq.tolist(), cnt.tolist(), strict=True))
        seg = {"cold": 0, "warm": 0, "hot": 0}
        for s in all_startups:
            seg[segment_of(counts.get(s, 0))] += 1
        out[use_case] = seg
    return out


def event_counts(tables: dict[str, pa.Table]) -> dict[str, dict[str, int]]:
    """Rows per event type for both interaction tables (for summaries and tests)."""
    out = {}
    for name in ("startup_interactions", "user_interactions"):
        vc = pc.value_counts(tables[name].column("event")).to_pylist()
        out[name] = {d["values"]: d["counts"] for d in vc}
    return out
