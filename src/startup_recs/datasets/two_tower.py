"""Two-tower training pairs (legacy ``generate_two_tower_dataset``).

Rows ``entity_id, candidate_id, label (int8), weight (float32), neg_type (pos|hard|random), ts,
split``:

- *positives*: every (entity, candidate) pair the entity interacted with, in the part (train /
  val / test) of its first event, weighted by the summed event weights of that part;
- *hard negatives*: candidates shown to the entity in a session of that part that it had not
  interacted with by the end of the part, at most ``negative_samples`` per positive;
- *random negatives*: candidates known by the end of the part (some entity interacted with
  them) that this entity had not interacted with by then, filling up to ``negative_samples``
  per positive.

Every negative is unseen *as of its own window* (a train negative may become a test positive:
that is the future, which a train row must not know). Sidecars: ``X_entities.parquet`` /
``X_candidates.parquet`` (id + raw features of every known id), ``X_vocab.json`` (a
:class:`~startup_recs.features.PairEncoder` fitted on the train rows only) and ``X_meta.json``.
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
from startup_recs.core.errors import ConfigError
from startup_recs.data.split import PARTS, TimeSplit, ts_values
from startup_recs.datasets.common import (
    Prepared,
    check_output,
    elapsed,
    entity_filter,
    feature_sidecar,
    pair_table,
    part_rng,
    prepare,
    row_keys,
    sample_unseen,
    sorted_unique,
    write_frame,
)
from startup_recs.features import PairEncoder, save_encoders

log = logging.getLogger(__name__)

SCHEMA = pa.schema([
    pa.field("entity_id", pa.string()),
    pa.field("candidate_id", pa.string()),
    pa.field("label", pa.int8()),
    pa.field("weight", pa.float32()),
    pa.field("neg_type", pa.string()),
    pa.field("ts", pa.timestamp("us", tz="UTC")),
    pa.field("split", pa.string()),
])


def _hard_candidates(prep: Prepared) -> pd.DataFrame:
    """Shown (entity, candidate, part) triples, earliest session per triple; codes, not ids."""
    imp = prep.snapshot.impressions(prep.uc)
    if imp is None:
        return pd.DataFrame({"e": np.zeros(0, np.int64), "c": np.zeros(0, np.int64),
                             "part": np.zeros(0, np.int8), "ts": np.zeros(0, "datetime64[us]")})
    e = prep.entity_codes(imp["entity_id"])
    c = prep.candidate_codes(imp["candidate_id"])  # may extend candidate_ids: call before pair keys
    h = pd.DataFrame({"e": e, "c": c, "part": prep.split.codes(imp["ts"]), "ts": ts_values(imp["ts"])})
    h = h[h["e"] >= 0]
    return h.drop_duplicates(["e", "c", "part"], keep="first").reset_index(drop=True)


def build_two_tower(snapshot_uri: str, use_case: str, output: str, *, negative_samples: int = 5,
                    min_interactions: int = 1, split: TimeSplit | None = None, split_at: Any = None,
                    test_days: float = 14.0, val_days: float = 14.0, seed: int = 0) -> dict[str, Any]:
    """Write the pairs file ``output`` (.parquet or .csv) and its sidecars; return stats.

    ``min_interactions``: entities with fewer events in the train window are dropped entirely.
    Raises :class:`DataError` (bad split, nothing left) or :class:`ConfigError` (bad use case or
    parameters) before anything is written.
    """
    check_output(output)
    if negative_samples < 0:
        raise ConfigError(f"--negative-samples must be >= 0 (got {negative_samples})")
    prep = prepare(snapshot_uri, use_case, split, split_at=split_at, test_days=test_days, val_days=val_days)
    keep = entity_filter(prep, min_interactions, 0)
    shown = _hard_candidates(prep)
    nc = prep.n_candidates  # fixed from here on: pair keys are e * nc + c
    pairs = pair_table(prep)
    pairs["key"] = pairs["e"].to_numpy() * nc + pairs["c"].to_numpy()
    pos = pairs[keep[pairs["e"].to_numpy()]].reset_index(drop=True)
    k = int(negative_samples)

    # positives per (entity, part): the negative budget and the random negatives' ts
    grp = pos.groupby(["e", "part"], sort=True)
    budget = (grp.size() * k).rename("budget")
    last_ts = grp["ts"].max().rename("ts")

    # hard negatives: shown, not interacted with by the end of that part, within budget
    first_part = pd.Series(pairs["part"].to_numpy(), index=pairs["key"].to_numpy())
    hk = shown["e"].to_numpy() * nc + shown["c"].to_numpy()
    fp = first_part.reindex(hk).to_numpy()
    unseen = np.isnan(fp) | (fp > shown["part"].to_numpy())
    hard = shown[unseen & keep[shown["e"].to_numpy()]].copy()
    hard["key"] = hk[unseen & keep[shown["e"].to_numpy()]]
    hard = hard.iloc[np.argsort(row_keys(seed, hard["e"], hard["c"], hard["part"]), kind="stable")]
    hard["rank"] = hard.groupby(["e", "part"]).cumcount()
    cap = budget.reindex(pd.MultiIndex.from_arrays([hard["e"], hard["part"]]), fill_value=0).to_numpy()
    hard = hard[hard["rank"].to_numpy() < cap]

    # random negatives: fill each (entity, part) up to its budget, unseen as of the part's end
    n_hard = hard.groupby(["e", "part"]).size().reindex(budget.index, fill_value=0)
    need = (budget - n_hard).clip(lower=0)
    rand_parts, short = [], 0
    for p in range(3):
        need_p = need[need.index.get_level_values("part") == p]
        need_p = need_p[need_p > 0]
        if not len(need_p):
            continue
        forbidden = np.concatenate([pairs.loc[pairs["part"] <= p, "key"].to_numpy(),
                                    hard.loc[hard["part"] == p, "key"].to_numpy()])
        ents = need_p.index.get_level_values("e").to_numpy(np.int64)
        e, c = sample_unseen(ents, need_p.to_numpy(), int(prep.pool_size[p]), forbidden, nc, part_rng(seed, p))
        short += int(need_p.sum()) - len(e)
        rand_parts.append(pd.DataFrame({"e": e, "c": c, "part": np.full(len(e), p, np.int8)}))
    rand = pd.concat(rand_parts, ignore_index=True) if rand_parts else pd.DataFrame(
        {"e": np.zeros(0, np.int64), "c": np.zeros(0, np.int64), "part": np.zeros(0, np.int8)})
    rand["ts"] = last_ts.reindex(pd.MultiIndex.from_arrays([rand["e"], rand["part"]])).to_numpy()

    rows = pd.concat([
        pd.DataFrame({"e": pos["e"], "c": pos["c"], "label": 1, "weight": pos["weight"], "neg_type": "pos",
                      "ts": pos["ts"], "part": pos["part"]}),
        pd.DataFrame({"e": hard["e"], "c": hard["c"], "label": 0, "weight": 1.0, "neg_type": "hard",
                      "ts": hard["ts"], "part": hard["part"]}),
        pd.DataFrame({"e": rand["e"], "c": rand["c"], "label": 0, "weight": 1.0, "neg_type": "random",
                      "ts": rand["ts"], "part": rand["part"]}),
    ], ignore_index=True)
    rows = rows.sort_values(["part", "e", "label", "c"], ascending=[True, True, False, True], kind="stable")
    cand_ids = prep.candidate_ids
    out = pd.DataFrame({
        "entity_id": prep.entity_ids[rows["e"].to_numpy()],  # object arrays sharing one str per id
        "candidate_id": cand_ids[rows["c"].to_numpy()],
        "label": rows["label"].to_numpy(np.int8),
        "weight": rows["weight"].to_numpy(np.float32),
        "neg_type": rows["neg_type"].to_numpy(),
        "ts": pd.to_datetime(rows["ts"].to_numpy(), utc=True),
        "split": np.asarray(PARTS, dtype=object)[rows["part"].to_numpy(np.int64)],
    })

    # sidecars: every known id with raw features; vocabularies from train rows only
    snap, uc = prep.snapshot, prep.uc
    ent_feats, cand_feats = snap.entity_features(uc), snap.candidate_features(uc)
    ent_known = np.concatenate([snap.known_ids(uc, "entity"), prep.entity_ids])
    cand_known = np.concatenate([snap.known_ids(uc, "candidate"), cand_ids])
    train = (rows["part"] == 0).to_numpy()
    encoder = PairEncoder.fit(ent_feats, cand_feats, prep.entity_ids[sorted_unique(rows["e"].to_numpy()[train])],
                              cand_ids[sorted_unique(rows["c"].to_numpy()[train])],
                              entity_kind=uc.entity_kind, candidate_kind=uc.candidate_kind)

    counts = pd.DataFrame({"part": rows["part"].to_numpy(), "t": rows["neg_type"].to_numpy()}).value_counts()
    by = {p: {t: int(n) for (q, t), n in counts.items() if q == i} for i, p in enumerate(PARTS)}
    stats = {
        **prep.provenance(),
        "kind": "two_tower",
        "output": str(output),
        "rows": len(out),
        "positives": len(pos),
        "negatives": len(hard) + len(rand),
        "hard_negatives": len(hard),
        "random_negatives": len(rand),
        "negatives_short": short,
        "by_split": by,
        "entities": len(sorted_unique(rows["e"].to_numpy())),
        "candidates": len(sorted_unique(rows["c"].to_numpy())),
        "dropped_entities": int((~keep).sum()),
        "params": {"negative_samples": k, "min_interactions": int(min_interactions), "seed": int(seed)},
        "entity_kind": uc.entity_kind,
        "candidate_kind": uc.candidate_kind,
        "entity_spec": encoder.entity.spec.to_dict(),
        "candidate_spec": encoder.candidate.spec.to_dict(),
        "files": {n: sidecar(output, n).rsplit("/", 1)[-1]
                  for n in (artifacts.ENTITIES_SIDECAR, artifacts.CANDIDATES_SIDECAR, artifacts.VOCAB_SIDECAR,
                            artifacts.META_SIDECAR)},
    }
    write_frame(feature_sidecar(ent_known, ent_feats, "entity_id"), sidecar(output, artifacts.ENTITIES_SIDECAR))
    write_frame(feature_sidecar(cand_known, cand_feats, "candidate_id"), sidecar(output, artifacts.CANDIDATES_SIDECAR))
    save_encoders(sidecar(output, artifacts.VOCAB_SIDECAR), encoder)
    write_frame(out, str(output), SCHEMA)
    stats["seconds"] = elapsed(prep)
    storage.write_json(sidecar(output, artifacts.META_SIDECAR), stats)  # last: its presence marks a whole dataset
    log.info("two-tower %s: %d rows (%d positives) in %.1fs", uc.name, stats["rows"], stats["positives"],
             stats["seconds"])
    return stats


def cli_build(args: argparse.Namespace) -> int:
    stats = build_two_tower(args.snapshot, args.use_case, args.output, negative_samples=args.negative_samples,
                            min_interactions=args.min_interactions, split_at=args.split_at,
                            test_days=args.test_days, val_days=args.val_days, seed=args.seed)
    by = stats["by_split"]
    print(f"two-tower {stats['use_case']}: {stats['rows']} rows -> {stats['output']}")
    for p in PARTS:
        print(f"  {p:5s}  pos {by[p].get('pos', 0):>8}  hard {by[p].get('hard', 0):>8}  random {by[p].get('random', 0):>8}")
    print(f"  entities {stats['entities']}  candidates {stats['candidates']}  "
          f"split {stats['split']['val_start']} / {stats['split']['split_at']}  ({stats['seconds']}s)")
    return 0
