"""Where the re-ranker's quality comes from, and what more data or better features could add.

Reads the ranker training runs a pipeline left under ``--workdir`` (``recs demo`` or
``recs pipeline run-local``: each ``train-ranker`` output's config names its dataset and stage-1
retrievers), rebuilds each use case's training lists once, and refits the ranker's chosen learner
(the same hyperparameters) under these scenarios, printing the holdout NDCG@10 of each:

- ``as trained``: the trained ranker's features on its validation window's lists (a run with
  ``ranker_windows > 1`` also learnt from earlier windows; the scenarios leave them out);
- ``- <group>``: one feature group left out (each retriever's columns, the match components, the
  side attributes, popularity and recency, entity activity, the pool columns): what it adds;
- ``another negative draw``: the same lists with another seeded draw of the negatives each list
  keeps (``extra_negatives``), holdout included: the noise every other row should be read against;
- ``half the lists``: half of the training entities' lists (the holdout unchanged): whether more
  training lists (more validation windows) would help;
- only on a synthetic database (``synth_meta``, written by ``recs synth`` / ``recs demo``):
  ``+ planted match`` and ``+ planted taste``, the world's own feature-match and latent-taste
  terms of each (entity, candidate) pair as one extra column each. The first says whether the
  ranker already knows all a profile can say; the second what a perfect collaborative estimate
  of the hidden taste would add.

Why: ``oracle@pool`` and ``ranking_efficiency`` (the evaluation) say how far a ranking is from the
best order of its pool; this says whether the gap is features, data, or signal no model here has.

    .venv/bin/python benchmarks/bench_ranker_signal.py --workdir demo_out      # ~1-2 min per use case

Prints a Markdown table and one JSON line per scenario (``{"bench": "ranker_signal", ...}``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from startup_recs.core.usecases import get_use_case
from startup_recs.serving.pool import PoolSpec
from startup_recs.train.ranker import RankerTrainConfig, fit, holdout_split
from startup_recs.train.ranker_inputs import dataset_sidecar, load_stage1, training_lists
from startup_recs.train.ranker_lists import ListData, negatives_seed, sample_negatives

# feature group -> a test on a column name
GROUPS: dict[str, Callable[[str], bool]] = {
    "content": lambda n: n.startswith("content_"),
    "two_tower": lambda n: n.startswith("two_tower_"),
    "als": lambda n: n.startswith("als_"),
    "item2item": lambda n: n.startswith("item2item_"),
    "match components": lambda n: n.startswith("match_"),
    "side attributes": lambda n: n.startswith(("ent_", "cand_")),
    "popularity, recency": lambda n: n.startswith(("pop_", "recency_")),
    "entity activity": lambda n: n.startswith(("entity_", "segment_")),
    "pool columns": lambda n: n.startswith("pool_"),
}


def ranker_runs(workdir: Path) -> list[Path]:
    """Every ``train-ranker`` output config under ``workdir`` (kfp.local's layout), newest run first."""
    found = sorted(workdir.glob("kfp_root/*/**/train-ranker/model/ranker_*_config.json"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    seen: set[str] = set()
    out = []
    for path in found:
        uc = json.loads(path.read_text()).get("use_case")
        if uc not in seen:
            seen.add(uc)
            out.append(path)
    return out


def train_config(saved: dict) -> RankerTrainConfig:
    """The run's :class:`RankerTrainConfig` with its chosen learner (no new search)."""
    train = saved.get("train", {})
    names = {f.name for f in dataclasses.fields(RankerTrainConfig)}
    kw = {k: v for k, v in train.items() if k in names}
    kw.update(use_case=saved["use_case"], learner=saved.get("learner", "lightgbm"), tune_trials=0)
    kw["retrievers"] = tuple(kw.get("retrievers", ()))  # JSON made it a list
    kw["windows"] = 1  # the validation window's lists only
    if saved.get("pool"):  # the saved spec keeps the priority order (``train.pool`` is a JSON object)
        kw["pool"] = dict(PoolSpec.from_dict(saved["pool"]).sizes)
    return RankerTrainConfig(**kw)


def without(d: ListData, drop: Callable[[str], bool]) -> ListData:
    keep = [i for i, n in enumerate(d.names) if not drop(n)]
    return dataclasses.replace(d, X=np.ascontiguousarray(d.X[:, keep]), names=[d.names[i] for i in keep])


def with_columns(d: ListData, cols: dict[str, np.ndarray]) -> ListData:
    X = np.hstack([d.X, *(np.asarray(c, np.float32)[:, None] for c in cols.values())])
    return dataclasses.replace(d, X=X, names=[*d.names, *cols])


def half_lists(d: ListData, cfg: RankerTrainConfig) -> ListData:
    """The holdout lists plus a seeded half of the others (``fit`` redraws the same holdout)."""
    held = holdout_split(d.entity, cfg.holdout, cfg.seed)
    keep = held | (np.random.default_rng(cfg.seed + 1).random(d.n_lists) < 0.5)
    return d.subset(np.flatnonzero(keep))


def planted_columns(d: ListData, candidate_ids: np.ndarray, use_case: str, db: Path) -> dict[str, np.ndarray] | None:
    """The planted match and taste terms of each row's pair, or None for a non-synthetic database."""
    from startup_recs import synth
    from startup_recs.data.appdb import db_url

    meta = synth.read_meta(db_url(str(db))) if db.is_file() else None
    if meta is None:
        return None
    w, _ = synth.build_world(str(meta["size"]), int(meta["seed"]))
    uc = get_use_case(use_case)
    role = synth.role_of(use_case)
    s_index = {s: i for i, s in enumerate(w.S.ids.tolist())}
    u_index = {u: i for i, u in enumerate(w.U.ids.tolist())}
    ent_index, cand_index = (s_index, u_index) if uc.entity_is_startup else (u_index, s_index)
    ent = np.repeat(np.array([ent_index[str(e)] for e in d.entity]), np.diff(d.offsets))
    cand = np.array([cand_index[str(c)] for c in candidate_ids])[d.cand]
    s, u = (ent, cand) if uc.entity_is_startup else (cand, ent)
    F, G = w.F[role], w.G[role]
    n_match = F.shape[1] - w.S.taste.shape[1]  # F = [match factors, B * taste]
    return {"planted_match": np.einsum("nd,nd->n", F[s, :n_match], G[u, :n_match]),
            "planted_taste": np.einsum("nd,nd->n", F[s, n_match:], G[u, n_match:])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="demo_out", help="a `recs demo` / `run-local` work directory")
    p.add_argument("--use-case", action="append", help="repeatable; default: every trained ranker")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.workdir)
    runs = ranker_runs(work)
    if args.use_case:
        runs = [r for r in runs if json.loads(r.read_text())["use_case"] in args.use_case]
    if not runs:
        print(f"bench_ranker_signal: no ranker training run under {work}/kfp_root (run `make demo` first)",
              file=sys.stderr)
        return 2
    results = []
    print("| use case | scenario | features | train lists | holdout NDCG@10 | vs as trained |")
    print("|---|---|---:|---:|---:|---:|")
    for path in runs:
        saved = json.loads(path.read_text())
        cfg = train_config(saved)
        train = saved["train"]
        t0 = time.perf_counter()
        # every row once (no negatives dropped), then the trainer's own draw: the lists it learnt from
        full, info = training_lists(dataclasses.replace(cfg, extra_negatives=0), train["data"], train["retrievers_dir"])
        n_neg = cfg.extra_negatives if cfg.lists == "pool" else 0
        lists = sample_negatives(full, n_neg, negatives_seed(cfg)) if n_neg > 0 else full
        build_s = time.perf_counter() - t0
        scenarios: list[tuple[str, ListData]] = [("as trained", lists)]
        if n_neg > 0:
            scenarios.append(("another negative draw", sample_negatives(full, n_neg, negatives_seed(cfg) + 100)))
        scenarios += [(f"- {g}", without(lists, f)) for g, f in GROUPS.items() if any(map(f, lists.names))]
        scenarios.append(("half the lists", half_lists(lists, cfg)))
        planted = None
        db = work / "marketplace.db"
        if db.is_file():
            data = load_stage1(train["retrievers_dir"], cfg.use_case, until=pd.Timestamp(info["val_start"]),
                               snapshot=dataset_sidecar(train["data"]).get("snapshot"))
            planted = planted_columns(lists, data.candidate_ids, cfg.use_case, db)
        if planted is not None:
            scenarios.append(("+ planted match", with_columns(lists, {"planted_match": planted["planted_match"]})))
            scenarios.append(("+ planted taste", with_columns(lists, {"planted_taste": planted["planted_taste"]})))
        base = None
        for name, d in scenarios:
            t1 = time.perf_counter()
            r = fit(d, cfg)
            v = float(r.metrics.get("holdout_ndcg@10", float("nan")))
            base = v if base is None else base
            row = {"bench": "ranker_signal", "use_case": cfg.use_case, "scenario": name, "learner": cfg.learner,
                   "features": len(d.names), "train_lists": int(r.metrics.get("train_lists", 0)),
                   "holdout_ndcg@10": round(v, 4), "ratio": round(v / base, 3) if base else None,
                   "fit_s": round(time.perf_counter() - t1, 1), "lists_build_s": round(build_s, 1)}
            results.append(row)
            print(f"| {cfg.use_case} | {name} | {row['features']} | {row['train_lists']} | {v:.4f} | "
                  f"{row['ratio']:.3f}× |", flush=True)
    print()
    for row in results:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
