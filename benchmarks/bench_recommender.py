"""In-process latency of ``Recommender.recommend`` (no HTTP): per route, at a given catalogue size.

Synthetic serving data (developer profiles with skills and location, power-law popularity),
ALS-style factors for the warm/hot routes, content for cold. Reports p50/p99 in ms and requests/s
of one thread; the predictor's HTTP overhead comes on top.

    .venv/bin/python benchmarks/bench_recommender.py [--candidates 100000 --dim 64 --requests 300]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def build(n_c: int, n_e: int, dim: int, seed: int = 0):
    from startup_recs.serving.data import ServingData
    from startup_recs.serving.recommender import Recommender
    from startup_recs.serving.retrievers import EmbeddingRetriever, load_retrievers

    rng = np.random.default_rng(seed)
    skills = np.array(["python", "go", "rust", "ml", "react", "sql", "k8s", "java", "swift", "c++"], dtype=object)
    cities = np.array(["Berlin", "Paris", "Lisbon", "Oslo", "Rome"], dtype=object)
    cand_ids = [f"u{i}" for i in range(n_c)]
    cf = pd.DataFrame({"skills": [list(rng.choice(skills, rng.integers(1, 4), replace=False)) for _ in range(n_c)],
                       "location": rng.choice(cities, n_c)}, index=pd.Index(cand_ids, name="candidate_id"))
    ent_ids = [f"s{i}" for i in range(n_e)]
    ef = pd.DataFrame({"skills_needed": [list(rng.choice(skills, 2, replace=False)) for _ in range(n_e)],
                       "location": rng.choice(cities, n_e)}, index=pd.Index(ent_ids, name="entity_id"))
    # events: entity i has i % 40 interactions (cold, warm and hot entities)
    n_ev = [i % 40 for i in range(n_e)]
    p = 1 / np.arange(1, n_c + 1) ** 0.8
    ev = pd.DataFrame({"entity_id": np.repeat(ent_ids, n_ev),
                       "candidate_id": np.array(cand_ids)[rng.choice(n_c, sum(n_ev), p=p / p.sum())],
                       "ts": pd.Timestamp("2026-01-01", tz="UTC"), "weight": 1.0})
    data = ServingData.from_events(ev, "startup_developer", None, entity_features=ef, candidate_features=cf)
    retr = load_retrievers("/nonexistent", data)  # content + popularity
    retr["als"] = EmbeddingRetriever("als", data, ent_ids, rng.normal(size=(n_e, dim)).astype(np.float32),
                                     rng.normal(size=(n_c, dim)).astype(np.float32))
    return Recommender(data, retr), ent_ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=100_000)
    ap.add_argument("--entities", type=int, default=2_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--limit", type=int, default=10)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rec, ent_ids = build(args.candidates, args.entities, args.dim)
    print(f"built {args.candidates} candidates, {args.entities} entities in {time.perf_counter() - t0:.1f}s")
    by_seg: dict[str, list[str]] = {}
    for e in ent_ids:
        by_seg.setdefault(rec.router.route(e)[0] + ":" + rec.router.route(e)[1], []).append(e)
    print(f"| {'route':<14} | {'p50 ms':>7} | {'p99 ms':>7} | {'req/s (1 thread)':>16} |")
    print(f"|{'-' * 16}|{'-' * 9}|{'-' * 9}|{'-' * 18}|")
    for route, ids in sorted(by_seg.items()):
        for e in ids[:5]:
            rec.recommend(e, args.limit)  # warm up
        lat = []
        for i in range(args.requests):
            t = time.perf_counter()
            rec.recommend(ids[i % len(ids)], args.limit)
            lat.append((time.perf_counter() - t) * 1000)
        p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
        print(f"| {route:<14} | {p50:>7.2f} | {p99:>7.2f} | {1000 / np.mean(lat):>16.0f} |")


if __name__ == "__main__":
    main()
