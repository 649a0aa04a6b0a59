"""Two-tower quality in the demo's two-epoch budget: the settings and the shared token tables.

    python benchmarks/bench_two_tower_quality.py --workdir demo_out [--seeds 0,1,2] [--use-case UC]

Reads the two-tower datasets and the snapshot a pipeline run left under ``--workdir`` (``recs demo
--no-serve`` or ``make demo``), fits the stage-1 two-tower (``fit_on="train"``, two epochs, 64-d)
of each use case once per model seed and variant, and prints its validation NDCG@10, all entities
and each segment, beside the content retriever's on the same queries. Variants:

- ``batch 1024, lr 3e-3, T 0.1``: the demo's settings before the shared tokens (58 steps an epoch
  on startup_developer at demo size);
- ``batch 256, lr 1e-3, T 0.07``: the demo's settings now, without shared tokens;
- ``+ shared tokens``: the same with the shared token tables (the trainer's default, the demo now).

Protocol: the trainer's own validation (:mod:`startup_recs.train.two_tower_eval`: relevant =
validation positives new to the entity, its train-window positives excluded, every candidate
ranked); segments by the entity's events before the validation start, as the evaluation counts
them (:class:`~startup_recs.serving.data.ServingData` from the snapshot). Two epochs leave a large
seed-to-seed spread, so every row is a mean over ``--seeds`` (its range is printed too).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from startup_recs.core.config import segment_of
from startup_recs.core.storage import read_json
from startup_recs.models.two_tower import embed_all
from startup_recs.serving.content import ContentRetriever
from startup_recs.serving.data import ServingData
from startup_recs.train.two_tower import TwoTowerConfig, fit
from startup_recs.train.two_tower_data import load_dataset
from startup_recs.train.two_tower_eval import Queries, build_queries, embedding_scorer, rank_metrics

SEGMENTS = ("all", "cold", "warm", "hot")
BASE = TwoTowerConfig(epochs=2, embedding_dim=64, progress=False, fit_on="train")
VARIANTS: dict[str, TwoTowerConfig] = {
    "batch 1024, lr 3e-3, T 0.1": dataclasses.replace(BASE, batch_size=1024, lr=3e-3, temperature=0.1,
                                                      shared_tokens=False),
    "batch 256, lr 1e-3, T 0.07": dataclasses.replace(BASE, batch_size=256, lr=1e-3, temperature=0.07,
                                                      shared_tokens=False),
    "+ shared tokens": dataclasses.replace(BASE, batch_size=256, lr=1e-3, temperature=0.07, shared_tokens=True),
}


def datasets(workdir: Path) -> dict[str, Path]:
    """use case -> two-tower pairs file of the run under ``workdir``."""
    out = {}
    for meta in sorted(workdir.glob("kfp_root/*/**/dataset-two-tower/dataset/two_tower*_meta.json")):
        out[read_json(str(meta))["use_case"]] = meta.with_name(meta.name.replace("_meta.json", ".parquet"))
    return out


def segment_queries(q: Queries, segments: np.ndarray) -> dict[str, Queries]:
    """``q`` split by each query's segment (``segments[i]`` of query ``i``), plus ``all``."""
    out = {"all": q}
    ex_q, ex_c = q.exclude
    rel_q, rel_c = q.relevant
    for seg in SEGMENTS[1:]:
        keep = segments == seg
        if not keep.any():
            continue
        remap = np.cumsum(keep) - 1
        out[seg] = Queries(q.entity_rows[keep], (remap[ex_q[keep[ex_q]]], ex_c[keep[ex_q]]),
                           (remap[rel_q[keep[rel_q]]], rel_c[keep[rel_q]]))
    return out


