"""Validation-based hyperparameter search (Optuna TPE) for every trainer.

Every trial fits on the *train* window (``< val_start``) and is scored on the *validation*
window (``[val_start, split_at)``) with the evaluation's own protocol and metric (NDCG@10 over a
full ranking of all candidates, seen ones excluded; see :mod:`startup_recs.evaluation.protocol`). The test
window is never read. The chosen parameters are then refit on train + validation by the caller
(pipeline or ``recs train``) and scored once on test.

The search spaces live in :data:`startup_recs.tuning.spaces.SEARCH_SPACES`, the one definition that
both Optuna and the Katib ``Experiment`` manifest (:func:`katib_experiment`) are generated from;
each search's starting values are the trainer config's defaults (``spaces.default_params``).

Outputs (``--out``): ``best_params.json`` (best and default parameters, their validation scores,
every trial) and ``trials.csv``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.core.usecases import get_use_case
from startup_recs.tuning.spaces import (
    MODELS,
    SEARCH_SPACES,
    check_search_params,
    default_params,
    suggest,
)

log = logging.getLogger(__name__)

METRIC = "ndcg@10"

# --- the validation task: train-window data and the validation target ------------------------
@dataclass
class ValidationTask:
    """Everything a trial needs: train-window serving data and matrix, validation target."""

    snapshot: str
    use_case: str
    split: Any  # TimeSplit
    data: Any  # ServingData fitted until val_start
    target: Any  # evaluate.Target over [val_start, split_at)
    matrix: sp.csr_matrix  # [n_e, n_c] summed train-window weights, columns = data.candidate_ids
    entity_ids: list[str]  # rows of ``matrix``

    @classmethod
    def build(cls, snapshot: str, use_case: str, split_at: Any = None, test_days: float = 14.0,
              val_days: float = 14.0) -> ValidationTask:
        from startup_recs.data.snapshot import load_snapshot
        from startup_recs.data.split import TimeSplit
        from startup_recs.evaluation.protocol import target_window
        from startup_recs.serving.data import ServingData

        uc = get_use_case(use_case)
        snap = load_snapshot(snapshot)
        events = snap.events(uc.name)
        split = TimeSplit.resolve(events["ts"], split_at, test_days, val_days)
        data = ServingData.from_snapshot(snap, uc.name, split.val_start, events=events)
        target = target_window(events, data, split.val_start, split.split_at)
        if not target.entity_ids:
            raise DataError("empty validation set: no positive event in the validation window")
        ts = pd.to_datetime(events["ts"], utc=True)
        train = events.loc[ts < split.val_start]
        pairs = train.groupby([train["entity_id"].astype(str), train["candidate_id"].astype(str)])["weight"].sum()
        ent = pairs.index.get_level_values(0)
        rows, entity_ids = pd.factorize(ent, sort=True)
        cols = data.candidate_positions(pairs.index.get_level_values(1).tolist())
        keep = cols >= 0
        matrix = sp.csr_matrix((pairs.to_numpy(np.float32)[keep], (rows[keep], cols[keep])),
                               shape=(len(entity_ids), data.n_candidates))
        return cls(snapshot, uc.name, split, data, target, matrix, [str(e) for e in entity_ids])

    def score(self, score_fn: Callable[[list[str]], np.ndarray], batch: int = 512) -> dict[str, dict[str, float]]:
        """Validation metrics of ``score_fn(entity_ids) -> float32 [n, n_c]``."""
        from startup_recs.evaluation.protocol import summarize_target
        from startup_recs.serving.index import top_k

        ids = self.target.entity_ids
        k = 50
        top = np.full((len(ids), k), -1, np.int64)
        for lo in range(0, len(ids), batch):
            chunk = ids[lo: lo + batch]
            idx, sc = top_k(score_fn(chunk), k, self.data.exclusion_lists(chunk))
            top[lo: lo + len(chunk), : idx.shape[1]] = np.where(np.isfinite(sc), idx, -1)
        return summarize_target(top, self.target, self.data.n_candidates, [10, 20, 50])

    def rows_of(self, ids: list[str]) -> np.ndarray:
        """Row of each entity in :attr:`matrix`, ``-1`` for entities without train events."""
        return pd.Index(self.entity_ids).get_indexer(ids)

    def with_fallback(self, ids: list[str], known: np.ndarray, scores_known: np.ndarray) -> np.ndarray:
        """Scores for all ``ids``: the model's rows where known, popularity elsewhere."""
        out = np.tile(np.log1p(self.data.popularity)[None, :] * 1e-3, (len(ids), 1)).astype(np.float32)
        out[known] = scores_known
        return out


