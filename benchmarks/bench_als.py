"""ALS step time: our trainer (``startup_recs.train.als.fit_als``) vs a bare ``implicit`` fit of
the same confidence matrix, in the same process, same threads, same seed. Target: <= 1.05x.

"Ours" is the whole training step a user runs minus file I/O: input checks, confidence
weighting, the implicit fit under a BLAS thread limit, the NaN check and the diagnostics.
"Bare" is ``implicit.cpu.als.AlternatingLeastSquares(...).fit(C)`` on the pre-built matrix.
Runs alternate (bare, ours, bare, ours, ...) and the table reports the median of each, with the
training loss tracked on both sides or on neither, and the step as configured by default
(``ALSConfig.track_loss`` is opt-in: the loss costs ~15-20 % of a fit and only the report's
training curve of the pipeline's final ALS reads it) against implicit's default (no loss).

    .venv/bin/python benchmarks/bench_als.py [--entities 20000 --candidates 50000 --nnz-per-row 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def synthetic_matrix(n_e: int, n_c: int, per_row: int, seed: int = 0) -> sp.csr_matrix:
    """Power-law candidate popularity (like real logs), ``per_row`` events per entity on average."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_c + 1) ** 0.8
    p /= p.sum()
    rows = np.repeat(np.arange(n_e), rng.poisson(per_row, n_e).clip(1))
    cols = rng.choice(n_c, size=len(rows), p=p)
    w = rng.choice([1.0, 2.0, 5.0], size=len(rows), p=[0.7, 0.2, 0.1]).astype(np.float32)
    m = sp.csr_matrix((w, (rows, cols)), shape=(n_e, n_c), dtype=np.float32)
    m.sum_duplicates()
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=20_000)
    ap.add_argument("--candidates", type=int, default=50_000)
    ap.add_argument("--nnz-per-row", type=int, default=50)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="implicit solver threads (0 = all cores)")
    args = ap.parse_args()

    import implicit
    import implicit.cpu.als
    from threadpoolctl import threadpool_limits

    from startup_recs.train.als import ALSConfig, confidence, fit_als

    m = synthetic_matrix(args.entities, args.candidates, args.nnz_per_row)
    users, items = [str(i) for i in range(m.shape[0])], [str(i) for i in range(m.shape[1])]
    rows = []
    for track_loss in (False, True):
        cfg = ALSConfig(factors=args.factors, iterations=args.iterations, alpha=1.0, seed=0,
                        num_threads=args.threads, track_loss=track_loss, device="cpu")
        conf = confidence(m, cfg.alpha, cfg.weighting)
        bare_t, ours_t = [], []
        for _ in range(args.repeats):
            with threadpool_limits(1, "blas"):
                bare = implicit.cpu.als.AlternatingLeastSquares(
                    factors=cfg.factors, regularization=cfg.regularization, alpha=1.0,
                    iterations=cfg.iterations, calculate_training_loss=track_loss,
                    num_threads=cfg.num_threads, random_state=cfg.seed)
                t = time.perf_counter()
                bare.fit(conf, show_progress=False)
                bare_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            fit_als(m, users, items, cfg)
            ours_t.append(time.perf_counter() - t)
        b, o = statistics.median(bare_t), statistics.median(ours_t)
        rows.append((track_loss, b, o))

    print(f"implicit {implicit.__version__}; matrix {m.shape[0]} x {m.shape[1]}, nnz {m.nnz}, "
          f"factors {args.factors}, iterations {args.iterations}, median of {args.repeats}, "
          f"threads {args.threads or os.cpu_count()}")
    print(f"| {'loss tracked':<24} | {'bare implicit s':>15} | {'ours s':>8} | {'ours/bare':>9} | {'s/iter (ours)':>13} |")
    print(f"|{'-' * 26}|{'-' * 17}|{'-' * 10}|{'-' * 11}|{'-' * 15}|")
    for track_loss, b, o in rows:
        label = "both" if track_loss else "neither"
        print(f"| {label:<24} | {b:>15.3f} | {o:>8.3f} | {o / b:>8.3f}x | {o / args.iterations:>13.4f} |")
    default = ALSConfig().track_loss
    (_, bare_default, _), = [r for r in rows if r[0] is False]
    (_, _, ours_default), = [r for r in rows if r[0] is default]
    label = f"defaults (ours {'with' if default else 'without'})"
    print(f"| {label:<24} | {bare_default:>15.3f} | {ours_default:>8.3f} | {ours_default / bare_default:>8.3f}x | "
          f"{ours_default / args.iterations:>13.4f} |")
    print("target: ours/bare <= 1.05 (implicit's default tracks no loss)")


if __name__ == "__main__":
    main()
