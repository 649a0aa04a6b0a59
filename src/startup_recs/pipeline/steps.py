"""The pipeline's steps as plain Python functions over folders: one per KFP component.

The components in ``components/`` are thin typed adapters over these (artifact paths in, a flat
provenance dict out into ``artifact.metadata``); ``benchmarks/bench_pipeline.py`` calls them
directly in one process to measure what kfp.local adds. Each step logs its progress, reads only
its input folders and writes only its output folder, and returns JSON scalars: rows, the data
watermark, and for models a content-derived version.

Folder layout of each artifact (what the next step reads):

- snapshot: ``recs extract`` output (one Parquet dataset dir per table + extract_stats.json);
- two-tower / ranker dataset: ``<stem>.parquet`` and its sidecars (docs/contracts.md);
- ALS dataset: ``recs dataset als --output-dir`` of one fit window;
- a model: the trainer's ``--output-dir`` (legacy file names);
- stage 1 (``train_ranker``'s output): the stage-1 two-tower + ALS files and the ranker;
- models (``evaluate``'s output): final two-tower + ALS, the stage-1 ranker, routing.json and
  ``serving/`` data: the folder that is published as a bundle;
- evaluation: metrics.json, report.md, routing.json and plots.
"""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from startup_recs import __version__
from startup_recs.core import storage
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.core.usecases import get_use_case

log = logging.getLogger(__name__)

EXTRACT_STATS = "extract_stats.json"
SERVING_DIR = "serving"
ROUTING = "routing.json"
STEP_ERROR_ENV = "RECS_STEP_ERROR_FILE"