def ndcg(scorer_of, queries: dict[str, Queries], n_candidates: int) -> dict[str, float]:
    return {seg: rank_metrics(scorer_of(sub), sub, n_candidates, (10,), chunk=256)["ndcg@10"]
            for seg, sub in queries.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a pipeline run's workdir (recs demo / make demo)")
    p.add_argument("--seeds", default="0,1,2", help="model seeds each row averages over")
    p.add_argument("--use-case", action="append", help="only these use cases (default: every one of the run)")
    args = p.parse_args(argv)
    work = Path(args.workdir)
    found = datasets(work)
    snapshot = next(iter(sorted(work.glob("kfp_root/*/extract/snapshot"))), None)
    if not found or snapshot is None:
        print(f"error: no two-tower datasets and snapshot under {work}/kfp_root (run `recs demo --no-serve` first)",
              file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    torch.set_num_threads(1)
    rows = []
    for uc, data_uri in found.items():
        if args.use_case and uc not in args.use_case:
            continue
        data = load_dataset(str(data_uri), "train")
        p_ = data.pairs
        q = build_queries(p_["entity_row"].to_numpy(), p_["candidate_row"].to_numpy(), p_["label"].to_numpy(),
                          p_["split"].to_numpy(), ("train",), "val")
        val_start = pd.Timestamp(data.meta["split"]["val_start"])
        serving = ServingData.from_snapshot(str(snapshot), uc, val_start)
        ent_ids = [str(e) for e in data.entity_ids]
        segments = np.array([segment_of(serving.interaction_count(ent_ids[r])) for r in q.entity_rows])
        queries = segment_queries(q, segments)
        # content on the dataset's candidate order (a candidate the serving data lacks never ranks)
        content = ContentRetriever(serving)
        cols = np.array([serving.candidate_index.get(str(c), -1) for c in data.candidate_ids])

        def content_scorer(sub: Queries, content=content, cols=cols, ent_ids=ent_ids):
            def score(qi: np.ndarray) -> torch.Tensor:
                s = content.score([ent_ids[r] for r in sub.entity_rows[qi]])
                return torch.from_numpy(np.where(cols >= 0, s[:, np.maximum(cols, 0)], -np.inf).astype(np.float32))
            return score

        ref = ndcg(content_scorer, queries, len(data.candidate_ids))
        for name, variant in VARIANTS.items():
            per_seed, secs = [], []
            for seed in seeds:
                with tempfile.TemporaryDirectory(prefix="bench-tt-") as tmp:
                    t0 = time.perf_counter()
                    model, _ = fit(dataclasses.replace(variant, seed=seed), str(data_uri), tmp)
                    secs.append(time.perf_counter() - t0)
                e = torch.from_numpy(embed_all(model, "entity", data.entities))
                c = torch.from_numpy(embed_all(model, "candidate", data.candidates))
                per_seed.append(ndcg(lambda sub, e=e, c=c: embedding_scorer(e, c, sub), queries, len(data.candidate_ids)))
            mean = {seg: statistics.fmean(r[seg] for r in per_seed) for seg in queries}
            row = {"bench": "two_tower_quality", "use_case": uc, "variant": name, "seeds": seeds,
                   "val_ndcg@10": {k: round(v, 4) for k, v in mean.items()},
                   "val_ndcg@10_all_range": [round(min(r["all"] for r in per_seed), 4),
                                             round(max(r["all"] for r in per_seed), 4)],
                   "content_val_ndcg@10": {k: round(v, 4) for k, v in ref.items()},
                   "queries": {k: len(v) for k, v in queries.items()}, "fit_s": round(statistics.fmean(secs), 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| use case | variant | all (range over seeds) | cold | warm | hot | content all / hot | fit s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        v, lo_hi, ref = r["val_ndcg@10"], r["val_ndcg@10_all_range"], r["content_val_ndcg@10"]
        cells = [f"{v['all']:.4f} ({lo_hi[0]:.4f}-{lo_hi[1]:.4f})"] + [f"{v[s]:.4f}" if s in v else "-" for s in SEGMENTS[1:]]
        print(f"| {r['use_case']} | {r['variant']} | " + " | ".join(cells)
              + f" | {ref['all']:.4f} / {ref.get('hot', float('nan')):.4f} | {r['fit_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
