"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) through the ``implicit`` library.

Replaces the legacy ``train_als_reverse.py``, which ran TruncatedSVD under the name ALS. Same
flags, same artifact names: the fitted :class:`~startup_recs.models.als.ALSModel` writes
``<name>_{user,item}_factors.npy``, ``_{user,item}_mapping.json`` and ``_config.json``
(hyperparameters, use case, shapes, diagnostics, per-iteration history); see
:mod:`startup_recs.models.als`.

Confidence: ``C = 1 + alpha * f(w)`` on observed cells (1 elsewhere, implicit's convention),
where ``w`` is the summed event weight of the pair and ``f`` the weighting scheme: ``linear``
(``w``), ``binary`` (1), ``log`` (``log1p(w)``) or ``bm25`` (implicit's BM25 weighting of the
rows). We build ``C`` ourselves and pass it to implicit with its own ``alpha=1`` so the formula is
explicit in one place (implicit would otherwise compute ``alpha * w`` without the 1).

CPU or GPU implementation is picked once by :func:`make_backend`; BLAS thread pools are limited
to one thread during the fit as implicit advises (its CPU solver parallelises itself).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import ConfigError, DataError, ModelFitError, ModelMismatchError
from startup_recs.core.usecases import get_use_case
from startup_recs.datasets.als import load_matrix
from startup_recs.models.als import ALSModel

log = logging.getLogger(__name__)

WEIGHTINGS = ("linear", "binary", "log", "bm25")


@dataclass
class ALSConfig:
    """Hyperparameters (legacy flag names). ``device``: ``auto`` uses implicit's GPU class when
    ``implicit.gpu.HAS_CUDA``, ``cpu``/``cuda`` force one (``cuda`` without CUDA is an error)."""

    factors: int = 128
    iterations: int = 10
    regularization: float = 0.01
    alpha: float = 1.0
    weighting: str = "linear"
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0  # implicit CPU solver threads; 0 = all cores
    # the training loss per iteration costs ~15-20 % of a fit (implicit computes it over every stored
    # cell); only the evaluation report's training curve reads it, so only the pipeline's final ALS
    # (the folder the report plots) and `recs train als --track-loss` ask for it
    track_loss: bool = False

    def validate(self) -> ALSConfig:
        if self.factors < 1 or self.iterations < 1:
            raise ConfigError("--factors and --iterations must be >= 1")
        if self.regularization < 0 or self.alpha < 0:
            raise ConfigError("--regularization and --alpha must be >= 0")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"unknown weighting {self.weighting!r}; expected one of: {', '.join(WEIGHTINGS)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; expected auto, cpu or cuda")
        return self


def confidence(matrix: sp.spmatrix, alpha: float, weighting: str = "linear") -> sp.csr_matrix:
    """``1 + alpha * f(w)`` on the stored cells of ``matrix`` (``float32`` CSR, same pattern).

    Zero or negative stored weights are dropped first (they carry no positive preference).
    """
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"unknown weighting {weighting!r}; expected one of: {', '.join(WEIGHTINGS)}")
    m = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    m.data[~np.isfinite(m.data)] = 0
    m.data[m.data < 0] = 0
    m.eliminate_zeros()
    m.sort_indices()
    if weighting == "binary":
        m.data[:] = 1.0
    elif weighting == "log":
        m.data = np.log1p(m.data)
    elif weighting == "bm25":
        from implicit.nearest_neighbours import bm25_weight

        m = sp.csr_matrix(bm25_weight(m), dtype=np.float32)
    m.data = (1.0 + alpha * m.data).astype(np.float32)
    return m


def make_backend(config: ALSConfig) -> Any:
    """The implicit ALS object, CPU or GPU class, chosen once from ``config.device``."""
    import implicit.cpu.als
    import implicit.gpu

    use_gpu = config.device == "cuda" or (config.device == "auto" and implicit.gpu.HAS_CUDA)
    if config.device == "cuda" and not implicit.gpu.HAS_CUDA:
        raise ConfigError("--device cuda: implicit was built without CUDA or no GPU is visible")
    common = dict(factors=config.factors, regularization=config.regularization, alpha=1.0,
                  iterations=config.iterations, calculate_training_loss=config.track_loss,
                  random_state=config.seed)
    if use_gpu:
        import implicit.gpu.als

        return implicit.gpu.als.AlternatingLeastSquares(**common)
    return implicit.cpu.als.AlternatingLeastSquares(**common, num_threads=config.num_threads)