# --- shared helpers ------------------------------------------------------------------------------
def setup_logging() -> None:
    """INFO logs to stderr in a component's process (kfp's executor configures none for us)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")


def _record_failure(step: str, exc: BaseException) -> None:
    """Leave the failing step's one-line message where ``recs pipeline run-local`` finds it."""
    import os

    path = os.environ.get(STEP_ERROR_ENV)
    if path:
        try:
            with open(path, "a") as f:
                f.write(json.dumps({"step": step, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        except OSError:
            pass


def _step(template: str):
    """Decorator: logging set-up, start/finish lines, failure recorded for run-local. ``template``
    may name arguments (``"tune-{model}"``)."""

    def wrap(fn):
        import functools
        import inspect
        import time

        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                name = template.format(**sig.bind(*args, **kwargs).arguments)
            except (KeyError, TypeError, IndexError):
                name = template
            setup_logging()
            t0 = time.perf_counter()
            log.info("step %s: start", name)
            try:
                out = fn(*args, **kwargs)
            except BaseException as exc:
                _record_failure(name, exc)
                log.error("step %s failed: %s", name, exc)
                raise
            log.info("step %s: done in %.1f s", name, time.perf_counter() - t0)
            return out

        return run

    return wrap


def log_metrics(artifact: Any, values: dict[str, Any]) -> None:
    """Log the float values on a KFP ``Metrics`` artifact (duck-typed: the core imports no kfp)
    and write them to its path too, so a local cache entry finds the artifact's file."""
    floats = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for k, v in floats.items():
        artifact.log_metric(k, v)
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(floats, indent=2, sort_keys=True))


def _opt(value: str) -> str | None:
    """KFP parameters cannot be None; an empty string means "not given"."""
    return value if value not in ("", None) else None


def _split_kwargs(split_at: str, test_days: float, val_days: float) -> dict[str, Any]:
    return {"split_at": _opt(split_at), "test_days": float(test_days), "val_days": float(val_days)}


def _fresh_dir(path: str) -> Path:
    """The output folder, empty (a retried task must not see a previous attempt's files)."""
    p = storage.local(path)
    if p.exists():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    p.mkdir(parents=True)
    return p


def snapshot_stats(snapshot: str) -> dict[str, Any]:
    uri = storage.join(snapshot, EXTRACT_STATS)
    return storage.read_json(uri) if storage.exists(uri) else {}


def _watermark(snapshot: str) -> str:
    return str(snapshot_stats(snapshot).get("watermark") or "")


def dir_digest(path: str | Path) -> str:
    """sha256 over a folder's relative file names and contents (12 hex): a model's version id."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:12]


def _scalars(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten to JSON scalars (artifact metadata is shown as a flat table in the KFP UI)."""
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_scalars(v, key + "."))
        elif isinstance(v, bool | int | float | str) or v is None:
            out[key] = v
        elif isinstance(v, list | tuple) and len(v) <= 8 and all(isinstance(x, int | float | str) for x in v):
            out[key] = ", ".join(map(str, v))
    return out


def _provenance(snapshot: str | None, use_case: str | None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"package_version": __version__}
    if snapshot:
        meta["data_watermark"] = _watermark(snapshot)
    if use_case:
        meta["use_case"] = use_case
    meta.update(_scalars(extra))
    return meta


def _find_one(folder: Path, pattern: str) -> Path:
    hits = sorted(folder.glob(pattern))
    if len(hits) != 1:
        raise DataError(f"{folder}: expected one {pattern}, found {len(hits)}")
    return hits[0]


# --- extract -------------------------------------------------------------------------------------
@_step("probe-source")
def probe_source(*, db_url: str = "", events_uri: str = "", time_col: str = "ts") -> str:
    """Newest event time of the source (ISO-8601 UTC), read without extracting anything.

    It becomes an input of ``extract``, so KFP's cache key of extract changes exactly when new
    events arrive. Raises :class:`ConfigError` unless exactly one source is given.
    """
    db_url, events_uri = _opt(db_url), _opt(events_uri)
    if bool(db_url) == bool(events_uri):
        raise ConfigError("give exactly one source: db_url or events_uri")
    import pandas as pd

    if events_uri:
        if not storage.exists(events_uri):
            raise ConfigError(f"events file {events_uri} does not exist")
        table = storage.read_table(events_uri, columns=[time_col])
        ts = pd.to_datetime(table.column(time_col).to_pandas(), utc=True, errors="coerce")
        newest = ts.max()
    else:
        import sqlalchemy as sa

        url = check_db_url(db_url)
        engine = sa.create_engine(url)
        try:
            names = set(sa.inspect(engine).get_table_names())
            tables = [t for t in ("startup_interactions", "user_interactions") if t in names]
            if not tables:
                raise DataError(f"{db_url}: no interaction tables (startup_interactions, user_interactions)")
            with engine.connect() as conn:
                values = [conn.execute(sa.text(f"select max(ts) from {t}")).scalar() for t in tables]
        except sa.exc.SQLAlchemyError as exc:
            raise ConfigError(f"cannot read {db_url}: {str(exc).splitlines()[0]}") from None
        finally:
            engine.dispose()
        stamps = [pd.to_datetime(v, utc=True) for v in values if v is not None]
        newest = max(stamps) if stamps else pd.NaT
    if pd.isna(newest):
        raise DataError("the source holds no events")
    watermark = newest.isoformat()
    log.info("source watermark: %s", watermark)
    return watermark


def check_db_url(db_url: str) -> str:
    """The SQLAlchemy URL of ``db_url`` (a bare path is SQLite); a SQLite file must exist (opening
    a missing one would silently create an empty database)."""
    from startup_recs.data.appdb import db_url as normalise_url
    from startup_recs.data.appdb import sqlite_path

    url = normalise_url(db_url)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise ConfigError(f"database file {path} does not exist")
    return url


@_step("extract")
def extract(out_dir: str, *, watermark: str = "", db_url: str = "", events_uri: str = "", use_case: str = "",
            entity_col: str = "entity_id", candidate_col: str = "candidate_id", time_col: str = "ts",
            event_col: str = "event", weight_col: str = "weight", event_weights: str = "") -> dict[str, Any]:
    """Database or event log -> snapshot folder. ``watermark`` is the probe's value: only a cache
    key here, but checked against what was extracted (newer data arriving in between is fine)."""
    from startup_recs.data import extract as ex

    db_url, events_uri = _opt(db_url), _opt(events_uri)
    if bool(db_url) == bool(events_uri):
        raise ConfigError("give exactly one source: db_url or events_uri")
    out = _fresh_dir(out_dir)
    if db_url:
        stats = ex.extract_db(db_url, str(out), event_weights=_opt(event_weights))
    else:
        if not _opt(use_case):
            raise ConfigError("an imported event log needs events_use_case (the use case its events belong to)")
        get_use_case(use_case)
        stats = ex.import_events(events_uri, str(out), use_case, entity_col=entity_col,
                                 candidate_col=candidate_col, time_col=time_col, event_col=event_col,
                                 weight_col=weight_col, event_weights=_opt(event_weights))
    stats = stats or snapshot_stats(str(out))
    rows = sum(int(v) for v in (stats.get("tables") or {}).values())
    log.info("snapshot: %d rows in %d tables, watermark %s (probe said %s)", rows,
             len(stats.get("tables") or {}), stats.get("watermark"), watermark)
    return _provenance(str(out), None, rows=rows, source=stats.get("source"),
                       tables=stats.get("tables") or {}, probe_watermark=watermark)


# --- datasets ------------------------------------------------------------------------------------
@_step("dataset-two-tower")
def dataset_two_tower(snapshot: str, use_case: str, out_dir: str, *, negative_samples: int = 5,
                      min_interactions: int = 1, seed: int = 0, split_at: str = "", test_days: float = 14.0,
                      val_days: float = 14.0) -> dict[str, Any]:
    from startup_recs.datasets.two_tower import build_two_tower

    uc = get_use_case(use_case)
    out = _fresh_dir(out_dir)
    info = build_two_tower(snapshot, use_case, str(out / f"{uc.artifact('two_tower')}.parquet"),
                           negative_samples=negative_samples, min_interactions=min_interactions, seed=seed,
                           **_split_kwargs(split_at, test_days, val_days))
    return _provenance(snapshot, use_case, rows=_rows(info), **_counts(info))


@_step("dataset-als")
def dataset_als(snapshot: str, use_case: str, out_dir: str, *, fit_window: str = "trainval",
                min_interactions: int = 1, split_at: str = "", test_days: float = 14.0,
                val_days: float = 14.0) -> dict[str, Any]:
    from startup_recs.datasets.als import build_als

    out = _fresh_dir(out_dir)  # build_als rejects an unknown fit_window with a one-line ConfigError
    info = build_als(snapshot, use_case, str(out), fit_window=fit_window, min_interactions=min_interactions,
                     **_split_kwargs(split_at, test_days, val_days))
    return _provenance(snapshot, use_case, rows=_rows(info), fit_window=fit_window, **_counts(info))


@_step("dataset-ranker")
def dataset_ranker(snapshot: str, use_case: str, out_dir: str, *, neg_ratio: float = 2.0,
                   propensity_clip: float = 0.05, seed: int = 0, split_at: str = "", test_days: float = 14.0,
                   val_days: float = 14.0) -> dict[str, Any]:
    from startup_recs.datasets.ranker import build_ranker

    uc = get_use_case(use_case)
    out = _fresh_dir(out_dir)
    info = build_ranker(snapshot, use_case, str(out / f"{uc.artifact('ranker')}.parquet"), neg_ratio=neg_ratio,
                        propensity_clip=propensity_clip, seed=seed, **_split_kwargs(split_at, test_days, val_days))
    return _provenance(snapshot, use_case, rows=_rows(info), **_counts(info))


def _rows(info: dict[str, Any] | None) -> int | None:
    for key in ("rows", "n_rows", "pairs", "nnz"):
        if isinstance((info or {}).get(key), int | float):
            return int(info[key])
    return None


def _counts(info: dict[str, Any] | None) -> dict[str, Any]:
    keep = ("counts", "split", "n_entities", "n_candidates", "positives", "nnz", "shape")
    return {k: v for k, v in (info or {}).items() if k in keep}


# --- training ------------------------------------------------------------------------------------
@_step("train-two-tower")
def train_two_tower(dataset_dir: str, use_case: str, out_dir: str, *, window: str = "train", epochs: int = 50,
                    batch_size: int = 256, lr: float = 0.001, embedding_dim: int = 128, device: str = "auto",
                    seed: int = 0, params_dir: str | None = None) -> dict[str, Any]:
    """Fit on ``window`` (train = stage 1, trainval = final); CUDA when present, else CPU.
    ``params_dir``: a tuning step's output; its chosen values replace the arguments."""
    from dataclasses import fields

    from startup_recs.train import two_tower as tt

    uc = get_use_case(use_case)
    data = _find_one(storage.local(dataset_dir), f"{uc.artifact('two_tower')}.parquet")
    out = _fresh_dir(out_dir)
    known = {f.name for f in fields(tt.TwoTowerConfig)} - {"use_case", "fit_on", "device", "progress"}
    tuned = {k: v for k, v in tuned_params(params_dir).items() if k in known}
    kwargs = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "embedding_dim": embedding_dim, "seed": seed,
              **tuned}
    log.info("two-tower %s on %s: %s", use_case, window, kwargs)
    cfg = tt.TwoTowerConfig(use_case=use_case, device=device, fit_on=window, progress=False, **kwargs)
    info = tt.train(cfg, str(data), str(out)) or {}
    return _provenance(None, use_case, window=window, model_version=dir_digest(out), **_model_summary(info))


