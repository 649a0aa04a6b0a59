"""``recs``: the command line. Flags follow the legacy scripts (``generate_*_dataset``,
``train_two_tower.py``, ``train_als_reverse.py``, ``train_ranker.py``).

Each subcommand is declared here and dispatched lazily to one core function, so ``recs --help``
stays fast and a missing optional dependency only affects the command that needs it. Trainer
flags take their defaults from the trainer's config dataclass (:class:`ConfigDefault`), read
only when that command runs. Any :class:`~startup_recs.core.errors.RecsError` becomes a
one-line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from startup_recs import __version__
from startup_recs.core.errors import RecsError
from startup_recs.serving.flags import add_serve_flags

Handler = Callable[[argparse.Namespace], int | None]
USE_CASE_HELP = "startup_developer | startup_investor | developer_startup | investor_startup"
# Where `recs extract --out` puts the snapshot in the README; the dataset commands read it by default,
# so the legacy guide's dataset commands (which name no snapshot) work as written.
DEFAULT_SNAPSHOT = "data/snapshot"
SNAPSHOT_HELP = f"snapshot directory (recs extract --out; default {DEFAULT_SNAPSHOT})"


class ConfigDefault:
    """A flag default that is a field of a trainer's config dataclass, looked up when needed.

    The parser holds this placeholder instead of the value because importing a trainer (torch,
    for two-tower and the ranker) would make every ``recs`` call slow; :func:`resolve_defaults`
    puts the field's default in its place just before the command runs, and a help text's
    ``%(default)s`` shows it (importing the trainer only when that help is printed).
    """

    def __init__(self, module: str, config: str, field: str, convert: Callable[[Any], Any] | None = None) -> None:
        self.module, self.config, self.field, self.convert = module, config, field, convert

    def value(self) -> Any:
        import importlib

        from startup_recs.train.params import config_defaults

        cls = getattr(importlib.import_module(f"startup_recs.{self.module}"), self.config)
        value = config_defaults(cls)[self.field]
        return self.convert(value) if self.convert else value

    def __str__(self) -> str:
        return str(self.value())

    def __repr__(self) -> str:
        return f"{self.config}.{self.field}"


def _two_tower(field: str) -> ConfigDefault:
    return ConfigDefault("train.two_tower", "TwoTowerConfig", field)


def _als(field: str) -> ConfigDefault:
    return ConfigDefault("train.als", "ALSConfig", field)


def _ranker(field: str, convert: Callable[[Any], Any] | None = None) -> ConfigDefault:
    return ConfigDefault("train.ranker", "RankerTrainConfig", field, convert)


def _item2item(field: str, convert: Callable[[Any], Any] | None = None) -> ConfigDefault:
    return ConfigDefault("train.item2item", "Item2ItemConfig", field, convert)


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Replace every :class:`ConfigDefault` left in ``args`` (flag not given) by its value."""
    for name, value in vars(args).items():
        if isinstance(value, ConfigDefault):
            setattr(args, name, value.value())
    return args


def _lazy(module: str, func: str) -> Handler:
    def run(args: argparse.Namespace) -> int | None:
        import importlib

        return getattr(importlib.import_module(f"startup_recs.{module}"), func)(resolve_defaults(args))

    return run


def _add_split_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split-at", default=None,
                   help="test split timestamp (ISO-8601); default: --test-days before the last event")
    p.add_argument("--test-days", type=float, default=14.0, help="test window when --split-at is not given")
    p.add_argument("--val-days", type=float, default=14.0, help="validation window just before the split")


