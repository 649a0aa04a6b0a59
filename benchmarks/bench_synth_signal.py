"""How much learnable signal the synthetic marketplace plants (a check of ``synth.py``).

For each reverse use case, ranks every candidate for the startups that have a positive event in
the last ``--test-days`` and prints NDCG@10 by training segment (cold < 5, warm 5-19, hot 20+
training events) for:

* ``oracle``      the planted affinity itself (the ceiling ``recs evaluate --oracle`` reports);
* ``popularity``  candidates by training positives (the baseline);
* ``content``     only the feature-match part + candidate quality (what a perfect content model
                  could reach without interaction history);
* ``taste``       only the latent-taste part + candidate quality (a perfect collaborative model);
* ``als``         a quick implicit ALS fitted on the training window (what a real model gets);
* ``content + als``  the ideal content part plus ``lam`` x the quick ALS's per-startup z-score:
                  what a ranker that knows the profiles perfectly gains from that ALS;
* ``content + taste from history``  the ideal content part plus the taste term with each
                  candidate's taste estimated from its training events (the mean of the *true*
                  tastes of the startups it interacted with, shrunk by 3 pseudo-counts): the most a
                  collaborative model can recover from the candidates' histories, even knowing every
                  startup's taste.

The two combined rows take the best ``lam`` of a small grid on the test window itself, so they
are upper bounds, not models.

    .venv/bin/python benchmarks/bench_synth_signal.py --size small

Training window: events before the test window (no validation hold-out here).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial

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

    results: list[dict] = []
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
        # as the evaluation does: a pair the startup already contacted (or got an application from)
        # in the training window is neither ranked nor relevant
        done = mine & (rev["ts"] < split) & np.isin(rev["event"], get_use_case(uc).excluded_by)
        excluded = set(zip(rev["s"][done].tolist(), col[rev["u"][done]].tolist(), strict=True))
        rel: dict[int, set[int]] = {}
        for s, u in zip(rev["s"][test].tolist(), col[rev["u"][test]].tolist(), strict=True):
            if (s, u) not in excluded:
                rel.setdefault(int(s), set()).add(int(u))
        ents = np.array(sorted(rel))
        relevant = [rel[e] for e in ents]
        row_of = {int(e): i for i, e in enumerate(ents)}
        mask = [(row_of[s], u) for s, u in excluded if s in row_of]
        mask_rows = np.array([m[0] for m in mask], dtype=np.int64)
        mask_cols = np.array([m[1] for m in mask], dtype=np.int64)

        ndcg = partial(masked_ndcg, rows=mask_rows, cols=mask_cols, relevant=relevant)
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
            a = rows["als (quick)"]
            z = (a - a.mean(axis=1, keepdims=True)) / (a.std(axis=1, keepdims=True) + 1e-9)
            rows["content + als (best lam)"] = best_of(content, z, (0.05, 0.1, 0.2, 0.4), ndcg)
        except ImportError:
            pass
        hist = sp.csr_matrix((np.ones(int(train.sum()), np.float32), (col[rev["u"][train]], rev["s"][train])),
                             shape=(len(cands), len(w.S.ids)))
        hist.data[:] = 1.0  # distinct startups per candidate
        est = (hist @ w.S.taste) / (np.asarray(hist.sum(axis=1)) + 3.0)
        learned = synth.B_TASTE * (w.S.taste[ents] @ est.T)
        rows["content + taste from history (best lam)"] = best_of(content, learned, (1.0, 2.0, 4.0), ndcg)
        for name, scores in rows.items():
            v = ndcg(scores)
            cells = [f"{v[seg == s].mean():.3f} (n={int((seg == s).sum())})" if (seg == s).any() else "-"
                     for s in ("cold", "warm", "hot")]
            print(f"| {uc} | {name} | {' | '.join(cells)} | {v.mean():.3f} |")
            results.append({"bench": "synth_signal", "size": args.size, "seed": args.seed, "use_case": uc,
                            "model": name, "ndcg@10": round(float(v.mean()), 4),
                            **{f"ndcg@10_{s}": round(float(v[seg == s].mean()), 4) for s in ("cold", "warm", "hot")
                               if (seg == s).any()}})
    print()
    for row in results:
        print(json.dumps(row))
    return 0


def masked_ndcg(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, relevant: list[set[int]]) -> np.ndarray:
    """NDCG@10 per row with the excluded pairs ``(rows[i], cols[i])`` ranked last."""
    scores = np.array(scores, dtype=np.float32)  # a copy
    scores[rows, cols] = -np.inf
    return ndcg_at(scores, relevant)


def best_of(base: np.ndarray, extra: np.ndarray, lams: tuple[float, ...],
            ndcg: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``base + lam * extra`` for the ``lam`` of ``lams`` with the best mean ``ndcg`` (an upper bound)."""
    best, best_v = base, -1.0
    for lam in lams:
        s = np.ascontiguousarray(base + lam * extra, dtype=np.float32)
        v = float(ndcg(s).mean())
        if v > best_v:
            best, best_v = s, v
    return best


if __name__ == "__main__":
    sys.exit(main())