@_step("train-als")
def train_als(dataset_dir: str, use_case: str, out_dir: str, *, factors: int = 128, iterations: int = 10,
              regularization: float = 0.01, alpha: float = 1.0, weighting: str = "linear",
              params_dir: str | None = None) -> dict[str, Any]:
    """ALS on the dataset's matrix (its fit window decides the stage); ``params_dir``: a tuning
    step's output, whose chosen values replace the arguments."""
    from startup_recs.datasets.als import als_names
    from startup_recs.train import als

    uc = get_use_case(use_case)
    d = storage.local(dataset_dir)
    names = als_names(uc.suffix)
    out = _fresh_dir(out_dir)
    kwargs = {"factors": factors, "iterations": iterations, "regularization": regularization, "alpha": alpha,
              "weighting": weighting}
    kwargs.update({k: v for k, v in tuned_params(params_dir).items() if k in kwargs})
    log.info("ALS %s: %s", use_case, kwargs)
    info = als.train_als(str(d / names["matrix"]), str(d / names["user_mapping"]), str(d / names["item_mapping"]),
                         uc.name, str(out), **kwargs) or {}
    return _provenance(None, use_case, model_version=dir_digest(out), rows=info.get("interactions"),
                       **{k: v for k, v in info.items() if k != "interactions"})