# --- synth / extract (data in) ------------------------------------------------------------------
def _synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a synthetic marketplace with planted ground truth")
    p.add_argument("--db", default="sqlite:///data/marketplace.db", help="SQLAlchemy URL or SQLite path")
    p.add_argument("--size", choices=["tiny", "small", "demo", "bench"], default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--oracle", default=None, help="where to write oracle.parquet (default: beside the DB)")
    p.add_argument("--force", action="store_true", help="replace existing tables")
    p.set_defaults(func=_lazy("synth.cli", "cli_synth"))


def _extract(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="app database or imported log -> validated Parquet snapshot")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", help="SQLAlchemy URL (postgresql+psycopg://..., sqlite:///file.db)")
    src.add_argument("--events", help="an external interaction log (Parquet or CSV) to import")
    p.add_argument("--out", required=True, help="snapshot directory (local path, file:// or s3://)")
    p.add_argument("--since", default=None, help="append only events newer than this timestamp")
    p.add_argument("--chunk-size", type=int, default=100_000, help="rows per streamed read")
    p.add_argument("--use-case", default=None, help=f"with --events: {USE_CASE_HELP}")
    p.add_argument("--entity-col", default="entity_id")
    p.add_argument("--candidate-col", default="candidate_id")
    p.add_argument("--time-col", default="ts")
    p.add_argument("--event-col", default="event")
    p.add_argument("--weight-col", default="weight")
    p.add_argument("--entity-features", default=None, help="optional entity feature table (Parquet/CSV)")
    p.add_argument("--candidate-features", default=None, help="optional candidate feature table")
    p.add_argument("--event-weights", default=None, help="JSON object or file: event -> weight")
    p.add_argument("--sessions", default=None, metavar="URI",
                   help="Parquet session parts the predictor logged (recs serve --log-sessions <folder or s3://>): "
                        "appended as recommendation_sessions / impressions, incrementally")
    p.set_defaults(func=_lazy("data.extract", "cli_extract"))


# --- datasets ------------------------------------------------------------------------------------
def _dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="build training datasets from a snapshot")
    ds = p.add_subparsers(dest="dataset", required=True)

    tt = ds.add_parser("two-tower", help="pairs with hard negatives (legacy generate_two_tower_dataset)")
    tt.add_argument("--snapshot", default=DEFAULT_SNAPSHOT, help=SNAPSHOT_HELP)
    tt.add_argument("--use-case", required=True, help=USE_CASE_HELP)
    tt.add_argument("--output", required=True, help=".parquet (default) or .csv")
    tt.add_argument("--negative-samples", type=int, default=5)
    tt.add_argument("--min-interactions", type=int, default=1)
    tt.add_argument("--seed", type=int, default=0)
    _add_split_flags(tt)
    tt.set_defaults(func=_lazy("datasets.two_tower", "cli_build"))

    als = ds.add_parser("als", help="sparse entity x candidate matrix (legacy generate_als_dataset)")
    als.add_argument("--snapshot", default=DEFAULT_SNAPSHOT, help=SNAPSHOT_HELP)
    als.add_argument("--use-case", required=True, help=USE_CASE_HELP)
    als.add_argument("--output-dir", required=True)
    als.add_argument("--min-interactions", type=int, default=1)
    als.add_argument("--fit-window", choices=["train", "trainval", "all"], default="train",
                     help="events before the validation start (train, default: the window the two-tower's default "
                          "--fit-on and the ranker's features use), before --split-at (trainval: the final refit) "
                          "or every event (all: the published refit)")
    _add_split_flags(als)
    als.set_defaults(func=_lazy("datasets.als", "cli_build"))

    rk = ds.add_parser("ranker", help="pairs with inverse-propensity weights (legacy generate_ranker_dataset)")
    rk.add_argument("--snapshot", default=DEFAULT_SNAPSHOT, help=SNAPSHOT_HELP)
    rk.add_argument("--use-case", required=True, help=USE_CASE_HELP)
    rk.add_argument("--output", required=True, help=".parquet (default) or .csv")
    rk.add_argument("--neg-ratio", type=float, default=2.0)
    rk.add_argument("--propensity-clip", type=float, default=0.05, help="lower clip of the propensity")
    rk.add_argument("--seed", type=int, default=0)
    _add_split_flags(rk)
    rk.set_defaults(func=_lazy("datasets.ranker", "cli_build"))


# --- training: defaults from each trainer's config dataclass ------------------------------------
def _train_two_tower(tr: argparse._SubParsersAction) -> None:
    p = tr.add_parser("two-tower", help="two-tower retrieval model (legacy train_two_tower.py)")
    p.add_argument("--data", required=True, help="two-tower dataset Parquet (recs dataset two-tower)")
    p.add_argument("--use-case", default=None, help=USE_CASE_HELP)
    p.add_argument("--epochs", type=int, default=_two_tower("epochs"), help="default %(default)s")
    p.add_argument("--batch-size", type=int, default=_two_tower("batch_size"), help="default %(default)s")
    p.add_argument("--lr", type=float, default=_two_tower("lr"), help="default %(default)s")
    p.add_argument("--embedding-dim", type=int, default=_two_tower("embedding_dim"), help="default %(default)s")
    p.add_argument("--output-dir", default="models")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=_two_tower("device"))
    p.add_argument("--resume", action="store_true", help="continue from the _latest checkpoint")
    p.add_argument("--evaluate", action="store_true", help="evaluate a saved model instead of training")
    p.add_argument("--model", default=None, help="with --evaluate: checkpoint .pth")
    p.add_argument("--config", default=None, help="with --evaluate: config .json")
    p.add_argument("--fit-on", choices=["train", "trainval", "all"], default=_two_tower("fit_on"),
                   help="train: early stopping on val; trainval: train+val, all: every event, for exactly --epochs")
    p.add_argument("--patience", type=int, default=_two_tower("patience"),
                   help="epochs without val improvement (default %(default)s)")
    p.add_argument("--temperature", type=float, default=_two_tower("temperature"),
                   help="softmax temperature (default %(default)s)")
    p.add_argument("--hard-negatives", type=int, default=_two_tower("hard_negatives"),
                   help="hard negatives per positive (default %(default)s)")
    p.add_argument("--no-log-q", dest="log_q", action="store_false", default=_two_tower("log_q"),
                   help="disable the popularity correction")
    p.add_argument("--id-dropout", type=float, default=_two_tower("id_dropout"),
                   help="prob. of training on features only (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=_two_tower("weight_decay"), help="default %(default)s")
    p.add_argument("--no-shared-tokens", dest="shared_tokens", action="store_false", default=_two_tower("shared_tokens"),
                   help="no shared token table for fields both sides hold (skills needed / skills, location, ...)")
    p.add_argument("--pair-init", type=float, default=_two_tower("pair_init"),
                   help="norm of a shared token's vector at init (default %(default)s)")
    p.add_argument("--val-k", type=int, default=_two_tower("val_k"),
                   help="early stopping on Recall@K (default %(default)s)")
    p.add_argument("--seed", type=int, default=_two_tower("seed"))
    p.add_argument("--compile", action="store_true", default=_two_tower("compile"),
                   help="torch.compile the training step")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_lazy("train.two_tower", "cli_train"))


