"""Re-ranker serving latency per request: pool sizes 200 and 400, MLP and LightGBM LambdaRank.

One request re-ranks one entity's candidate pool. Per scenario (learner x pool size m) it times,
one thread, over many entities:

- ``features``: :func:`startup_recs.serving.ranking_features.build` over the m pool candidates
  (within-pool ranks / z-scores / list positions of four retrievers, popularity, recency,
  entity activity, match components, side attributes);
- ``score``: the learner on the built ``[m, f]`` matrix (numpy MLP, or the LightGBM booster
  loaded from its text model);
- ``rerank``: ``Reranker.score`` = features + score, what the Recommender calls per request;
- ``pool + rerank``: building the hybrid pool (each retriever's top-N over the whole catalogue,
  their scores of the union) plus ``rerank``: the ranker's whole share of a request.

The catalogue is ``--candidates`` (default 100,000) candidates with feature tables (the tiny
synthetic marketplace's profiles repeated) and random 64-d two-tower / ALS embeddings, content
and popularity retrievers; the boosters are trained on random labels with the default tree
shape (speed does not depend on what the trees learned, only on their count and depth). The
predictor's p99 budget for a whole request at 100k candidates is 10 ms.

    .venv/bin/python benchmarks/bench_ranker.py                   # ~1 min
    .venv/bin/python benchmarks/bench_ranker.py --candidates 20000 --requests 100

Prints a Markdown table and one JSON line per scenario (``{"bench": "ranker", ...}``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from startup_recs.models.ranker import RankerConfig, RankerMLP, save, save_booster  # noqa: E402
from startup_recs.serving import ranking_features  # noqa: E402
from startup_recs.serving.data import ServingData  # noqa: E402
from startup_recs.serving.pool import PoolSpec, build_pool  # noqa: E402
from startup_recs.serving.rerank import Reranker  # noqa: E402
from startup_recs.serving.retrievers import EmbeddingRetriever, load_retrievers  # noqa: E402

BUDGET_MS = 10.0
POOLS = {200: {"content": 100, "two_tower": 50, "als": 50, "item2item": 0},
         400: {"content": 200, "two_tower": 100, "als": 100, "item2item": 0}}


def _world(tmp: Path, use_case: str, n_candidates: int):
    """Serving data of ``n_candidates`` candidates with profiles, content + popularity + random
    two-tower / ALS retrievers."""
    from startup_recs import synth
    from startup_recs.data import appdb
    from startup_recs.data.extract import extract_db

    tables = synth.generate("tiny", 0)
    appdb.write_db({k: v for k, v in tables.items() if k != "oracle"}, str(tmp / "m.db"))
    extract_db(str(tmp / "m.db"), str(tmp / "snap"))
    small = ServingData.from_snapshot(str(tmp / "snap"), use_case)
    cf = small.candidate_features
    reps = int(np.ceil(n_candidates / len(cf)))
    big = pd.concat([cf] * reps).iloc[:n_candidates].copy()
    big.index = pd.Index([f"c{i:07d}" for i in range(len(big))], name=cf.index.name)
    rng = np.random.default_rng(0)
    data = ServingData(use_case=use_case, until=small.until, candidate_ids=big.index.to_numpy(str),
                       popularity=rng.gamma(0.5, 4.0, len(big)).astype(np.float32),
                       recency_days=rng.uniform(0, 200, len(big)).astype(np.float32),
                       entity_counts=small.entity_counts, seen={}, entity_features=small.entity_features,
                       candidate_features=big)
    retrievers = dict(load_retrievers(str(tmp / "none"), data))  # content, popularity
    ents = data.known_entities()
    for name in ("two_tower", "als"):
        retrievers[name] = EmbeddingRetriever(name, data, ents, rng.normal(size=(len(ents), 64)).astype(np.float32),
                                              rng.normal(size=(data.n_candidates, 64)).astype(np.float32))
    return data, retrievers


def _rankers(tmp: Path, data: ServingData, use_case: str) -> dict[str, Reranker]:
    """An MLP (64, 32) and a LightGBM booster of the default shape, saved and loaded as bundles."""
    import lightgbm as lgb

    from startup_recs.models.ranker_lgbm import booster_to_text
    from startup_recs.train.ranker import RankerTrainConfig
    from startup_recs.train.ranker_lgbm import lgb_params

    names = ranking_features.feature_names(data)
    f = len(names)
    out: dict[str, Reranker] = {}
    save(RankerMLP(f, (64, 32)), RankerConfig(use_case=use_case, features=names, hidden=[64, 32], mean=[0.0] * f,
                                              std=[1.0] * f), str(tmp / "mlp"))
    out["mlp"] = Reranker.load(str(tmp / "mlp"), use_case)
    cfg = RankerTrainConfig(use_case=use_case)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, f)).astype(np.float32)
    y = (rng.random(20_000) < 0.05).astype(np.int32) * 3
    params = {**lgb_params(cfg, 3), "min_data_in_leaf": 20}
    booster = lgb.train(params, lgb.Dataset(X, y, group=np.full(100, 200)), num_boost_round=cfg.lgb_rounds // 2)
    save_booster(booster_to_text(booster), RankerConfig(use_case=use_case, features=names, hidden=[], mean=[], std=[],
                                                        learner="lightgbm"), str(tmp / "lightgbm"))
    out["lightgbm"] = Reranker.load(str(tmp / "lightgbm"), use_case)
    return out


_COUNTER = {"i": 0}


def nxt_index(n: int) -> int:
    """Round-robin index over ``n`` prepared inputs."""
    _COUNTER["i"] += 1
    return _COUNTER["i"] % n


def _time(fn, reps: int) -> dict[str, float]:
    """Milliseconds: median / p95 / p99 wall, median CPU (what to read on a busy machine)."""
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    a = np.array(wall) * 1e3
    return {"p50_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "cpu_p50_ms": float(np.median(cpu) * 1e3)}


def _scenario(rr: Reranker, pools: list, picks: list[str], spec: PoolSpec, data: ServingData, retrievers: dict,
              use_case: str, reps: int) -> dict[str, dict[str, float]]:
    """The four timings of one learner x pool size (see the module docstring)."""
    feats = [ranking_features.build(use_case, p.entity_id, p.cand, p.scores, data, rr.retrievers, p.listed)[0]
             for p in pools]

    def features() -> None:
        p = pools[nxt_index(len(pools))]
        ranking_features.build(use_case, p.entity_id, p.cand, p.scores, data, rr.retrievers, p.listed)

    def whole() -> None:
        e = picks[nxt_index(len(picks))]
        rr.score_pool(build_pool(retrievers, data, e, spec, route="content", score_names=rr.retrievers), data)

    return {
        "features": _time(features, reps),
        "score": _time(lambda: rr.score_features(feats[nxt_index(len(feats))]), reps),
        "rerank": _time(lambda: rr.score_pool(pools[nxt_index(len(pools))], data), reps),
        "pool + rerank": _time(whole, max(20, reps // 4)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--use-case", default="startup_developer")
    ap.add_argument("--candidates", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        data, retrievers = _world(Path(d), args.use_case, args.candidates)
        rankers = _rankers(Path(d), data, args.use_case)
        rng = np.random.default_rng(1)
        ents = [e for e in data.known_entities() if data.entity_row(e) is not None]
        picks = [ents[i] for i in rng.integers(0, len(ents), args.requests)]
        results = []
        for m, sizes in POOLS.items():
            spec = PoolSpec.of(sizes)
            pools = [build_pool(retrievers, data, e, spec, route="content", score_names=ranking_features.RETRIEVERS)
                     for e in picks[:50]]
            for learner, rr in rankers.items():
                rr.check(data)
                row = _scenario(rr, pools, picks, spec, data, retrievers, args.use_case, args.requests)
                results.append({"learner": learner, "pool": m, "pool_actual": float(np.mean([len(p) for p in pools])),
                                "features": len(rr.features), "candidates": data.n_candidates, **row})
        print(f"\nre-rank latency per request, {data.n_candidates:,} candidates, 1 thread "
              f"(budget: {BUDGET_MS:.0f} ms p99 for the whole request)\n")
        print("| learner | pool | step | p50 ms | p95 ms | p99 ms | CPU p50 ms |\n|---|---:|---|---:|---:|---:|---:|")
        for r in results:
            for step in ("features", "score", "rerank", "pool + rerank"):
                t = r[step]
                print(f"| {r['learner']} | {r['pool']} ({r['pool_actual']:.0f}) | {step} | {t['p50_ms']:.2f} | "
                      f"{t['p95_ms']:.2f} | {t['p99_ms']:.2f} | {t['cpu_p50_ms']:.2f} |")
        print()
        for r in results:
            print(json.dumps({"bench": "ranker", **r, "budget_p99_ms": BUDGET_MS}))


if __name__ == "__main__":
    main()