# --- objectives: params -> validation metrics (may report intermediate values for pruning) ---
def objective_als(task: ValidationTask, params: dict[str, Any], trial: Any = None) -> dict[str, dict[str, float]]:
    from threadpoolctl import threadpool_limits

    from startup_recs.train.als import ALSConfig, confidence, make_backend
    from startup_recs.train.params import from_params

    cfg = from_params(ALSConfig, params, tunable=SEARCH_SPACES["als"], track_loss=False).validate()
    conf = confidence(task.matrix, cfg.alpha, cfg.weighting)
    state: dict[str, Any] = {}

    def evaluate_factors(users: np.ndarray, items: np.ndarray) -> dict[str, dict[str, float]]:
        def fn(ids: list[str]) -> np.ndarray:
            rows = task.rows_of(ids)
            known = rows >= 0
            return task.with_fallback(ids, known, users[rows[known]] @ items.T)
        return task.score(fn)

    def on_iteration(it: int, _seconds: float, _loss: Any) -> None:
        # prune on intermediate validation NDCG every 5 iterations (TPE + median pruner)
        if trial is None or (it + 1) % 5 or it + 1 >= cfg.iterations:
            return
        m = state["model"]
        value = evaluate_factors(np.asarray(m.user_factors), np.asarray(m.item_factors))["all"][METRIC]
        trial.report(value, it + 1)
        if trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned at iteration {it + 1} (val {METRIC} {value:.4f})")

    with threadpool_limits(limits=1, user_api="blas"):
        model = make_backend(cfg)
        state["model"] = model
        model.fit(conf, show_progress=False, callback=on_iteration)
    users, items = np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)
    if not (np.isfinite(users).all() and np.isfinite(items).all()):
        return {"all": {METRIC: 0.0}}
    return evaluate_factors(users, items)


def objective_item2item(task: ValidationTask, params: dict[str, Any], trial: Any = None) -> dict[str, dict[str, float]]:
    from startup_recs.train.item2item import Item2ItemConfig, fit_item2item
    from startup_recs.train.params import from_params

    # "ease" means EASE where it fits: the model's own "auto" rule (BM25 kNN past the memory limit)
    method = "auto" if params["method"] == "ease" else params["method"]
    cfg = from_params(Item2ItemConfig, {**params, "method": method}, tunable=SEARCH_SPACES["item2item"],
                      use_case=task.use_case)
    model = fit_item2item(task.matrix, cfg)
    log.info("item2item trial ran %s", model.config.chosen)

    def fn(ids: list[str]) -> np.ndarray:
        rows = task.rows_of(ids)
        known = rows >= 0
        return task.with_fallback(ids, known, model.score(task.matrix[rows[known]]))
    return task.score(fn)


class _TwoTowerObjective:
    """Builds the two-tower dataset once (train/val rows only matter), then trains per trial."""

    def __init__(self, workdir: Path, task: ValidationTask, max_epochs: int, patience: int) -> None:
        from startup_recs.datasets.two_tower import build_two_tower

        self.workdir, self.task, self.max_epochs, self.patience = workdir, task, max_epochs, patience
        self.data_uri = str(workdir / "two_tower_tune.parquet")
        build_two_tower(task.snapshot, task.use_case, self.data_uri, split=task.split)

    def __call__(self, task: ValidationTask, params: dict[str, Any], trial: Any = None) -> dict[str, dict[str, float]]:
        import torch

        from startup_recs.serving.retrievers import load_retrievers
        from startup_recs.train.params import from_params
        from startup_recs.train.two_tower import TwoTowerConfig, fit

        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        out = self.workdir / f"trial-{getattr(trial, 'number', 'x')}"
        cfg = from_params(TwoTowerConfig, params, tunable=SEARCH_SPACES["two-tower"], use_case=task.use_case,
                          epochs=self.max_epochs, patience=self.patience, fit_on="train", progress=False)
        fit(cfg, self.data_uri, str(out))
        retriever = load_retrievers(str(out), task.data).get("two_tower")
        if retriever is None:
            raise DataError("two-tower trial wrote no embeddings")
        return task.score(lambda ids: retriever.score(ids))


