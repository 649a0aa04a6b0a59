"""Choose the ranker's learner and its key hyperparameters on the validation lists (Optuna TPE).

The ranker's lists are built once (the expensive part: pools, stage-1 scores, features); each
trial then fits one learner (LightGBM LambdaRank or the MLP) on the training entities and is
scored by the holdout entities' NDCG@10 (the positives only), the same number :func:`fit`
early-stops on. Trial 0 is the config as given, so the search can only keep or beat it on the
holdout. The space is :data:`SPACE`, also ``recs tune --model ranker``'s
(``startup_recs.tuning.spaces.SEARCH_SPACES["ranker"]`` is this dict); a trial draws every key and
the learner ignores the other learner's keys.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from startup_recs.train.ranker import RankerTrainConfig
    from startup_recs.train.ranker_lists import ListData

log = logging.getLogger(__name__)

# name -> ("int"|"float", low, high, log) or ("cat", [choices]), the tuning package's format
SPACE: dict[str, tuple] = {
    "learner": ("cat", ["auto", "lightgbm", "mlp"]),
    "lr": ("float", 1e-4, 3e-2, True),
    "hidden": ("cat", ["32", "64,32", "128,64", "128,64,32"]),
    "lgb_num_leaves": ("int", 3, 31, True),
    "lgb_min_data_in_leaf": ("int", 20, 400, True),
    "lgb_learning_rate": ("float", 0.01, 0.1, True),
    "lgb_lambda_l2": ("float", 0.1, 100.0, True),
}


def _suggest(trial: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in SPACE.items():
        if spec[0] == "int":
            out[name] = trial.suggest_int(name, spec[1], spec[2], log=spec[3])
        elif spec[0] == "float":
            out[name] = trial.suggest_float(name, spec[1], spec[2], log=spec[3])
        else:
            out[name] = trial.suggest_categorical(name, spec[1])
    return out


def _apply(cfg: RankerTrainConfig, params: dict[str, Any]) -> RankerTrainConfig:
    params = dict(params)
    if "hidden" in params:
        params["hidden"] = tuple(int(h) for h in str(params["hidden"]).split(",") if h.strip())
    return replace(cfg, **params)


def search_learner(lists: ListData, cfg: RankerTrainConfig) -> tuple[RankerTrainConfig, dict[str, Any]]:
    """``cfg.tune_trials`` trials over learner + parameters; returns the best config (its
    ``tune_trials`` set to 0) and a summary (``best_params``, ``best_value``, ``default_value``,
    ``trials``: number, params, value, seconds)."""
    import optuna

    from startup_recs.train.ranker import fit

    defaults = {k: (",".join(map(str, cfg.hidden)) if k == "hidden" else getattr(cfg, k)) for k in SPACE}
    trials: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = defaults if trial.number == 0 else _suggest(trial)
        t0 = time.perf_counter()
        result = fit(lists, _apply(cfg, params))
        value = float(result.metrics.get("holdout_ndcg@10", 0.0))
        trials.append({"number": trial.number, "params": dict(params), "value": value,
                       "seconds": round(time.perf_counter() - t0, 2)})
        log.info("ranker search trial %d: %s -> holdout ndcg@10 %.4f", trial.number, params, value)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    study.enqueue_trial({k: v for k, v in defaults.items()})
    study.optimize(objective, n_trials=int(cfg.tune_trials))
    best = max(trials, key=lambda t: t["value"])
    summary = {"metric": "holdout ndcg@10", "best_params": best["params"], "best_value": best["value"],
               "default_params": defaults, "default_value": trials[0]["value"], "trials": trials}
    log.info("ranker search: %s (holdout %.4f; defaults %.4f)", best["params"], best["value"], trials[0]["value"])
    return replace(_apply(cfg, best["params"]), tune_trials=0), summary
