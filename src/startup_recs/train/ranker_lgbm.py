"""Fit the LightGBM LambdaRank re-ranker on the same lists, holdout and metric as the MLP.

One LightGBM query group per entity list (:class:`~startup_recs.train.ranker_lists.ListData`:
rows ``offsets[i]:offsets[i+1]``), so the lambda gradients only ever compare candidates of the
same entity. Labels are the graded relevance of each row (integers: 0 = no action, then the
config's grades, e.g. click 1 < contact/apply 3) with LightGBM's ``label_gain`` ``2^g - 1``;
the inverse-propensity weights of the dataset's positives are the per-row sample weights
(LightGBM multiplies each row's lambda gradient and hessian by its weight).

Model choice: the same fixed-seed entity holdout as the MLP. Boosting stops ``early_stopping``
rounds after the holdout NDCG@10 (binary relevance: the evaluation's positives only, via
:func:`startup_recs.evaluation.metrics.ndcg_lists`) last improved; the booster keeps the best
iteration only. Measured on the demo data (developer, seed 0, content 200 pool): 31 leaves and
min 50 rows per leaf overfit within ~15 rounds (test NDCG@10 0.036 - 0.044); 7 leaves, 100 rows
per leaf and L2 10 run ~150 rounds and reach the MLP's 0.051, hence the defaults.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from startup_recs.core.errors import DataError
from startup_recs.evaluation.metrics import ndcg_lists

if TYPE_CHECKING:
    from startup_recs.train.ranker import RankerTrainConfig
    from startup_recs.train.ranker_lists import ListData

log = logging.getLogger(__name__)


def lgb_params(cfg: RankerTrainConfig, max_label: int) -> dict[str, Any]:
    """The LightGBM parameter dict of a config (deterministic, ``num_threads`` from the config)."""
    return {
        "objective": "lambdarank", "metric": "None", "verbosity": -1, "seed": cfg.seed, "deterministic": True,
        "num_threads": cfg.threads, "learning_rate": cfg.lgb_learning_rate, "num_leaves": cfg.lgb_num_leaves,
        "min_data_in_leaf": cfg.lgb_min_data_in_leaf, "lambda_l2": cfg.lgb_lambda_l2,
        "feature_fraction": cfg.lgb_feature_fraction, "bagging_fraction": 0.8, "bagging_freq": 1,
        "lambdarank_truncation_level": 20, "label_gain": [float(2 ** g - 1) for g in range(max_label + 1)],
        "force_col_wise": True,
    }


def fit_lambdarank(train: ListData, holdout: ListData, cfg: RankerTrainConfig, relevant: float
                   ) -> tuple[Any, list[dict[str, float]], dict[str, Any]]:
    """Boost on ``train``'s lists, early-stopping on ``holdout``'s NDCG@10 (rows with ``y >=
    relevant`` count as relevant). Returns ``(booster at its best iteration, history, metrics)``.

    ``history``: one row per evaluated round (``iteration``, ``holdout_ndcg@10``). Raises
    :class:`DataError` when no training list has a positive.
    """
    import lightgbm as lgb

    if train.n_lists == 0 or not (train.y > 0).any():
        raise DataError("ranker: no training list has a positive")
    labels = np.rint(train.y).astype(np.int32)
    params = lgb_params(cfg, int(labels.max()))
    dtrain = lgb.Dataset(train.X, labels, weight=train.w, group=np.diff(train.offsets),
                         feature_name=[_safe(n) for n in train.names], free_raw_data=False)
    has_ho = holdout.n_lists > 0 and (holdout.y >= relevant).any()
    history: list[dict[str, float]] = []
    state = {"best": -np.inf, "iter": 0, "stale": 0}
    t0 = time.perf_counter()

    def check(env: Any) -> None:
        it = env.iteration + 1
        if not has_ho or it % cfg.lgb_eval_every:
            return
        s = env.model.predict(holdout.X, num_iteration=it, num_threads=cfg.threads)
        v = ndcg_lists(s, (holdout.y >= relevant).astype(np.float32), holdout.offsets)
        history.append({"iteration": it, "holdout_ndcg@10": v, "seconds": time.perf_counter() - t0})
        if v > state["best"] + 1e-6:
            state.update(best=v, iter=it, stale=0)
        else:
            state["stale"] += cfg.lgb_eval_every
            if state["stale"] >= cfg.lgb_early_stopping:
                raise lgb.callback.EarlyStopException(state["iter"], [])

    booster = lgb.train(params, dtrain, num_boost_round=cfg.lgb_rounds, callbacks=[check])
    best_iter = state["iter"] if has_ho and state["iter"] > 0 else booster.current_iteration()
    booster.best_iteration = best_iter
    metrics: dict[str, Any] = {"best_iteration": int(best_iter), "rounds_run": int(booster.current_iteration()),
                               "seconds": time.perf_counter() - t0}
    if has_ho:
        metrics["holdout_ndcg@10"] = float(state["best"])
    gain = booster.feature_importance("gain", iteration=best_iter)
    top = np.argsort(-gain)[:10]
    metrics["top_gain"] = {train.names[i]: float(gain[i]) for i in top if gain[i] > 0}
    log.info("lightgbm ranker: %d rounds (best %d), holdout ndcg@10 %s, top features %s", metrics["rounds_run"],
             best_iter, f"{state['best']:.4f}" if has_ho else "-", list(metrics["top_gain"])[:5])
    return booster, history, metrics


def _safe(name: str) -> str:
    """LightGBM refuses some characters in feature names (JSON specials); ours are identifiers."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)