class _RankerObjective:
    """Builds the ranker's lists once from the stage-1 retrievers, exactly as its trainer does
    (:func:`startup_recs.train.ranker.training_lists`), then fits per trial."""

    def __init__(self, task: ValidationTask, data_uri: str, retrievers_dir: str) -> None:
        from startup_recs.train.ranker import RankerTrainConfig, training_lists

        self.base = RankerTrainConfig(use_case=task.use_case)
        self.lists, _ = training_lists(self.base, data_uri, retrievers_dir, snapshot=task.snapshot)

    def __call__(self, task: ValidationTask, params: dict[str, Any], trial: Any = None) -> dict[str, dict[str, float]]:
        from dataclasses import replace

        from startup_recs.train.params import check_params
        from startup_recs.train.ranker import RankerTrainConfig, fit

        hidden = tuple(int(h) for h in str(params["hidden"]).split(","))
        tuned = check_params(RankerTrainConfig, {**params, "hidden": hidden}, SEARCH_SPACES["ranker"])
        result = fit(self.lists, replace(self.base, **tuned))
        return {"all": {METRIC: float(result.metrics.get("holdout_ndcg@10", 0.0))}}


# --- the search --------------------------------------------------------------------------------
def tune(snapshot: str, use_case: str, model: str, out: str, *, trials: int = 20, timeout: float | None = None,
         seed: int = 0, split_at: Any = None, test_days: float = 14.0, val_days: float = 14.0,
         data: str | None = None, retrievers: str | None = None, max_epochs: int = 15,
         patience: int = 3, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the search; write ``best_params.json`` and ``trials.csv`` into ``out``; return the summary.

    Trial 0 always runs ``defaults`` (the trainer config's, :func:`default_params`, unless given;
    a key that is not searched raises :class:`ConfigError`), so the summary can say how much the
    search gained over them on validation."""
    import optuna

    if model not in SEARCH_SPACES:
        raise ConfigError(f"unknown model {model!r}; expected one of: {', '.join(MODELS)}")
    if trials < 1:
        raise ConfigError("--trials must be >= 1")
    baseline = {**default_params(model), **check_search_params(model, defaults, "default")}
    t0 = time.perf_counter()
    task = ValidationTask.build(snapshot, use_case, split_at, test_days, val_days)
    log.info("tune %s/%s: %d train entities x %d candidates, %d validation entities", use_case, model,
             task.matrix.shape[0], task.matrix.shape[1], len(task.target.entity_ids))
    scratch = Path(tempfile.mkdtemp(prefix="recs-tune-"))
    objective: Callable[..., dict[str, dict[str, float]]]
    if model == "als":
        objective = objective_als
    elif model == "item2item":
        objective = objective_item2item
    elif model == "two-tower":
        objective = _TwoTowerObjective(scratch, task, max_epochs, patience)
    else:
        if not (data and retrievers):
            raise ConfigError("--model ranker needs --data (ranker dataset) and --retrievers (stage-1 models)")
        objective = _RankerObjective(task, data, retrievers)

    records: list[dict[str, Any]] = []

    def run(trial: optuna.Trial) -> float:
        params = suggest(trial, model)
        t = time.perf_counter()
        metrics = objective(task, params, trial)
        value = float(metrics["all"][METRIC])
        records.append({"number": trial.number, "value": value, "params": params,
                        "seconds": round(time.perf_counter() - t, 2),
                        "segments": {s: m.get(METRIC) for s, m in metrics.items() if s != "all"}})
        log.info("trial %d: val %s %.4f %s (%.1fs)", trial.number, METRIC, value, params, time.perf_counter() - t)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    study.enqueue_trial(baseline)  # trial 0 = the defaults: the baseline the search must beat
    study.optimize(run, n_trials=trials, timeout=timeout, catch=())
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise DataError("no trial completed")
    best = study.best_trial
    default_value = next((r["value"] for r in records if r["number"] == 0), None)
    summary = {
        "model": model, "use_case": use_case, "metric": f"validation {METRIC}",
        "split": task.split.to_dict() if hasattr(task.split, "to_dict") else str(task.split),
        "best_params": best.params, "best_value": best.value,
        "default_params": baseline, "default_value": default_value,
        "n_trials": len(study.trials), "n_complete": len(done),
        "n_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "seconds": round(time.perf_counter() - t0, 1),
        "trials": [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                    "seconds": next((r["seconds"] for r in records if r["number"] == t.number), None)}
                   for t in study.trials],
    }
    storage.write_json(storage.join(out, artifacts.BEST_PARAMS), summary)
    rows = [{"number": t["number"], "state": t["state"], "value": t["value"], **t["params"]} for t in summary["trials"]]
    with storage.atomic_local_path(storage.join(out, artifacts.TRIALS)) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return summary


def trials_table(summary: dict[str, Any], limit: int = 15) -> str:
    """A Markdown table of the trials, best first (for report.md and the KFP UI)."""
    ok = [t for t in summary["trials"] if t["value"] is not None]
    ok.sort(key=lambda t: -t["value"])
    names = list(SEARCH_SPACES[summary["model"]])
    lines = ["| trial | state | val " + METRIC + " | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for t in ok[:limit]:
        vals = [f"{t['params'].get(n):.4g}" if isinstance(t["params"].get(n), float) else str(t["params"].get(n))
                for n in names]
        mark = " (default)" if t["number"] == 0 else ""
        lines.append(f"| {t['number']}{mark} | {t['state']} | {t['value']:.4f} | " + " | ".join(vals) + " |")
    pruned = summary.get("n_pruned", 0)
    lines.append(f"\n{summary['n_complete']} complete, {pruned} pruned, {summary['seconds']} s; "
                 f"best {summary['best_value']:.4f} vs default {summary['default_value'] or float('nan'):.4f}")
    return "\n".join(lines)


# --- Katib ---------------------------------------------------------------------------------------
def katib_experiment(model: str, use_case: str = "startup_developer", *, image: str | None = None,
                     max_trials: int = 40, parallel: int = 4, models_uri: str = "s3://models") -> dict[str, Any]:
    """A Katib ``Experiment`` (kubeflow.org/v1beta1) with the same search space as Optuna.

    Each Katib trial runs ``recs tune --trial-params '{...}'`` which fits once and prints
    ``ndcg_at_10=<value>`` for Katib's stdout metrics collector. Its data is the snapshot the
    bundle published under ``<models_uri>/<use_case>`` was trained on (the publish step records
    it in the manifest; pipeline snapshots are run artifacts without a fixed path).
    """
    from startup_recs.core.images import image as image_of

    params = []
    for name, spec in SEARCH_SPACES[model].items():
        if spec[0] == "cat":
            params.append({"name": name, "parameterType": "categorical",
                           "feasibleSpace": {"list": [str(c) for c in spec[1]]}})
        else:
            fs = {"min": str(spec[1]), "max": str(spec[2])}
            if spec[3]:
                fs["distribution"] = "logUniform"
            params.append({"name": name, "parameterType": "int" if spec[0] == "int" else "double",
                           "feasibleSpace": fs})
    json_params = "{" + ", ".join(
        f'"{p["name"]}": ' + (f'"${{trialParameters.{p["name"]}}}"' if p["parameterType"] == "categorical"
                              else f'${{trialParameters.{p["name"]}}}')
        for p in params) + "}"
    name = f"tune-{model.replace('_', '-')}-{use_case.replace('_', '-')}"
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "startup-recs"}},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "ndcg_at_10"},
            "algorithm": {"algorithmName": "tpe"},
            "earlyStopping": {"algorithmName": "medianstop"},
            "maxTrialCount": max_trials, "parallelTrialCount": parallel, "maxFailedTrialCount": 3,
            "parameters": params,
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
            "trialTemplate": {
                "primaryContainerName": "training-container",
                "trialParameters": [{"name": p["name"], "reference": p["name"]} for p in params],
                "trialSpec": {
                    "apiVersion": "batch/v1", "kind": "Job",
                    "spec": {"template": {"spec": {
                        "restartPolicy": "Never",
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                        "containers": [{
                            "name": "training-container",
                            "image": image or image_of("base"),
                            # the snapshot the published bundle was trained on (its manifest's "data")
                            "command": ["recs", "tune", "--snapshot", f"{models_uri.rstrip('/')}/{use_case}",
                                        "--use-case", use_case, "--model", model, "--out", "/tmp/tune",
                                        "--trial-params", json_params],
                            "envFrom": [{"configMapRef": {"name": "recs-storage"}},
                                        {"secretRef": {"name": "recs-s3"}}],
                            "resources": {"requests": {"cpu": "2", "memory": "4Gi"},
                                          "limits": {"cpu": "2", "memory": "8Gi"}},
                            "securityContext": {"allowPrivilegeEscalation": False,
                                                "capabilities": {"drop": ["ALL"]}},
                        }],
                    }}},
                },
            },
        },
    }


def run_single(snapshot: str, use_case: str, model: str, params: dict[str, Any], **kw: Any) -> float:
    """One fit with fixed ``params`` (a Katib trial); returns the validation NDCG@10. A key that
    is not searched raises :class:`ConfigError` naming it, before any data is read."""
    if model not in ("als", "item2item"):
        raise ConfigError(f"--trial-params supports als and item2item; use the pipeline for {model}")
    full = {**default_params(model), **check_search_params(model, params)}
    task = ValidationTask.build(snapshot, use_case, kw.get("split_at"), kw.get("test_days", 14.0),
                                kw.get("val_days", 14.0))
    metrics = objective_als(task, full) if model == "als" else objective_item2item(task, full)
    return float(metrics["all"][METRIC])


KATIB_DIR = "manifests/katib"


def katib_manifests() -> dict[str, str]:
    """File name -> YAML text of every committed Katib Experiment (``manifests/katib/``)."""
    import yaml

    header = ("# Generated by `recs tune --katib-manifest --model {m}` from startup_recs.tuning.search.SEARCH_SPACES\n"
              "# (the same search space the pipeline's Optuna step uses). Regenerate, don't edit.\n")
    return {f"tune-{m}.yaml": header.format(m=m) + yaml.safe_dump(katib_experiment(m), sort_keys=False)
            for m in ("als", "item2item")}


def snapshot_of(uri: str) -> str:
    """``uri`` itself when it is a snapshot; for a published bundle or use-case folder (what a
    Katib trial is given: the pipeline's snapshots are run artifacts with no fixed path), the
    snapshot its manifest records it was trained on."""
    from startup_recs.core import bundle
    from startup_recs.core.errors import BundleError

    try:
        data = bundle.trained_on(uri)
    except BundleError:
        return uri  # not a bundle: a snapshot folder
    if "snapshot" not in data:
        raise ConfigError(f"{uri} is a published bundle whose manifest records no snapshot")
    log.info("snapshot of %s: %s", uri, data["snapshot"])
    return data["snapshot"]


def cli_tune(args: argparse.Namespace) -> int:
    if args.katib_manifest:
        import yaml

        print(yaml.safe_dump(katib_experiment(args.model, args.use_case), sort_keys=False))
        return 0
    if not args.snapshot:
        raise ConfigError("--snapshot is required")
    args.snapshot = snapshot_of(args.snapshot)
    if args.trial_params:
        try:
            params = json.loads(args.trial_params)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--trial-params is not JSON: {exc}") from None
        value = run_single(args.snapshot, args.use_case, args.model, params, split_at=args.split_at,
                           test_days=args.test_days, val_days=args.val_days)
        print(f"ndcg_at_10={value:.6f}")
        return 0
    s = tune(args.snapshot, args.use_case, args.model, args.out, trials=args.trials, timeout=args.timeout,
             seed=args.seed, split_at=args.split_at, test_days=args.test_days, val_days=args.val_days,
             data=args.data, retrievers=args.retrievers, max_epochs=args.max_epochs, patience=args.patience)
    print(trials_table(s))
    print(f"best params -> {storage.join(args.out, artifacts.BEST_PARAMS)}: {s['best_params']}")
    if s["default_value"] and s["best_value"] and not math.isnan(s["default_value"]):
        print(f"validation {METRIC}: default {s['default_value']:.4f} -> tuned {s['best_value']:.4f} "
              f"({s['best_value'] / max(s['default_value'], 1e-9):.2f}x)")
    return 0