def _train_als(tr: argparse._SubParsersAction) -> None:
    p = tr.add_parser("als", help="implicit-feedback ALS (legacy train_als_reverse.py)")
    p.add_argument("--data", required=True, help="als_interactions*.npz")
    p.add_argument("--user-mapping", required=True, help="entity id -> row JSON")
    p.add_argument("--item-mapping", required=True, help="candidate id -> column JSON")
    p.add_argument("--use-case", required=True, help=USE_CASE_HELP)
    p.add_argument("--factors", type=int, default=_als("factors"), help="default %(default)s")
    p.add_argument("--iterations", type=int, default=_als("iterations"), help="default %(default)s")
    p.add_argument("--regularization", type=float, default=_als("regularization"), help="default %(default)s")
    p.add_argument("--alpha", type=float, default=_als("alpha"), help="default %(default)s")
    p.add_argument("--output-dir", default="models")
    p.add_argument("--model-name", default=None, help="default als{_reverse}_v1")
    p.add_argument("--weighting", choices=["linear", "binary", "log", "bm25"], default=_als("weighting"),
                   help="confidence = 1 + alpha * f(weight)")
    p.add_argument("--seed", type=int, default=_als("seed"))
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=_als("device"))
    p.add_argument("--track-loss", action="store_true", default=_als("track_loss"),
                   help="record the training loss per iteration "
                   "(for the report's training curve; costs ~15-20 %% of the fit)")
    p.set_defaults(func=_lazy("train.als", "cli_train"))


