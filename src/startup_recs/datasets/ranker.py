"""Ranker training pairs with inverse-propensity weights (legacy ``generate_ranker_dataset``).

From the recommendation sessions of the use case:

- an impression is *linked* to an event of the same entity and candidate that names its session,
  or, without a session id, that follows the session within ``link_days`` (the latest session
  before the event wins). Only events in the same part (train/val/test) as the session link, so a
  row never learns its label from a later window;
- *positives*: shown candidates with a linked positive event (``use_case.positive_events``:
  contact, apply_received for startup_developer);
- *hard negatives*: shown in the same session with no linked action (a view alone is not an
  action), ``neg_ratio`` per positive, drawn at random; sessions without a positive give no rows;
- *position bias*: the click-through rate per position (any linked event, a profile view
  included: it shows the slot was examined) over the sessions before ``split_at``
  (by default; never the test window), relative to position 0, made non-increasing and clipped
  below at ``propensity_clip``. Every row carries its ``propensity``; ``weight`` = 1/propensity
  for positives and 1 for negatives, so a contact found far down the list counts MORE (it
  happened despite little exposure). The legacy system had this backwards.

Rows ``session_id, entity_id, candidate_id, position, label, propensity, weight, ts, split``
(``ts`` = session time, ``split`` = its part). Sidecars ``X_propensity.json`` (the curve) and
``X_meta.json``. An imported log without sessions gets one pseudo-session per (entity, part):
its positives plus ``neg_ratio`` random unseen candidates each, position -1, propensity 1.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from startup_recs.core import artifacts, storage
from startup_recs.core.artifacts import sidecar
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.data.split import PARTS, TimeSplit, ts_values
from startup_recs.datasets.common import (
    Prepared,
    check_output,
    elapsed,
    pair_table,
    part_rng,
    prepare,
    row_keys,
    sample_unseen,
    write_frame,
)

log = logging.getLogger(__name__)

LINK_DAYS = 3.0  # an event without a session id links to a session at most this long before it
MIN_IMPRESSIONS = 20  # positions with fewer impressions borrow the previous position's rate

SCHEMA = pa.schema([
    pa.field("session_id", pa.string()),
    pa.field("entity_id", pa.string()),
    pa.field("candidate_id", pa.string()),
    pa.field("position", pa.int32()),
    pa.field("label", pa.int8()),
    pa.field("propensity", pa.float32()),
    pa.field("weight", pa.float32()),
    pa.field("ts", pa.timestamp("us", tz="UTC")),
    pa.field("split", pa.string()),
])


# --- position bias --------------------------------------------------------------------------------
def position_bias(positions: np.ndarray, clicked: np.ndarray, clip: float = 0.05,
                  min_impressions: int = MIN_IMPRESSIONS) -> dict[str, Any]:
    """Estimate the examination propensity per position from logged impressions.

    ``positions`` int [n] (0 = top), ``clicked`` bool [n]. Relative click-through rate
    ``ctr[p] / ctr[0]``, forced non-increasing (a lower slot is never examined more), clipped to
    ``[clip, 1]``. Positions with fewer than ``min_impressions`` impressions reuse the previous
    estimate. Returns ``{"propensity": [...], "ctr": [...], "impressions": [...], "clicks": [...],
    "clip", "estimated"}``; ``estimated`` is False (all ones) when position 0 has no click.
    """
    if not 0 < clip <= 1:
        raise ConfigError(f"--propensity-clip must be in (0, 1] (got {clip})")
    positions = np.asarray(positions, np.int64)
    ok = positions >= 0
    positions, clicked = positions[ok], np.asarray(clicked, bool)[ok]
    n_pos = int(positions.max()) + 1 if len(positions) else 1
    imps = np.bincount(positions, minlength=n_pos).astype(np.float64)
    clicks = np.bincount(positions, weights=clicked.astype(np.float64), minlength=n_pos)
    ctr = np.divide(clicks, imps, out=np.zeros(n_pos), where=imps > 0)
    if imps[0] == 0 or clicks[0] == 0:
        prop = np.ones(n_pos)
        estimated = False
    else:
        rel = ctr / ctr[0]
        for p in range(1, n_pos):  # too little evidence: keep the previous slot's value
            if imps[p] < min_impressions:
                rel[p] = rel[p - 1]
        prop = np.clip(np.minimum.accumulate(np.minimum(rel, 1.0)), clip, 1.0)
        estimated = True
    return {"propensity": prop.round(6).tolist(), "ctr": ctr.round(6).tolist(), "impressions": imps.astype(int).tolist(),
            "clicks": clicks.astype(int).tolist(), "clip": float(clip), "estimated": estimated}


def propensity_of(curve: dict[str, Any], positions: np.ndarray) -> np.ndarray:
    """Propensity per position from a curve (positions past its end take the last value; -1 -> 1)."""
    prop = np.asarray(curve["propensity"], np.float64)
    pos = np.asarray(positions, np.int64)
    out = prop[np.clip(pos, 0, len(prop) - 1)]
    return np.where(pos < 0, 1.0, out)


# --- linking --------------------------------------------------------------------------------------
def _link(prep: Prepared, imp: pd.DataFrame, link_days: float) -> pd.DataFrame:
    """Per impression: ``clicked`` (any linked event, a view included: the profile was opened),
    ``acted`` (a linked event other than a view) and ``label`` (a linked positive event)."""
    ev = prep.events
    acts = pd.DataFrame({"entity_id": ev["entity_id"].to_numpy(), "candidate_id": ev["candidate_id"].to_numpy(),
                         "session_id": ev["session_id"].to_numpy(), "t": prep.ts, "part": prep.part,
                         "active": prep.engaged_mask(), "positive": prep.positive_mask()})
    imp = imp.copy()
    imp["t"] = ts_values(imp["ts"])
    imp["part"] = prep.split.codes(imp["ts"])
    # (a) events naming their session
    named = acts[acts["session_id"].notna()]
    hit_a = imp[["session_id", "entity_id", "candidate_id", "part"]].reset_index().merge(
        named[["session_id", "entity_id", "candidate_id", "part", "active", "positive"]], how="inner",
        on=["session_id", "entity_id", "candidate_id", "part"])
    # (b) events without one: the latest session of that pair within link_days before the event
    loose = acts[acts["session_id"].isna()].sort_values("t", kind="stable")
    hit_b = pd.DataFrame({"index": np.zeros(0, np.int64), "active": np.zeros(0, bool), "positive": np.zeros(0, bool)})
    if len(loose):
        left = loose[["entity_id", "candidate_id", "t", "part", "active", "positive"]]
        right = imp[["entity_id", "candidate_id", "t", "part"]].reset_index().sort_values("t", kind="stable")
        right = right.rename(columns={"part": "imp_part", "t": "t_imp"})
        merged = pd.merge_asof(left, right, left_on="t", right_on="t_imp", by=["entity_id", "candidate_id"],
                               direction="backward", tolerance=pd.Timedelta(days=link_days))
        merged = merged[merged["index"].notna() & (merged["imp_part"] == merged["part"])]
        hit_b = merged[["index", "active", "positive"]].astype({"index": np.int64})
    hits = pd.concat([hit_a[["index", "active", "positive"]], hit_b], ignore_index=True)
    agg = hits.astype({"active": bool, "positive": bool}).groupby("index")[["active", "positive"]].max()
    idx = agg.index.to_numpy(np.int64)
    for col in ("clicked", "acted", "label"):
        imp[col] = False
    imp.loc[idx, "clicked"] = True
    imp.loc[idx, "acted"] = agg["active"].to_numpy(bool)
    imp.loc[idx, "label"] = agg["positive"].to_numpy(bool)
    return imp


def _session_rows(prep: Prepared, imp: pd.DataFrame, neg_ratio: float, clip: float, link_days: float,
                  propensity_window: str, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    imp = imp.sort_values(["session_id", "position"], kind="stable")
    imp = imp.drop_duplicates(["session_id", "candidate_id"], keep="first").reset_index(drop=True)
    imp = _link(prep, imp, link_days)
    window_part = {"train": 0, "trainval": 1}[propensity_window]
    fit = imp["part"].to_numpy() <= window_part
    curve = position_bias(imp["position"].to_numpy()[fit], imp["clicked"].to_numpy()[fit], clip)
    curve.update({"window": propensity_window, "signal": "any event linked to the shown candidate (view included)",
                  "sessions": int(imp.loc[fit, "session_id"].nunique()), "source": "impressions"})
    n_pos = imp.groupby("session_id")["label"].sum()
    imp = imp[imp["session_id"].map(n_pos).to_numpy() > 0]
    pos = imp[imp["label"]]
    negs = imp[~imp["acted"]]
    negs = negs.iloc[np.argsort(row_keys(seed, negs["session_id"], negs["candidate_id"]), kind="stable")]
    quota = np.ceil(n_pos.reindex(negs["session_id"]).to_numpy() * neg_ratio - 1e-9)
    negs = negs[negs.groupby("session_id").cumcount().to_numpy() < quota]
    rows = pd.concat([pos, negs], ignore_index=True)
    prop = propensity_of(curve, rows["position"].to_numpy())
    label = rows["label"].to_numpy(bool)
    out = pd.DataFrame({
        "session_id": rows["session_id"].to_numpy(),
        "entity_id": rows["entity_id"].to_numpy(),
        "candidate_id": rows["candidate_id"].to_numpy(),
        "position": rows["position"].to_numpy(np.int32),
        "label": label.astype(np.int8),
        "propensity": prop.astype(np.float32),
        "weight": np.where(label, 1.0 / prop, 1.0).astype(np.float32),
        "ts": pd.to_datetime(rows["t"].to_numpy(), utc=True),
        "split": np.asarray(PARTS, dtype=object)[rows["part"].to_numpy(np.int64)],
    })
    return out, curve


def _pseudo_rows(prep: Prepared, neg_ratio: float, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """No sessions (an imported log): one list per (entity, part) of its new positive pairs plus
    random candidates it had not interacted with by the end of that part."""
    nc = prep.n_candidates
    allp = pair_table(prep)
    allp["key"] = allp["e"].to_numpy() * nc + allp["c"].to_numpy()
    pos = pair_table(prep, prep.positive_mask())
    per = pos.groupby(["e", "part"]).size()
    need = np.ceil(per * neg_ratio - 1e-9).astype(np.int64)
    negs = []
    for p in range(3):
        need_p = need[need.index.get_level_values("part") == p]
        need_p = need_p[need_p > 0]
        if not len(need_p):
            continue
        e, c = sample_unseen(need_p.index.get_level_values("e").to_numpy(np.int64), need_p.to_numpy(),
                             int(prep.pool_size[p]), allp.loc[allp["part"] <= p, "key"].to_numpy(), nc,
                             part_rng(seed, p))
        negs.append(pd.DataFrame({"e": e, "c": c, "part": np.full(len(e), p, np.int8)}))
    neg = pd.concat(negs, ignore_index=True) if negs else pd.DataFrame(
        {"e": np.zeros(0, np.int64), "c": np.zeros(0, np.int64), "part": np.zeros(0, np.int8)})
    first_ts = pos.groupby(["e", "part"])["ts"].min()
    neg["ts"] = first_ts.reindex(pd.MultiIndex.from_arrays([neg["e"], neg["part"]])).to_numpy()
    rows = pd.concat([pos[["e", "c", "part", "ts"]].assign(label=1), neg.assign(label=0)], ignore_index=True)
    rows = rows.sort_values(["part", "e", "label"], ascending=[True, True, False], kind="stable")
    ent = prep.entity_ids[rows["e"].to_numpy()]
    part_names = np.asarray(PARTS, dtype=object)[rows["part"].to_numpy(np.int64)]
    out = pd.DataFrame({
        "session_id": pd.Series(ent, dtype=object).radd("pseudo:").to_numpy() + ":" + part_names,
        "entity_id": ent,
        "candidate_id": prep.candidate_ids[rows["c"].to_numpy()],
        "position": np.full(len(rows), -1, np.int32),
        "label": rows["label"].to_numpy(np.int8),
        "propensity": np.ones(len(rows), np.float32),
        "weight": np.ones(len(rows), np.float32),
        "ts": pd.to_datetime(rows["ts"].to_numpy(), utc=True),
        "split": part_names,
    })
    curve = {"propensity": [1.0], "ctr": [], "impressions": [], "clicks": [], "clip": None, "estimated": False,
             "source": "none: the snapshot has no sessions; one pseudo-session per entity and part"}
    return out, curve


def build_ranker(snapshot_uri: str, use_case: str, output: str, *, neg_ratio: float = 2.0,
                 propensity_clip: float = 0.05, split: TimeSplit | None = None, split_at: Any = None,
                 test_days: float = 14.0, val_days: float = 14.0, seed: int = 0,
                 link_days: float = LINK_DAYS, propensity_window: str = "trainval") -> dict[str, Any]:
    """Write the ranker pairs ``output`` (.parquet or .csv), ``X_propensity.json`` and ``X_meta.json``.

    ``propensity_window``: sessions the position-bias model learns from (``train`` or
    ``trainval``; never test). Raises :class:`DataError` when no session has a positive.
    """
    check_output(output)
    if neg_ratio < 0:
        raise ConfigError(f"--neg-ratio must be >= 0 (got {neg_ratio})")
    if propensity_window not in ("train", "trainval"):
        raise ConfigError(f"propensity window must be train or trainval, not {propensity_window!r}")
    if not 0 < propensity_clip <= 1:
        raise ConfigError(f"--propensity-clip must be in (0, 1] (got {propensity_clip})")
    prep = prepare(snapshot_uri, use_case, split, split_at=split_at, test_days=test_days, val_days=val_days)
    imp = prep.snapshot.impressions(prep.uc)
    if imp is not None:
        out, curve = _session_rows(prep, imp, neg_ratio, propensity_clip, link_days, propensity_window, seed)
    else:
        out, curve = _pseudo_rows(prep, neg_ratio, seed)
    if not len(out) or not (out["label"] == 1).any():
        raise DataError(f"no session of {prep.uc.name} led to a positive event "
                        f"({', '.join(prep.uc.positive_events)}); no ranker pairs")
    split_order = pd.Categorical(out["split"], categories=list(PARTS), ordered=True)
    out = out.assign(_o=split_order.codes).sort_values(["_o", "ts", "session_id", "label", "position"],
                                                       ascending=[True, True, True, False, True],
                                                       kind="stable").drop(columns="_o").reset_index(drop=True)
    by = {p: {"positives": int(((out["split"] == p) & (out["label"] == 1)).sum()),
              "negatives": int(((out["split"] == p) & (out["label"] == 0)).sum()),
              "sessions": int(out.loc[out["split"] == p, "session_id"].nunique())} for p in PARTS}
    stats = {
        **prep.provenance(),
        "kind": "ranker",
        "output": str(output),
        "rows": len(out),
        "positives": int((out["label"] == 1).sum()),
        "negatives": int((out["label"] == 0).sum()),
        "sessions": int(out["session_id"].nunique()),
        "by_split": by,
        "propensity_source": curve["source"],
        "max_weight": float(out["weight"].max()),
        "params": {"neg_ratio": float(neg_ratio), "propensity_clip": float(propensity_clip), "seed": int(seed),
                   "link_days": float(link_days), "propensity_window": propensity_window},
        "files": {n: sidecar(output, n).rsplit("/", 1)[-1]
                  for n in (artifacts.PROPENSITY_SIDECAR, artifacts.META_SIDECAR)},
    }
    storage.write_json(sidecar(output, artifacts.PROPENSITY_SIDECAR), {**curve, "use_case": prep.uc.name,
                                                           "split": prep.split.to_dict()})
    write_frame(out, str(output), SCHEMA)
    stats["seconds"] = elapsed(prep)
    storage.write_json(sidecar(output, artifacts.META_SIDECAR), stats)
    log.info("ranker %s: %d rows, %d sessions in %.1fs", prep.uc.name, stats["rows"], stats["sessions"],
             stats["seconds"])
    return stats


def cli_build(args: argparse.Namespace) -> int:
    stats = build_ranker(args.snapshot, args.use_case, args.output, neg_ratio=args.neg_ratio,
                         propensity_clip=args.propensity_clip, split_at=args.split_at, test_days=args.test_days,
                         val_days=args.val_days, seed=args.seed)
    print(f"ranker {stats['use_case']}: {stats['rows']} rows in {stats['sessions']} sessions -> {stats['output']}")
    for p in PARTS:
        b = stats["by_split"][p]
        print(f"  {p:5s}  pos {b['positives']:>8}  neg {b['negatives']:>8}  sessions {b['sessions']:>7}")
    print(f"  propensity: {stats['propensity_source']}; max IPS weight {stats['max_weight']:.2f}  ({stats['seconds']}s)")
    return 0