@_step("train-item2item")
def train_item2item(dataset_dir: str, use_case: str, out_dir: str, *, method: str = "auto", lam: float = 200.0,
                    neighbours: int = 100, memory_gb: float = 4.0, params_dir: str | None = None
                    ) -> dict[str, Any]:
    """Item-to-item retriever (EASE, or item-kNN past EASE's memory limit, set by ``memory_gb``)
    on the ALS dataset's matrix of one fit window; ``params_dir`` as for :func:`train_als`."""
    from startup_recs.datasets.als import als_names
    from startup_recs.train import item2item

    uc = get_use_case(use_case)
    d = storage.local(dataset_dir)
    names = als_names(uc.suffix)
    out = _fresh_dir(out_dir)
    kwargs = {"method": method, "lam": lam, "neighbours": neighbours}
    kwargs.update({k: v for k, v in tuned_params(params_dir).items() if k in kwargs})
    if kwargs["method"] == "ease":  # as in the tuning objective: EASE where it fits, BM25 item-kNN past that
        kwargs["method"] = "auto"
    log.info("item2item %s: %s", use_case, kwargs)
    info = item2item.train_item2item(str(d / names["matrix"]), str(d / names["user_mapping"]),
                                     str(d / names["item_mapping"]), uc.name, str(out),
                                     memory_budget=int(memory_gb * 1024**3), **kwargs) or {}
    return _provenance(None, use_case, model_version=dir_digest(out), **info)


# --- tuning (issue 7) ----------------------------------------------------------------------------
BEST_PARAMS = "best_params.json"


def tuned_params(params_dir: str | None) -> dict[str, Any]:
    """The chosen values of a tuning step's output folder (``{}`` without one)."""
    if not params_dir:
        return {}
    summary = storage.read_json(storage.join(params_dir, BEST_PARAMS))
    return dict(summary.get("best_params") or {})


@_step("tune-{model}")
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
    out = _fresh_dir(out_dir)
    if trials > 0:
        summary = tn.tune(snapshot, use_case, model, str(out), trials=int(trials), timeout=float(timeout_s) or None,
                          seed=seed, defaults=dict(defaults), **_split_kwargs(split_at, test_days, val_days))
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
    return _provenance(snapshot, use_case, model=model, trials=summary["n_trials"],
                       best_value=summary["best_value"], default_value=summary["default_value"],
                       seconds=summary["seconds"], best=summary["best_params"])


