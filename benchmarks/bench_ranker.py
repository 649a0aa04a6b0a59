"""Re-ranker serving latency: one request = re-rank m retrieved candidates of one entity.

Times, per request (median and p95 over many entities, one thread):

- ``gather``: the retrieval scores of the m candidates (``ranking_features.gather_scores``);
- ``features``: ``ranking_features.build`` (retrieval ranks/z-scores, popularity, recency,
  segment, match features);
- ``mlp numpy`` / ``mlp torch``: the same exported MLP on the built features;
- ``Reranker.score``: features + numpy MLP, what the Recommender calls.

    .venv/bin/python benchmarks/bench_ranker.py                       # tiny synthetic world, ~30 s
    .venv/bin/python benchmarks/bench_ranker.py --models DIR --snapshot SNAP --use-case startup_developer

Without ``--models`` it builds the tiny synthetic marketplace (``synth`` + ``extract``) and a
random ranker over random two-tower/ALS embeddings: speed does not depend on trained weights.
Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from startup_recs.models.ranker import RankerConfig, RankerMLP, save  # noqa: E402
from startup_recs.serving import ranking_features  # noqa: E402
from startup_recs.serving.data import ServingData  # noqa: E402
from startup_recs.serving.rerank import Reranker  # noqa: E402
from startup_recs.serving.retrievers import EmbeddingRetriever, load_retrievers  # noqa: E402


def _tiny_world(tmp: Path, use_case: str):
    from startup_recs import synth
    from startup_recs.data import appdb
    from startup_recs.data.extract import extract_db

    tables = synth.generate("tiny", 0)
    appdb.write_db({k: v for k, v in tables.items() if k != "oracle"}, str(tmp / "m.db"))
    extract_db(str(tmp / "m.db"), str(tmp / "snap"))
    data = ServingData.from_snapshot(str(tmp / "snap"), use_case)
    rng = np.random.default_rng(0)
    ents = data.known_entities()
    retrievers = dict(load_retrievers(str(tmp / "none"), data))  # content, popularity
    for name, dim in (("two_tower", 128), ("als", 64)):
        retrievers[name] = EmbeddingRetriever(name, data, ents, rng.normal(size=(len(ents), dim)).astype(np.float32),
                                              rng.normal(size=(data.n_candidates, dim)).astype(np.float32))
    names = ranking_features.feature_names(data)
    f = len(names)
    model = RankerMLP(f, (64, 32))
    cfg = RankerConfig(use_case=use_case, features=names, hidden=[64, 32], mean=[0.0] * f, std=[1.0] * f)
    save(model, cfg, str(tmp / "models"))
    return data, retrievers, Reranker.load(str(tmp / "models"), use_case)


def _time(fn, reps: int) -> tuple[float, float, float]:
    """(median wall µs, p95 wall µs, median CPU µs): CPU time is what to read on a busy machine."""
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    a = np.array(wall) * 1e6
    return float(np.median(a)), float(np.percentile(a, 95)), float(np.median(cpu) * 1e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=None)
    ap.add_argument("--snapshot", default=None)
    ap.add_argument("--use-case", default="startup_developer")
    ap.add_argument("--m", type=int, default=200, help="candidates per request (the re-rank depth)")
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as d:
        if args.models:
            data = ServingData.load(f"{args.models}/serving") if Path(args.models, "serving").is_dir() \
                else ServingData.from_snapshot(args.snapshot, args.use_case)
            retrievers = load_retrievers(args.models, data)
            rr = Reranker.load(args.models, args.use_case)
        else:
            data, retrievers, rr = _tiny_world(Path(d), args.use_case)
        rng = np.random.default_rng(1)
        ents = data.known_entities()
        picks = [ents[i] for i in rng.integers(0, len(ents), args.requests)]
        m = min(args.m, data.n_candidates)
        cands = [rng.choice(data.n_candidates, m, replace=False) for _ in picks]
        rr.check(data)
        state = {"i": 0}

        def nxt():
            i = state["i"] % len(picks)
            state["i"] += 1
            return picks[i], cands[i]

        def gather():
            e, c = nxt()
            return ranking_features.gather_scores(retrievers, e, c, rr.retrievers)

        pre = [(e, c, ranking_features.gather_scores(retrievers, e, c, rr.retrievers)) for e, c in zip(picks, cands,
                                                                                                        strict=True)]
        feats = [ranking_features.build(args.use_case, e, c, s, data, rr.retrievers)[0] for e, c, s in pre]
        k = {"j": 0}

        def pick():
            j = k["j"] % len(pre)
            k["j"] += 1
            return j

        def build_one():
            e, c, sc = pre[pick()]
            return ranking_features.build(args.use_case, e, c, sc, data, rr.retrievers)

        def score_one():
            e, c, sc = pre[pick()]
            return rr.score(e, c, sc, data)

        rows = [
            ("gather (retrieval scores)", _time(gather, args.requests)),
            ("features (ranking_features.build)", _time(build_one, args.requests)),
            ("mlp numpy", _time(lambda: rr._mlp(feats[pick()]), args.requests)),
            ("mlp torch", _time(lambda: rr.score_torch(feats[pick()]), args.requests)),
            ("Reranker.score (features + numpy mlp)", _time(score_one, args.requests)),
        ]
        print(f"\nre-rank latency, m={m} candidates, {len(rr.features)} features, "
              f"{'feature tables' if data.has_features else 'id-only'}, 1 thread\n")
        print("| step | median wall µs | p95 wall µs | median CPU µs |\n|---|---:|---:|---:|")
        for name, (med, p95, cpu) in rows:
            print(f"| {name} | {med:,.0f} | {p95:,.0f} | {cpu:,.0f} |")


if __name__ == "__main__":
    main()
