"""The gate (publish or skip) and publishing a versioned bundle with an atomic ``latest``."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from startup_recs import __version__
from startup_recs.core import storage
from startup_recs.core.artifacts import METRICS, REFIT, REPORT, ROUTING, SERVING_DIR
from startup_recs.core.usecases import get_use_case
from startup_recs.pipeline.evaluate_steps import headline_metrics
from startup_recs.pipeline.folders import watermark_of
from startup_recs.pipeline.step import step

log = logging.getLogger(__name__)


@step("gate")
def gate(eval_dir: str, models_uri: str, use_case: str, *, margin: float = 0.02) -> str:
    """``"publish"`` or ``"skip"`` (reason logged): :func:`startup_recs.core.bundle.check_gate`."""
    from startup_recs.core import bundle

    get_use_case(use_case)
    metrics = storage.read_json(storage.join(eval_dir, METRICS))
    result = bundle.check_gate(metrics, models_uri, use_case, margin)
    log.info("gate %s for %s: %s", "passed" if result.passed else "refused", use_case, result.reason)
    return "publish" if result.passed else "skip"


@step("publish")
def publish(models_dir: str, eval_dir: str, snapshot: str, models_uri: str, use_case: str, *,
            margin: float | None = 0.02, record: str | None = None,
            data_uris: dict[str, str] | None = None) -> dict[str, Any]:
    """Stage the servable folder + metrics.json + report.md (+ plots), build the learned
    retrievers' ANN indexes into it (``ann/``, see :mod:`startup_recs.serving.ann_build`) and the
    cold entities' content lists (``content/``, :mod:`startup_recs.serving.content_lists`), publish
    ``v<N>`` and move ``latest``. The gate is checked again inside :func:`bundle.publish` (nothing
    is written when it fails). ``record`` receives a copy of the manifest. ``data_uris`` (the
    snapshot / two-tower dataset / tuned parameters the models were trained on, as object-store
    URIs) goes into ``manifest["data"]``: what a Katib experiment or a PyTorchJob outside the
    pipeline reads. ``models_dir`` is normally the refit's folder (:mod:`startup_recs.pipeline.refit_steps`:
    every event up to the watermark); the manifest's ``fit_until`` says how far the served models
    saw (the watermark, or ``split_at`` for a folder published without a refit), ``metrics`` stay
    the evaluation of record (test window), and ``report.md`` says so."""
    import tempfile

    from startup_recs.core import bundle

    get_use_case(use_case)
    metrics = storage.read_json(storage.join(eval_dir, METRICS))
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
        extra: dict[str, Any] = {"routing": _routing(staging), **_fit_window(staging, metrics)}
        if (staging / SERVING_DIR).is_dir():
            from startup_recs.serving import content_lists
            from startup_recs.serving.ann_build import build_indexes

            extra["ann"] = build_indexes(staging)
            extra["content_lists"] = content_lists.build(staging)  # cold entities' answers, once
        if data_uris:
            extra["data"] = {k: v for k, v in data_uris.items() if v}
        manifest = bundle.publish(staging, models_uri, use_case, metrics=metrics, watermark=watermark_of(snapshot),
                                  extra=extra, gate_margin=margin)
    uri = storage.join(models_uri, use_case, f"v{manifest['version']}")
    unchanged = bool(manifest.get("unchanged"))
    if record:
        Path(record).write_text(json.dumps(manifest, indent=2))
    if unchanged:  # a rerun on identical data: the same files are already served
        log.info("unchanged: %s v%d at %s already holds these files; nothing published", use_case,
                 manifest["version"], uri)
    else:
        log.info("published %s v%d (%d files) at %s", use_case, manifest["version"], len(manifest["files"]), uri)
    return {"uri": uri, "bundle_version": manifest["version"], "use_case": use_case, "unchanged": unchanged,
            "data_watermark": manifest.get("data_watermark"), "package_version": __version__,
            "files": len(manifest["files"]), **headline_metrics(metrics)}


def _fit_window(staging: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """``fit_until`` (and the refit's record) for the manifest; the report gets a paragraph."""
    refit = staging / REFIT
    if not refit.is_file():
        return {"fit_until": metrics.get("split_at"), "refit": None}
    record = json.loads(refit.read_text())
    report = staging / REPORT
    note = (f"\n\n## Published models\n\nThe tables above are the evaluation of record: models fit on the events "
            f"before {metrics.get('split_at')}, scored on the test window after it. The published models were then "
            f"refit on every event until {record.get('fit_until')} with the choices validation made (tuned "
            f"hyperparameters, the two-tower's best epoch scaled to the window: "
            f"{(record.get('two_tower') or {}).get('refit_epochs')} epochs, the routing) and the ranker learnt on the "
            f"test window with the evaluated retrievers' scores; no held-out window is left to score them on.\n")
    if report.is_file():
        report.write_text(report.read_text().rstrip() + note)
    return {"fit_until": record.get("fit_until"), "refit": record}


def _routing(folder: Path) -> dict[str, Any]:
    f = folder / ROUTING
    return json.loads(f.read_text()) if f.is_file() else {}