def tuning_report(summary: dict[str, Any]) -> str:
    """Markdown for the KFP UI: chosen vs default parameters and the trials table."""
    lines = [f"## Tuning {summary['model']} ({summary['use_case']})", "",
             f"{summary['n_trials']} trials on train -> validation ({summary['metric']}); "
             f"best {_fmt(summary['best_value'])}, defaults {_fmt(summary['default_value'])}.", "",
             "| parameter | chosen | default |", "|---|---|---|"]
    for k, v in summary["best_params"].items():
        lines.append(f"| {k} | {v} | {summary['default_params'].get(k, '')} |")
    if summary["trials"]:
        from startup_recs.tuning.search import trials_table

        lines += ["", trials_table(summary)]
    return "\n".join(lines) + "\n"


def _copy_files(src: str | Path, dst: Path) -> list[str]:
    names = []
    for f in sorted(Path(src).iterdir()):
        if f.is_file():
            shutil.copy2(f, dst / f.name)
            names.append(f.name)
    return names


@_step("train-ranker")
def train_ranker(dataset_dir: str, two_tower_dir: str, als_dir: str, snapshot: str, use_case: str, out_dir: str,
                 *, epochs: int = 20, batch_size: int = 128, lr: float = 0.001, split_at: str = "",
                 test_days: float = 14.0, val_days: float = 14.0, item2item_dir: str | None = None
                 ) -> dict[str, Any]:
    """The stage-1 folder: stage-1 retrievers (train window) side by side, their serving data
    (``serving/``, fit until the validation start), and the ranker trained among them on the
    validation pairs. It is evaluate's ``val_models``."""
    from startup_recs.serving.data import ServingData
    from startup_recs.train import ranker

    uc = get_use_case(use_case)
    data = _find_one(storage.local(dataset_dir), f"{uc.artifact('ranker')}.parquet")
    out = _fresh_dir(out_dir)
    for src in (two_tower_dir, als_dir, item2item_dir):
        if src:
            _copy_files(src, out)
    split = time_split(snapshot, use_case, split_at, test_days, val_days)
    ServingData.from_snapshot(snapshot, use_case, split.val_start).save(str(out / SERVING_DIR))
    cfg = ranker.RankerTrainConfig(use_case=uc.name, epochs=epochs, batch_size=batch_size, lr=lr)
    info = ranker.train(cfg, str(data), str(out), str(out)) or {}
    metrics = (info.get("train") or {}).get("metrics") or {}
    return _provenance(snapshot, use_case, model_version=dir_digest(out), val_start=split.val_start.isoformat(),
                       **{k: v for k, v in metrics.items() if isinstance(v, int | float)})


def time_split(snapshot: str, use_case: str, split_at: str = "", test_days: float = 14.0,
               val_days: float = 14.0) -> Any:
    """The :class:`~startup_recs.data.split.TimeSplit` every dataset builder resolves for these flags."""
    from startup_recs.data.snapshot import load_snapshot
    from startup_recs.data.split import TimeSplit

    events = load_snapshot(snapshot).events(use_case)
    return TimeSplit.resolve(events["ts"], _opt(split_at), float(test_days), float(val_days))


def _model_summary(info: dict[str, Any]) -> dict[str, Any]:
    """The scalar facts of a trainer's config JSON worth showing as artifact metadata."""
    flat = _scalars({k: v for k, v in (info or {}).items() if k not in ("history",)})
    keep = ("best", "metric", "ndcg", "recall", "loss", "epoch", "n_", "nnz", "fit_seconds", "device",
            "diagnostics.", "factors", "embedding_dim")
    return {k: v for k, v in flat.items() if any(t in k for t in keep)}