def diagnostics(matrix: sp.csr_matrix, user_factors: np.ndarray, item_factors: np.ndarray,
                max_cells: int = 50_000, seed: int = 0) -> dict[str, float]:
    """The legacy diagnostics, defined for an implicit model over the WHOLE matrix.

    Target: the preference ``P`` (1 on observed cells, 0 elsewhere); prediction ``x_u . y_i``.
    ``reconstruction_mse`` = mean over all ``n_e * n_c`` cells of ``(P - x_u . y_i)^2``;
    ``explained_variance`` = 1 - MSE / Var(P). The unobserved cells are summed in closed form
    (sum of all squared predictions = sum((X^T X) * (Y^T Y))), the observed ones exactly up to
    ``max_cells`` stored cells and from a uniform sample of that many beyond (an unbiased
    estimate), so the cost stays O(max_cells * factors + (n_e + n_c) * factors^2), a small
    fraction of one ALS iteration. Ranking metrics (``recs evaluate``) are what decide models;
    these only show that the fit converged to something sensible.
    """
    n_cells = float(matrix.shape[0]) * float(matrix.shape[1])
    if matrix.nnz == 0 or n_cells == 0:
        return {"reconstruction_mse": float("nan"), "explained_variance": float("nan")}
    X = np.asarray(user_factors, dtype=np.float32)
    Y = np.asarray(item_factors, dtype=np.float32)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    cols = matrix.indices
    scale = 1.0
    if matrix.nnz > max_cells:
        take = np.random.default_rng(seed).integers(0, matrix.nnz, size=max_cells)  # with replacement: O(k)
        rows, cols, scale = rows[take], cols[take], matrix.nnz / max_cells
    p = (X[rows] * Y[cols]).sum(axis=1, dtype=np.float64)
    obs_err = float(np.sum((1.0 - p) ** 2)) * scale
    obs_sq = float(np.sum(p * p)) * scale
    all_sq = float(np.sum((X.T @ X).astype(np.float64) * (Y.T @ Y).astype(np.float64)))  # float32 BLAS
    mse = (obs_err + max(all_sq - obs_sq, 0.0)) / n_cells
    density = matrix.nnz / n_cells
    var = density * (1.0 - density)
    return {"reconstruction_mse": mse, "explained_variance": 1.0 - mse / var if var > 0 else float("nan")}


