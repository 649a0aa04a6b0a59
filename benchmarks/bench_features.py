"""Feature-code benchmark: the online cost of match features / reasons and the encoder's throughput.

    .venv/bin/python benchmarks/bench_features.py --snapshot data/snapshot            # any snapshot
    .venv/bin/python benchmarks/bench_features.py --snapshot /tmp/demo_snap --pairs 200000

Prints one Markdown table per reverse use case: ``match_features`` for one entity against 200
candidates (one request), row-aligned pairs (evaluation / ranker features), ``match_reasons_batch``
for a 20-item answer, and ``FeatureEncoder.transform`` rows/s. Median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from startup_recs.core.usecases import REVERSE_USE_CASES, get_use_case
from startup_recs.data.snapshot import load_snapshot
from startup_recs.features import PairEncoder, match_features, match_reasons_batch


def timed(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def bench_use_case(snap: object, name: str, pairs: int, repeat: int) -> None:
    uc = get_use_case(name)
    ents, cands = snap.entity_features(uc), snap.candidate_features(uc)
    if ents is None or cands is None:
        print(f"{name}: id-only snapshot, no features to benchmark")
        return
    one, slate = ents.iloc[0], cands.sample(200, replace=True, random_state=0)
    e_pairs = ents.sample(pairs, replace=True, random_state=1)
    c_pairs = cands.sample(pairs, replace=True, random_state=2)
    enc = PairEncoder.fit(ents, cands, entity_kind=uc.entity_kind, candidate_kind=uc.candidate_kind)
    few = max(1, repeat // 2)
    rows = [
        ("match_features, 1 entity x 200 candidates", timed(lambda: match_features(uc, one, slate), repeat), 200),
        (f"match_features, {pairs} aligned pairs", timed(lambda: match_features(uc, e_pairs, c_pairs), few), pairs),
        ("match_reasons_batch, 20-item answer", timed(lambda: match_reasons_batch(uc, one, slate.iloc[:20]), repeat), 20),
        (f"encoder transform, {len(cands)} candidates", timed(lambda: enc.candidate.transform(cands), few), len(cands)),
    ]
    print(f"\n### {name} ({len(ents)} entities, {len(cands)} candidates)\n")
    print("| operation | median ms | µs per row |")
    print("|---|---:|---:|")
    for label, sec, n in rows:
        print(f"| {label} | {sec * 1e3:.2f} | {sec / n * 1e6:.1f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapshot", required=True)
    ap.add_argument("--pairs", type=int, default=50_000, help="row-aligned pairs per run")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    snap = load_snapshot(args.snapshot)
    for name in REVERSE_USE_CASES:
        bench_use_case(snap, name, args.pairs, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