def _train_ranker(tr: argparse._SubParsersAction) -> None:
    p = tr.add_parser("ranker", help="neural re-ranker (legacy train_ranker.py)")
    p.add_argument("--data", required=True, help="ranker dataset Parquet (recs dataset ranker)")
    p.add_argument("--use-case", default=None, help=USE_CASE_HELP)
    p.add_argument("--epochs", type=int, default=_ranker("epochs"), help="default %(default)s")
    p.add_argument("--batch-size", type=int, default=_ranker("batch_size"), help="lists per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=_ranker("lr"), help="default %(default)s")
    p.add_argument("--output-dir", default="models", help="also where the retrievers' models are read")
    p.add_argument("--retrievers", default=None,
                   help="stage-1 models (fit before the validation start) that give the features; default --output-dir")
    p.add_argument("--serving-data", default=None, help="stage-1 ServingData folder (default <retrievers>/serving)")
    p.add_argument("--snapshot", default=None,
                   help="else build the stage-1 serving data from this snapshot (default: the dataset's recorded one)")
    p.add_argument("--hidden", default=_ranker("hidden", lambda sizes: ",".join(str(h) for h in sizes)),
                   help="MLP hidden sizes, comma-separated (default %(default)s)")
    p.add_argument("--loss", choices=["listwise", "pairwise"], default=_ranker("loss"),
                   help="within-list loss: softmax cross-entropy or RankNet pairs")
    p.add_argument("--lists", choices=["pool", "entity", "session"], default=_ranker("lists"),
                   help="what one list spans: the entity's routed top --retrieve-k (what serving re-ranks), "
                        "all of its validation rows, or one logged session")
    p.add_argument("--extra-negatives", type=int, default=_ranker("extra_negatives"),
                   help="pool: negatives kept per list for the loss (0 = all); entity: retrieved-but-not-acted "
                        "candidates added per list (0 = logged rows only)")
    p.add_argument("--retrieve-k", type=int, default=_ranker("retrieve_k"),
                   help="re-rank depth the extra negatives come from (default %(default)s)")
    p.add_argument("--positives", choices=["dataset", "both"], default=_ranker("positives"),
                   help="learn from the dataset's session positives only, or also every validation-window "
                        "positive event (organic ones too; pool/entity lists)")
    p.add_argument("--holdout", type=float, default=_ranker("holdout"),
                   help="fraction of entities held out for the best checkpoint (default %(default)s)")
    p.add_argument("--patience", type=int, default=_ranker("patience"),
                   help="epochs without holdout gain before stopping (default %(default)s)")
    p.add_argument("--seed", type=int, default=_ranker("seed"))
    p.set_defaults(func=_lazy("train.ranker", "cli_train"))


def _train_item2item(tr: argparse._SubParsersAction) -> None:
    p = tr.add_parser("item2item", help="item-to-item retriever: EASE, or item-kNN past EASE's memory limit")
    p.add_argument("--data", required=True, help="als_interactions*.npz (the ALS dataset)")
    p.add_argument("--user-mapping", required=True)
    p.add_argument("--item-mapping", required=True)
    p.add_argument("--use-case", required=True, help=USE_CASE_HELP)
    p.add_argument("--method", choices=["auto", "ease", "cosine", "bm25"], default=_item2item("method"))
    p.add_argument("--lam", type=float, default=_item2item("lam"), help="EASE L2 strength (default %(default)s)")
    p.add_argument("--neighbours", type=int, default=_item2item("neighbours"), help="item-kNN K (default %(default)s)")
    p.add_argument("--memory-gb", type=float, default=_item2item("memory_budget", lambda b: b / 1024**3),
                   help="EASE memory budget in GiB, which sets its candidate limit (default %(default)s)")
    p.add_argument("--output-dir", default="models")
    p.set_defaults(func=_lazy("train.item2item", "cli_train"))


def _train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model")
    tr = p.add_subparsers(dest="model_kind", required=True)
    for add in (_train_two_tower, _train_als, _train_ranker, _train_item2item):
        add(tr)


# --- evaluation ----------------------------------------------------------------------------------
def _evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="ranking metrics of every model and the routed system")
    p.add_argument("--snapshot", required=True)
    p.add_argument("--models", required=True, help="models directory")
    p.add_argument("--use-case", required=True, help=USE_CASE_HELP)
    p.add_argument("--k", default="10,20,50", help="comma-separated cut-offs")
    p.add_argument("--out", required=True, help="where metrics.json, report.md and plots go")
    p.add_argument("--oracle", default=None, help="oracle.parquet from recs synth (optional)")
    p.add_argument("--val-models", default=None,
                   help="stage-1 models (fit before the validation start): the warm route is chosen on validation")
    p.add_argument("--forward-models", default=None,
                   help="reverse use cases: the forward twin's final models folder (adds the reciprocal model)")
    p.add_argument("--forward-val-models", default=None,
                   help="the forward twin's stage-1 folder: with --val-models the reciprocal scorer is fitted on validation")
    _add_split_flags(p)
    p.set_defaults(func=_lazy("evaluation.protocol", "cli_evaluate"))


