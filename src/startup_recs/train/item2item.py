"""Item-to-item retrieval: closed-form EASE where its n x n solve fits in memory, item-kNN beyond.

EASE (Steck, 2019): with the entity x candidate matrix X (n_e x n_c), ``G = XᵀX + λI``,
``P = G⁻¹``, ``B = -P / diag(P)`` with ``diag(B) = 0``; an entity's scores are ``x @ B``.
It needs dense float32 n_c x n_c matrices (G, then P overwritten into B) plus LAPACK's copies
and workspace, about ``28 * n_c²`` bytes measured: :func:`ease_max_candidates` turns a memory
budget into the largest candidate count (4 GiB -> 12,385 candidates). Beyond it, item-kNN from ``implicit``
(cosine or BM25 similarity, K neighbours) keeps a sparse n_c x n_c similarity instead.

The fitted model, its files and their names live in :mod:`startup_recs.models.item2item`
(``item2item{sfx}_v1_config.json``, ``_weights.npy`` (EASE, dense [n_c, n_c] float32) or
``_similarity.npz`` (kNN, CSR), ``_item_mapping.json``); this module fits it.
"""

from __future__ import annotations

import argparse
import logging
import math
import time

import numpy as np
import scipy.sparse as sp

from startup_recs.core import artifacts
from startup_recs.core.errors import ModelFitError
from startup_recs.datasets.als import load_matrix
from startup_recs.models.item2item import DEFAULT_EASE_BUDGET, Item2ItemConfig, Item2ItemModel

log = logging.getLogger(__name__)

# Peak bytes per n_c² cell, measured (6,000 candidates: 0.91 GB over the process baseline, i.e.
# ~26 B/cell: the Gram matrix, LAPACK's copies and workspace, the score path). Rounded up.
BYTES_PER_CELL = 28