# --- evaluation ----------------------------------------------------------------------------------
@_step("evaluate")
def evaluate(snapshot: str, two_tower_dir: str, als_dir: str, stage1_dir: str, use_case: str, models_dir: str,
             eval_dir: str, *, report_md: str | None = None, report_html: str | None = None, k: str = "10,20,50",
             split_at: str = "", test_days: float = 14.0, val_days: float = 14.0,
             item2item_dir: str | None = None, tuning_dirs: list[str] | None = None,
             oracle_uri: str = "") -> dict[str, Any]:
    """Assemble the servable ``models_dir`` (final retrievers, the stage-1 ranker, serving data),
    score it on test (warm route chosen on validation with the stage-1 models), and render the
    report for the KFP UI. Returns ``{"headline": {name: float}, "metadata": {...}}``."""
    from startup_recs.evaluation import protocol as ev

    uc = get_use_case(use_case)
    models = _fresh_dir(models_dir)
    for src in (two_tower_dir, als_dir, item2item_dir):
        if src:
            _copy_files(src, models)
    for f in Path(stage1_dir).glob(f"{uc.artifact('ranker')}_v1*"):
        shutil.copy2(f, models / f.name)
    out = _fresh_dir(eval_dir)
    metrics = ev.evaluate(snapshot=snapshot, models=str(models), use_case=use_case, out=str(out),
                          val_models=str(stage1_dir), k=[int(x) for x in str(k).split(",") if x.strip()],
                          oracle=oracle_uri or None,
                          **_split_kwargs(split_at, test_days, val_days))
    if not isinstance(metrics, dict):
        metrics = storage.read_json(str(out / "metrics.json"))
    if (out / ROUTING).is_file() and not (models / ROUTING).is_file():
        shutil.copy2(out / ROUTING, models / ROUTING)
    headline = headline_metrics(metrics)
    tuning = _tuning_section(tuning_dirs or [])
    if tuning:  # the trials tables and chosen parameters belong in the report (issue 7)
        (out / "tuning.md").write_text(tuning)
        (out / "tuning").mkdir()
        for d in tuning_dirs or []:
            summary = json.loads((Path(d) / BEST_PARAMS).read_text())
            (out / "tuning" / f"{summary['model']}.json").write_text(json.dumps(summary, indent=2))
        if (out / "report.md").is_file():
            (out / "report.md").write_text((out / "report.md").read_text().rstrip() + "\n\n" + tuning)
    if report_md:
        md = (out / "report.md").read_text() if (out / "report.md").is_file() else render_markdown(metrics)
        Path(report_md).write_text(embed_plots_markdown(md, out))
    if report_html:
        Path(report_html).write_text(render_html(metrics, out))
    meta = _provenance(snapshot, use_case, model_version=dir_digest(models), **headline)
    log.info("evaluation of %s: %s", use_case, ", ".join(f"{k}={v:.4f}" for k, v in headline.items()))
    return {"headline": headline, "metadata": meta}


def _tuning_section(dirs: list[str]) -> str:
    parts = []
    for d in dirs:
        f = Path(d) / BEST_PARAMS
        if not f.is_file():
            raise DataError(f"{d}: no {BEST_PARAMS} (not a tuning step's output)")
        parts.append(tuning_report(json.loads(f.read_text())))
    return ("# Hyperparameter tuning (train -> validation)\n\n" + "\n".join(parts)) if parts else ""


def headline_metrics(metrics: dict[str, Any], ks: tuple[int, ...] = (10,)) -> dict[str, float]:
    """``{model-ndcg@10: value, ...}`` for every model in metrics.json, plus the gate's inputs."""
    out: dict[str, float] = {}
    for model, by_segment in (metrics.get("models") or {}).items():
        overall = (by_segment or {}).get("all") or {}
        for name, value in overall.items():
            if any(name == f"{m}@{k}" for m in ("ndcg", "recall", "map") for k in ks) and isinstance(value, int | float):
                out[f"{model}-{name}"] = float(value)
    return out