def fit_factors(conf: sp.csr_matrix, config: ALSConfig, *, show_progress: bool = False) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Run implicit ALS on a confidence matrix; ``(user_factors, item_factors, history)``.

    Raises :class:`ModelFitError` when the factors are not finite (divergence, or NaN input).
    """
    from implicit.recommender_base import ModelFitError as ImplicitFitError
    from threadpoolctl import threadpool_limits

    history: list[dict] = []

    def on_iteration(it: int, seconds: float, loss: float | None) -> None:
        history.append({"iteration": it + 1, "seconds": float(seconds),
                        "loss": None if loss is None else float(loss)})

    with threadpool_limits(limits=1, user_api="blas"):
        model = make_backend(config)  # implicit checks the BLAS thread count when constructed
        try:
            model.fit(conf, show_progress=show_progress, callback=on_iteration)
        except ImplicitFitError as exc:
            raise ModelFitError(f"ALS diverged: {exc}") from None
    if hasattr(model, "to_cpu"):
        model = model.to_cpu()
    users = np.asarray(model.user_factors, dtype=np.float32)
    items = np.asarray(model.item_factors, dtype=np.float32)
    if not (np.isfinite(users).all() and np.isfinite(items).all()):
        raise ModelFitError("ALS produced NaN/inf factors (check the input weights and --regularization)")
    return users, items, history


def fit_als(matrix: sp.spmatrix, user_ids: list[str], item_ids: list[str], config: ALSConfig,
              *, use_case: str | None = None, show_progress: bool = False) -> ALSModel:
    """Fit ALS on an entities x candidates weight matrix; returns the model with its config,
    diagnostics and history. Raises :class:`DataError` for an empty or mis-shaped input and
    :class:`ModelFitError` for NaN weights or diverged factors."""
    config.validate()
    m = sp.csr_matrix(matrix)
    if m.shape != (len(user_ids), len(item_ids)):
        raise DataError(f"ALS matrix shape {m.shape} does not match the mappings "
                        f"({len(user_ids)} entities x {len(item_ids)} candidates)")
    if m.nnz == 0:
        raise DataError("ALS matrix has no interactions")
    if not np.isfinite(m.data).all():
        raise ModelFitError("ALS input has NaN/inf weights")
    t0 = time.perf_counter()
    conf = confidence(m, config.alpha, config.weighting)
    users, items, history = fit_factors(conf, config, show_progress=show_progress)
    fit_s = time.perf_counter() - t0
    diag = diagnostics(conf, users, items)
    log.info("ALS %dx%d nnz=%d factors=%d: %.2fs, reconstruction MSE %.4f, explained variance %.3f",
             m.shape[0], m.shape[1], m.nnz, config.factors, fit_s,
             diag["reconstruction_mse"], diag["explained_variance"])
    cfg = {
        "model": "implicit_als",
        "use_case": use_case,
        **asdict(config),
        "confidence": "1 + alpha * f(w)",
        "n_entities": int(m.shape[0]),
        "n_candidates": int(m.shape[1]),
        "nnz": int(m.nnz),
        "fit_seconds": fit_s,
        "diagnostics": diag,
        "history": history,
    }
    return ALSModel(users, items, list(map(str, user_ids)), list(map(str, item_ids)), cfg)


def _dataset_use_case(data: str) -> str | None:
    """The use case recorded beside the dataset (``als{sfx}_meta.json``), if any."""
    parent = data.rsplit("/", 1)[0] if "/" in data else "."
    for name in storage.listdir(parent):
        if artifacts.is_als_dataset_meta(name):
            meta = storage.read_json(storage.join(parent, name))
            if isinstance(meta, dict) and meta.get("use_case"):
                return str(meta["use_case"])
    return None


def train_als(data: str, user_mapping: str, item_mapping: str, use_case: str, output_dir: str, *,
              factors: int | None = None, iterations: int | None = None, regularization: float | None = None,
              alpha: float | None = None, weighting: str | None = None, seed: int | None = None,
              device: str | None = None, model_name: str | None = None, track_loss: bool | None = None,
              show_progress: bool = False) -> dict[str, Any]:
    """File to file: read the ALS dataset, fit, write ``<model_name>_*``; returns a summary dict
    (model name, shapes, fit seconds, diagnostics) for logs and pipeline metadata. A ``None``
    hyperparameter takes the :class:`ALSConfig` default (the only place defaults live)."""
    uc = get_use_case(use_case)
    recorded = _dataset_use_case(data)
    if recorded is not None and recorded != uc.name:
        raise ModelMismatchError(f"{data} was built for use case {recorded!r}, not {uc.name!r}")
    given = {"factors": factors, "iterations": iterations, "regularization": regularization, "alpha": alpha,
             "weighting": weighting, "seed": seed, "device": device, "track_loss": track_loss}
    config = ALSConfig(**{k: v for k, v in given.items() if v is not None}).validate()
    matrix, users, items = load_matrix(data, user_mapping, item_mapping)
    model = fit_als(matrix, users, items, config, use_case=uc.name, show_progress=show_progress)
    name = model_name or artifacts.als_files(uc).stem
    model.save(output_dir, name)
    d = model.config["diagnostics"]
    if any(math.isnan(v) for v in d.values()):
        log.warning("ALS diagnostics undefined (degenerate matrix)")
    return {"model_name": name, "entities": len(users), "candidates": len(items), "interactions": int(matrix.nnz),
            "factors": config.factors, "fit_seconds": model.config["fit_seconds"], **d}


def cli_train(args: argparse.Namespace) -> int:
    """``recs train als``: legacy flags, implicit ALS, artifacts named ``<model-name>_*``."""
    info = train_als(args.data, args.user_mapping, args.item_mapping, args.use_case, args.output_dir,
                     factors=args.factors, iterations=args.iterations, regularization=args.regularization,
                     alpha=args.alpha, weighting=getattr(args, "weighting", None),
                     seed=getattr(args, "seed", None), device=getattr(args, "device", None),
                     model_name=args.model_name, track_loss=getattr(args, "track_loss", None),
                     show_progress=True)
    print(f"ALS {info['model_name']}: {info['entities']} entities x {info['candidates']} candidates, "
          f"{info['interactions']} interactions, {info['factors']} factors, {info['fit_seconds']:.2f}s; "
          f"reconstruction MSE {info['reconstruction_mse']:.4f}, explained variance "
          f"{info['explained_variance']:.3f} -> {args.output_dir}")
    return 0