def ease_max_candidates(memory_bytes: int = DEFAULT_EASE_BUDGET) -> int:
    """Largest candidate count whose EASE solve fits in ``memory_bytes``."""
    return int(math.isqrt(memory_bytes // BYTES_PER_CELL))


def gram(x: sp.csr_matrix, rows_per_block: int = 2048) -> np.ndarray:
    """``XᵀX`` as a dense float32 [n_c, n_c] (Fortran order), accumulated in place by BLAS
    ``sgemm`` over dense row blocks (a sparse ``x.T @ x`` would first build a near-dense sparse
    matrix at ~12 bytes a cell)."""
    from scipy.linalg.blas import sgemm

    n = x.shape[1]
    g = np.zeros((n, n), dtype=np.float32, order="F")
    for lo in range(0, x.shape[0], rows_per_block):
        dense = np.asfortranarray(x[lo: lo + rows_per_block].toarray(), dtype=np.float32)
        g = sgemm(1.0, dense, dense, beta=1.0, c=g, trans_a=True, overwrite_c=True)
    return g


def fit_ease(x: sp.csr_matrix, lam: float) -> np.ndarray:
    """EASE weights ``B`` [n_c, n_c] float32 from the entity x candidate matrix ``x``.

    Memory: the Gram matrix, inverted in place by LAPACK (getrf + getri), then scaled in place:
    about one float32 n_c x n_c matrix plus LAPACK's workspace and a transient block.
    """
    import scipy.linalg

    g = gram(sp.csr_matrix(x, dtype=np.float32))
    g[np.diag_indices_from(g)] += np.float32(lam)
    p = scipy.linalg.inv(g, overwrite_a=True, check_finite=False)  # Fortran order: inverted in place
    del g
    p = p.T  # symmetric: the C-ordered view of the same memory
    d = np.diag(p).copy()
    p /= -d[None, :]
    p[np.diag_indices_from(p)] = 0.0
    if not np.isfinite(d).all() or not np.isfinite(p.sum(dtype=np.float64)):
        raise ModelFitError("EASE produced non-finite weights; raise --lam")
    return p


def fit_knn(x: sp.csr_matrix, method: str, neighbours: int) -> sp.csr_matrix:
    """Item-kNN similarity [n_c, n_c] (CSR float32) from ``implicit.nearest_neighbours``."""
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

    cls = {"cosine": CosineRecommender, "bm25": BM25Recommender}[method]
    model = cls(K=neighbours, num_threads=1)
    model.fit(x.tocsr().astype(np.float32), show_progress=False)
    return sp.csr_matrix(model.similarity, dtype=np.float32)


def fit_item2item(x: sp.csr_matrix, config: Item2ItemConfig) -> Item2ItemModel:
    """Fit on the entity x candidate matrix ``x`` [n_e, n_c]: EASE or item-kNN by ``config.method``
    (``auto``: EASE while it fits ``config.memory_budget``, BM25 kNN beyond). Records the method
    chosen, the candidate count and the fit seconds in ``config``; raises :class:`ModelFitError`
    when ``method="ease"`` does not fit the budget."""
    t0 = time.perf_counter()
    x = sp.csr_matrix(x, dtype=np.float32)
    if config.binary:
        x.data[:] = 1.0
    n_c = x.shape[1]
    method = config.method
    if method == "auto":
        method = "ease" if n_c <= ease_max_candidates(config.memory_budget) else "bm25"
    elif method == "ease" and n_c > ease_max_candidates(config.memory_budget):
        raise ModelFitError(
            f"EASE over {n_c} candidates needs ~{BYTES_PER_CELL * n_c * n_c / 1e9:.1f} GB, over the "
            f"{config.memory_budget / 1e9:.1f} GB budget (max {ease_max_candidates(config.memory_budget)}); "
            "use --method cosine|bm25")
    weights = fit_ease(x, config.lam) if method == "ease" else fit_knn(x, method, config.neighbours)
    config.chosen, config.n_candidates = method, n_c
    config.fit_seconds = round(time.perf_counter() - t0, 3)
    log.info("item2item: %s over %d candidates in %.1fs", method, n_c, config.fit_seconds)
    return Item2ItemModel(config, weights)


def train_item2item(data: str, user_mapping: str, item_mapping: str, use_case: str, output_dir: str, *,
                    method: str | None = None, lam: float | None = None, neighbours: int | None = None,
                    binary: bool | None = None, memory_budget: int | None = None,
                    name: str | None = None) -> dict:
    """File to file over the ALS dataset (same entity x candidate matrix and mappings): fit, write
    ``item2item{sfx}_v1_*`` (or ``name``); returns a summary for logs and pipeline metadata. A
    ``None`` setting takes the :class:`Item2ItemConfig` default (the only place defaults live)."""
    matrix, _users, items = load_matrix(data, user_mapping, item_mapping)
    given = {"method": method, "lam": lam, "neighbours": neighbours, "binary": binary, "memory_budget": memory_budget}
    cfg = Item2ItemConfig(use_case, **{k: v for k, v in given.items() if v is not None})
    model = fit_item2item(matrix, cfg)
    name = name or artifacts.item2item_files(use_case).stem
    model.save(output_dir, name, {c: i for i, c in enumerate(items)})
    return {"model_name": name, "method": cfg.chosen, "candidates": cfg.n_candidates,
            "ease_max_candidates": ease_max_candidates(cfg.memory_budget), "fit_seconds": cfg.fit_seconds}


def cli_train(args: argparse.Namespace) -> int:
    """``recs train item2item``: fit over the ALS dataset, write ``item2item{sfx}_v1_*``."""
    info = train_item2item(args.data, args.user_mapping, args.item_mapping, args.use_case, args.output_dir,
                           method=args.method, lam=args.lam, neighbours=args.neighbours,
                           memory_budget=int(args.memory_gb * 1024**3))
    print(f"item2item {info['model_name']}: {info['method']} over {info['candidates']} candidates "
          f"(EASE limit {info['ease_max_candidates']} at this memory budget), {info['fit_seconds']:.2f}s "
          f"-> {args.output_dir}")
    return 0
