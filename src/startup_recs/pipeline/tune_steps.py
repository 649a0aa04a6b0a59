"""Tuning steps: a validation-based search before each trainer, whose ``best_params.json`` the
trainer steps read (:func:`tuned_params`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from startup_recs.core import storage
from startup_recs.core.artifacts import BEST_PARAMS
from startup_recs.core.usecases import get_use_case
from startup_recs.pipeline.folders import fresh_dir, provenance, split_kwargs
from startup_recs.pipeline.step import step
from startup_recs.pipeline.ui_report import tuning_report

log = logging.getLogger(__name__)


def tuned_params(params_dir: str | None) -> dict[str, Any]:
    """The chosen values of a tuning step's output folder (``{}`` without one)."""
    if not params_dir:
        return {}
    summary = storage.read_json(storage.join(params_dir, BEST_PARAMS))
    return dict(summary.get("best_params") or {})


@step("tune-{model}")
def tune(snapshot: str, use_case: str, model: str, out_dir: str, *, defaults: dict[str, Any], trials: int = 0,
         timeout_s: float = 0.0, seed: int = 0, split_at: str = "", test_days: float = 14.0,
         val_days: float = 14.0, report_md: str | None = None) -> dict[str, Any]:
    """Search ``model``'s hyperparameters on train -> validation (never test) with Optuna; trial 0
    is ``defaults`` (the pipeline's values). ``trials == 0`` skips the search: the defaults pass
    through unchanged. Writes ``best_params.json`` (+ ``trials.csv``) into ``out_dir``."""
    from startup_recs.tuning import search as tn

    get_use_case(use_case)
    defaults = dict(defaults)
    if model == "item2item" and defaults.get("method") == "auto":
        # the search space has no "auto"; its "ease" already falls back to bm25 past EASE's memory limit
        defaults["method"] = "ease"
    out = fresh_dir(out_dir)
    if trials > 0:
        summary = tn.tune(snapshot, use_case, model, str(out), trials=int(trials), timeout=float(timeout_s) or None,
                          seed=seed, defaults=dict(defaults), **split_kwargs(split_at, test_days, val_days))
    else:
        summary = {"model": model, "use_case": use_case, "metric": "validation ndcg@10",
                   "best_params": dict(defaults), "best_value": None, "default_params": dict(defaults),
                   "default_value": None, "n_trials": 0, "n_complete": 0, "n_pruned": 0, "seconds": 0.0,
                   "trials": []}
        storage.write_json(str(out / BEST_PARAMS), summary)
    if report_md:
        Path(report_md).write_text(tuning_report(summary))
    log.info("tune %s/%s: %d trials, chosen %s (validation %s vs defaults %s)", use_case, model,
             summary["n_trials"], summary["best_params"], summary["best_value"], summary["default_value"])
    return provenance(snapshot, use_case, model=model, trials=summary["n_trials"],
                      best_value=summary["best_value"], default_value=summary["default_value"],
                      seconds=summary["seconds"], best=summary["best_params"])