# --- serving: `recs serve`, dispatched lazily into predictors/ (the core never imports kserve) ------
def _run_serve(args: argparse.Namespace) -> int | None:
    from startup_recs.serving.experiments import parse_experiments
    from startup_recs.serving.reload import expand_sources

    # a wrong --bundle or --experiment fails here, before kserve and torch are imported
    parse_experiments(args.experiment, expand_sources(args.bundle))
    from predictors.server import cli_serve

    return cli_serve(args)


def _serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve published bundles with a KServe ModelServer (REST, loopback)")
    add_serve_flags(p)
    p.add_argument("--port", type=int, default=8080, help="HTTP port")
    p.set_defaults(func=_run_serve)


# --- pipeline: `recs pipeline ...`, `recs demo`, dispatched lazily into pipelines/ (kfp) -----------
def _lazy_pipelines(func: str) -> Handler:
    def run(args: argparse.Namespace) -> int | None:
        import importlib

        return getattr(importlib.import_module("pipelines.cli"), func)(args)

    return run


def _pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="the Kubeflow training pipeline: compile, submit, run-local")
    pp = p.add_subparsers(dest="pipeline_command", required=True)
    option_help = "compile option KEY=VALUE (gpu_node_label_key, gpu_toleration_key, trainer_memory, ...)"

    c = pp.add_parser("compile", help="write the IR YAML to upload in the Kubeflow UI")
    c.add_argument("-o", "--output", default="reverse_recommendation_training.yaml")
    c.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help=option_help)
    c.set_defaults(func=_lazy_pipelines("cli_compile"))

    s = pp.add_parser("submit", help="create a run (or with --schedule a recurring run) via kfp.Client")
    s.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    s.add_argument("--namespace", default=None, help="profile namespace (multi-user KFP)")
    s.add_argument("--experiment", default="startup-recs")
    s.add_argument("--run-name", default=None)
    s.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter")
    s.add_argument("--schedule", default=None, metavar="CRON", help="recurring run, e.g. '0 3 * * *'")
    s.add_argument("--token", default=None, help="bearer token (default: $KF_PIPELINES_TOKEN, kfp's own auth)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help=option_help)
    s.set_defaults(func=_lazy_pipelines("cli_submit"))

    r = pp.add_parser("run-local", help="run the whole pipeline here through kfp.local")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", help="SQLAlchemy URL or SQLite path of the app database")
    src.add_argument("--events", help="an interaction log (Parquet or CSV) to import")
    for flag, what in (("--entity-col", "entity id column (default entity_id)"),
                       ("--candidate-col", "candidate id column (default candidate_id)"),
                       ("--time-col", "event time column (default ts)"), ("--event-col", "event column (default event)"),
                       ("--weight-col", "weight column (default weight)"),
                       ("--event-weights", "JSON object or file: event -> weight")):
        r.add_argument(flag, default=None, help=f"with --events: {what}")
    r.add_argument("--use-case", action="append", default=None,
                   help=f"repeatable; default: all four use cases ({USE_CASE_HELP})")
    r.add_argument("--parallelism", type=int, default=0,
                   help="use cases trained at once (default 0: all; executor logs go to WORKDIR/logs/)")
    r.add_argument("--split-at", default=None, help="test split timestamp (ISO-8601)")
    r.add_argument("--test-days", type=float, default=None)
    r.add_argument("--val-days", type=float, default=None)
    r.add_argument("--models-uri", default=None, help="where bundles are published (default WORKDIR/models)")
    r.add_argument("--workdir", default="pipeline_out", help="kfp.local root, cache and evaluation copies")
    r.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter")
    r.add_argument("--no-cache", action="store_true", help="rerun every step")
    r.set_defaults(func=_lazy_pipelines("cli_run_local"))


def _demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synthetic data -> full pipeline -> published bundles -> evaluation table")
    p.add_argument("--workdir", default="demo_out")
    p.add_argument("--size", choices=["tiny", "small", "demo", "bench"], default="demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="regenerate the synthetic database")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter")
    p.add_argument("--no-cache", action="store_true", help="rerun every step")
    p.add_argument("--no-serve", action="store_true", help="do not start `recs serve` on the bundles afterwards")
    p.add_argument("--port", type=int, default=8080, help="port of the demo predictor (loopback)")
    p.set_defaults(func=_lazy_pipelines("cli_demo"))


# --- online evaluation: the traffic simulator and the monitor --------------------------------------
def _simulate_traffic(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate-traffic", help="the planted world answers the slates of a predictor or a baseline")
    p.add_argument("--db", required=True, help="the app database recs synth wrote (SQLAlchemy URL or SQLite path)")
    p.add_argument("--size", choices=["tiny", "small", "demo", "bench"], required=True,
                   help="the world's size (checked against the database's synth_meta)")
    p.add_argument("--seed", type=int, required=True, help="the world's seed (checked against synth_meta)")
    p.add_argument("--use-case", required=True, help=USE_CASE_HELP)
    p.add_argument("--sessions", type=int, required=True, help="sessions to simulate")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--url", help="a running predictor (recs serve --log-sessions on this database)")
    who.add_argument("--policy", choices=["random", "popularity"], help="a baseline without a predictor")
    p.add_argument("--days", type=float, default=7.0, help="virtual days the sessions spread over (default 7)")
    p.add_argument("--traffic-seed", type=int, default=0, help="seed of the traffic and the response (default 0)")
    p.add_argument("--limit", type=int, default=10, help="slate size asked (default 10)")
    p.add_argument("--batch", type=int, default=32, help="sessions per predictor request (default 32)")
    p.set_defaults(func=_lazy("synth.traffic", "cli_simulate_traffic"))


def _monitor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="online evaluation: contact rate per model version / arm, with intervals")
    p.add_argument("--db", required=True, help="the app database (SQLAlchemy URL or SQLite path)")
    p.add_argument("--use-case", required=True, help=USE_CASE_HELP)
    p.add_argument("--since", default=None, help="first session time (ISO-8601, naive = UTC)")
    p.add_argument("--until", default=None, help="sessions before this time (ISO-8601)")
    p.add_argument("--window-days", type=float, default=7.0, help="attribution window after a session (default 7)")
    p.add_argument("--experiment", default=None, metavar="NAME:PERCENT",
                   help="arms by this experiment's assignment (e.g. an A/A test) instead of by model version")
    p.add_argument("--baseline", default=None, help="compare every arm with this one (default: every pair)")
    p.add_argument("--n-boot", type=int, default=2000, help="entity bootstrap resamples (default 2000)")
    p.add_argument("--out", required=True, help="where metrics.json, report.md and the plots go")
    p.set_defaults(func=_lazy("evaluation.online", "cli_monitor"))


# --- published bundles ----------------------------------------------------------------------------
def _bundle(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="operate on published bundles")
    bsub = p.add_subparsers(dest="bundle_command", required=True)
    r = bsub.add_parser("rollback", help="point 'latest' back at an earlier version, after verifying it")
    r.add_argument("--models-uri", required=True, help="where bundles are published (local or s3://)")
    r.add_argument("--use-case", required=True, help=USE_CASE_HELP)
    r.add_argument("--to", required=True, metavar="vN", help="the version to serve again (v3 or 3)")
    r.set_defaults(func=_lazy("core.bundle_ops", "cli_rollback"))


# --- hyperparameter search ------------------------------------------------------------------------
def _tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="validation-based hyperparameter search (Optuna TPE)")
    p.add_argument("--snapshot", default=None)
    p.add_argument("--use-case", default="startup_developer", help=USE_CASE_HELP)
    p.add_argument("--model", choices=["als", "two-tower", "ranker", "item2item"], required=True)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--timeout", type=float, default=None, help="seconds for the whole search")
    p.add_argument("--out", default="tune", help="where best_params.json and trials.csv go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="ranker: the ranker dataset Parquet")
    p.add_argument("--retrievers", default=None, help="ranker: the stage-1 models folder")
    p.add_argument("--max-epochs", type=int, default=15, help="two-tower: epochs cap (early stopping on)")
    p.add_argument("--patience", type=int, default=3, help="two-tower: early-stopping patience")
    p.add_argument("--trial-params", default=None, help="JSON: run one fit with these params (Katib trial)")
    p.add_argument("--katib-manifest", action="store_true", help="print the Katib Experiment for --model")
    _add_split_flags(p)
    p.set_defaults(func=_lazy("tuning.search", "cli_tune"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recs", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"recs {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in REGISTRY:
        add(sub)
    return parser


# Sections are registered in this order; a new command adds a function of the same shape here.
REGISTRY: list[Callable[[argparse._SubParsersAction], None]] = [_synth, _extract, _dataset, _train, _evaluate, _serve, _pipeline, _demo, _tune,
                                                               _simulate_traffic, _monitor, _bundle]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except RecsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