def render_markdown(metrics: dict[str, Any]) -> str:
    """A comparison table (models x metrics, overall) from metrics.json."""
    models = metrics.get("models") or {}
    cols = sorted({m for v in models.values() for m in ((v or {}).get("all") or {})},
                  key=lambda s: (s.split("@")[0], int(s.split("@")[1]) if "@" in s and s.split("@")[1].isdigit() else 0))
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, v in models.items():
        overall = (v or {}).get("all") or {}
        lines.append(f"| {name} | " + " | ".join(_fmt(overall.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, int | float) else ("" if v is None else str(v))


def _plots(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


def embed_plots_markdown(md: str, folder: Path) -> str:
    """Replace ``![..](plot.png)`` links by base64 data URIs; append plots the text never linked,
    so the KFP UI shows them without a download."""
    for png in _plots(folder):
        data = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
        rel = str(png.relative_to(folder))
        if f"]({rel})" in md:
            md = md.replace(f"]({rel})", f"]({data})")
        else:
            md += f"\n\n![{png.stem}]({data})\n"
    return md


def render_html(metrics: dict[str, Any], folder: Path) -> str:
    """Self-contained HTML: the comparison table per segment and the plots as base64 PNGs."""
    models = metrics.get("models") or {}
    segments: list[str] = []
    for v in models.values():
        for seg in v or {}:
            if seg not in segments:
                segments.append(seg)
    parts = ["<html><head><meta charset='utf-8'><style>table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th:first-child,td:first-child"
             "{text-align:left}</style></head><body>",
             f"<h2>Evaluation: {html_lib.escape(str(metrics.get('use_case', '')))}</h2>"]
    for seg in segments:
        cols = sorted({m for v in models.values() for m in ((v or {}).get(seg) or {})})
        parts.append(f"<h3>segment: {html_lib.escape(seg)}</h3><table><tr><th>model</th>"
                     + "".join(f"<th>{html_lib.escape(c)}</th>" for c in cols) + "</tr>")
        for name, v in models.items():
            row = (v or {}).get(seg) or {}
            parts.append(f"<tr><td>{html_lib.escape(name)}</td>"
                         + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in cols) + "</tr>")
        parts.append("</table>")
    for png in _plots(folder):
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<h3>{html_lib.escape(png.stem)}</h3><img src='data:image/png;base64,{data}'/>")
    if (folder / "tuning.md").is_file():
        parts.append(f"<pre>{html_lib.escape((folder / 'tuning.md').read_text())}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


# --- gate and publish ----------------------------------------------------------------------------
@_step("gate")
def gate(eval_dir: str, models_uri: str, use_case: str, *, margin: float = 0.02) -> str:
    """``"publish"`` or ``"skip"`` (reason logged): :func:`startup_recs.core.bundle.check_gate`."""
    from startup_recs.core import bundle

    get_use_case(use_case)
    metrics = storage.read_json(storage.join(eval_dir, "metrics.json"))
    result = bundle.check_gate(metrics, models_uri, use_case, margin)
    log.info("gate %s for %s: %s", "passed" if result.passed else "refused", use_case, result.reason)
    return "publish" if result.passed else "skip"


@_step("publish")
def publish(models_dir: str, eval_dir: str, snapshot: str, models_uri: str, use_case: str, *,
            margin: float | None = 0.02, record: str | None = None) -> dict[str, Any]:
    """Stage the servable folder + metrics.json + report.md (+ plots), publish ``v<N>`` and move
    ``latest``. The gate is checked again inside :func:`bundle.publish` (nothing is written when it
    fails). ``record`` receives a copy of the manifest."""
    import tempfile

    from startup_recs.core import bundle

    get_use_case(use_case)
    metrics = storage.read_json(storage.join(eval_dir, "metrics.json"))
    with tempfile.TemporaryDirectory(prefix="recs-stage-") as tmp:
        staging = Path(tmp) / "bundle"
        shutil.copytree(models_dir, staging)
        for f in Path(eval_dir).iterdir():  # metrics.json, report.md, plots, tuning/
            if (staging / f.name).exists():
                continue
            if f.is_dir():
                shutil.copytree(f, staging / f.name)
            elif f.is_file():
                shutil.copy2(f, staging / f.name)
        manifest = bundle.publish(staging, models_uri, use_case, metrics=metrics, watermark=_watermark(snapshot),
                                  extra={"routing": _routing(staging)}, gate_margin=margin)
    uri = storage.join(models_uri, use_case, f"v{manifest['version']}")
    if record:
        Path(record).write_text(json.dumps(manifest, indent=2))
    log.info("published %s v%d (%d files) at %s", use_case, manifest["version"], len(manifest["files"]), uri)
    return {"uri": uri, "bundle_version": manifest["version"], "use_case": use_case,
            "data_watermark": manifest.get("data_watermark"), "package_version": __version__,
            "files": len(manifest["files"]), **headline_metrics(metrics)}


def _routing(folder: Path) -> dict[str, Any]:
    f = folder / ROUTING
    return json.loads(f.read_text()) if f.is_file() else {}
