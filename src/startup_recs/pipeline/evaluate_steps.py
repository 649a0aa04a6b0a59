"""The evaluate step: assemble the servable models folder, score it on test, and render what the
Kubeflow UI shows (metrics, the Markdown report with its plots and the tuning trials, HTML)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from startup_recs.core import artifacts, storage
from startup_recs.core.artifacts import BEST_PARAMS, METRICS, REPORT, ROUTING, TUNING_DIR, TUNING_REPORT
from startup_recs.core.errors import DataError
from startup_recs.core.usecases import get_use_case
from startup_recs.pipeline.folders import copy_files, dir_digest, fresh_dir, provenance, split_kwargs
from startup_recs.pipeline.step import step
from startup_recs.pipeline.ui_report import embed_plots_markdown, render_html, tuning_report

log = logging.getLogger(__name__)


@step("evaluate")
def evaluate(snapshot: str, two_tower_dir: str, als_dir: str, stage1_dir: str, use_case: str, models_dir: str,
             eval_dir: str, *, report_md: str | None = None, report_html: str | None = None, k: str = "10,20,50",
             split_at: str = "", test_days: float = 14.0, val_days: float = 14.0,
             item2item_dir: str | None = None, tuning_dirs: list[str] | None = None,
             oracle_uri: str = "") -> dict[str, Any]:
    """Assemble the servable ``models_dir`` (final retrievers, the stage-1 ranker, serving data),
    score it on test (warm route chosen on validation with the stage-1 models), and render the
    report for the KFP UI. Returns ``{"headline": {name: float}, "metadata": {...}}``."""
    from startup_recs.evaluation import protocol as ev
    from startup_recs.evaluation import report as evaluation_report

    uc = get_use_case(use_case)
    models = fresh_dir(models_dir)
    for src in (two_tower_dir, als_dir, item2item_dir):
        if src:
            copy_files(src, models)
    for f in Path(stage1_dir).glob(f"{artifacts.ranker_files(uc).stem}*"):
        shutil.copy2(f, models / f.name)
    out = fresh_dir(eval_dir)
    metrics = ev.evaluate(snapshot=snapshot, models=str(models), use_case=use_case, out=str(out),
                          val_models=str(stage1_dir), k=[int(x) for x in str(k).split(",") if x.strip()],
                          oracle=oracle_uri or None,
                          **split_kwargs(split_at, test_days, val_days))
    if not isinstance(metrics, dict):
        metrics = storage.read_json(str(out / METRICS))
    if (out / ROUTING).is_file() and not (models / ROUTING).is_file():
        shutil.copy2(out / ROUTING, models / ROUTING)
    headline = headline_metrics(metrics)
    tuning = _tuning_section(tuning_dirs or [])
    if tuning:  # the trials tables and chosen parameters belong in the report
        (out / TUNING_REPORT).write_text(tuning)
        (out / TUNING_DIR).mkdir()
        for d in tuning_dirs or []:
            summary = json.loads((Path(d) / BEST_PARAMS).read_text())
            (out / TUNING_DIR / f"{summary['model']}.json").write_text(json.dumps(summary, indent=2))
        if (out / REPORT).is_file():
            (out / REPORT).write_text((out / REPORT).read_text().rstrip() + "\n\n" + tuning)
    if report_md:
        if (out / REPORT).is_file():
            md = (out / REPORT).read_text()
        else:  # the evaluation writes report.md; should it not have, render it from metrics.json
            md = evaluation_report.render_markdown(metrics)
        Path(report_md).write_text(embed_plots_markdown(md, out))
    if report_html:
        Path(report_html).write_text(render_html(metrics, out))
    meta = provenance(snapshot, use_case, model_version=dir_digest(models), **headline)
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
