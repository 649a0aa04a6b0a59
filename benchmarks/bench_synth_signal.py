"""How much learnable signal the synthetic marketplace plants (a check of ``synth.py``).

For each reverse use case, ranks every candidate for the startups that have a positive event in
the last ``--test-days`` and prints NDCG@10 by training segment (cold < 5, warm 5-19, hot 20+
training events) for:

* ``oracle``      the planted affinity itself (the ceiling ``recs evaluate --oracle`` reports);
* ``popularity``  candidates by training positives (the baseline);
* ``content``     only the feature-match part + candidate quality (what a perfect content model
                  could reach without interaction history);
* ``taste``       only the latent-taste part + candidate quality (a perfect collaborative model);
* ``als``         a quick implicit ALS fitted on the training window (what a real model gets).

    .venv/bin/python benchmarks/bench_synth_signal.py --size small

Training window: events before the test window (no validation hold-out here).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import scipy.sparse as sp

from startup_recs import synth
from startup_recs.core.config import DEFAULT_EVENT_WEIGHTS, segment_of
from startup_recs.core.usecases import get_use_case


def ndcg_at(scores: np.ndarray, relevant: list[set[int]], k: int = 10) -> np.ndarray:
    """Binary-relevance NDCG@k per row of ``scores`` (rows x candidates)."""
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.empty(len(relevant))
    for i, rel in enumerate(relevant):
        gain = sum(disc[r] for r, c in enumerate(top[i]) if c in rel)
        out[i] = gain / disc[: min(k, len(rel))].sum()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-days", type=float, default=14.0)
    p.add_argument("--factors", type=int, default=32)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    w, rng = synth.build_world(args.size, args.seed)  # the same world generate() builds
    lists = {uc: synth.shortlist(w, uc, w.spec.shortlist_k, rng) for uc in (*synth.REVERSE, *synth.FORWARD)}
    rev = synth.simulate(w, rng, lists)["rev"]
    print(f"size={args.size} seed={args.seed}: simulated in {time.perf_counter() - t0:.1f} s\n")
    split = rev["ts"].max() - int(args.test_days * synth.DAY_US)

    print("| use case | model | cold | warm | hot | all |")
    print("|---|---|---:|---:|---:|---:|")
    for uc in synth.REVERSE:
        role = synth.role_of(uc)
        cands = w.users_of(role)
        col = np.full(len(w.U.ids), -1)
        col[cands] = np.arange(len(cands))
        mine = col[rev["u"]] >= 0
        train = mine & (rev["ts"] < split)
        positive = np.isin(rev["event"], get_use_case(uc).positive_events)
        test = mine & (rev["ts"] >= split) & positive
        rel: dict[int, set[int]] = {}
        for s, u in zip(rev["s"][test], col[rev["u"][test]], strict=True):
            rel.setdefault(int(s), set()).add(int(u))
        ents = np.array(sorted(rel))
        relevant = [rel[e] for e in ents]
        counts = np.bincount(rev["s"][train], minlength=len(w.S.ids))
        seg = np.array([segment_of(int(counts[e])) for e in ents])

        P, Q = synth.match_factors(role, w.S, w.U)
        qual = synth.C_QUAL * w.U.quality[cands][None, :]
        oracle = w.affinity_block(uc, ents, cands)
        content = P[ents] @ Q[cands].T
        content = synth.A_FEAT * content / content.std() + qual
        taste = synth.B_TASTE * (w.S.taste[ents] @ w.U.taste[cands].T) + qual
        pop = np.zeros(len(cands))
        np.add.at(pop, col[rev["u"][train & positive]], 1.0)
        rows = {"oracle": oracle, "popularity": np.broadcast_to(pop, oracle.shape),
                "content (ideal)": content, "taste (ideal)": taste}
        try:
            import implicit
            from threadpoolctl import threadpool_limits

            weights = np.array([DEFAULT_EVENT_WEIGHTS[e] for e in rev["event"][train]], np.float32)
            m = sp.csr_matrix((weights, (rev["s"][train], col[rev["u"][train]])),
                              shape=(len(w.S.ids), len(cands)))
            with threadpool_limits(2):
                als = implicit.cpu.als.AlternatingLeastSquares(
                    factors=args.factors, iterations=15, regularization=0.05, alpha=2.0, random_state=0)
                als.fit(m, show_progress=False)
            rows["als (quick)"] = als.user_factors[ents] @ als.item_factors.T
        except ImportError:
            pass
        for name, scores in rows.items():
            v = ndcg_at(np.ascontiguousarray(scores, dtype=np.float32), relevant)
            cells = [f"{v[seg == s].mean():.3f} (n={int((seg == s).sum())})" if (seg == s).any() else "-"
                     for s in ("cold", "warm", "hot")]
            print(f"| {uc} | {name} | {' | '.join(cells)} | {v.mean():.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
