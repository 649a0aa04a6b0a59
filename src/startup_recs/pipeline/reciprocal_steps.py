"""The reciprocal steps, after every use case is trained and evaluated: fit the reverse use
cases' reciprocal scorers with their forward twins, score them on test, republish.

Why after the per-use-case loop: the fit needs both directions' stage-1 models (validation) and
final models (test), and each use case's DAG only has its own. So the pipeline fans in:

- :func:`fit_reciprocal` (``reciprocal``, cached) takes every use case's final models folder,
  stage-1 folder and evaluation folder; for each reverse use case whose twin is there it fits the
  scorer on validation (:func:`startup_recs.evaluation.reciprocal_fit.fit`), scores the
  ``reciprocal`` model on the test window (one-sided and mutual metrics, the same protocol as
  ``evaluate``) and writes ``<out>/<use_case>/evaluation/`` (metrics.json with the new row and a
  ``reciprocal`` section, report.md re-rendered) and ``<out>/<use_case>/reciprocal.json``; the
  other use cases' evaluation folders are copied as they are. The run's result is this folder.
- :func:`publish_reciprocal` (``publish-reciprocal``, never cached) adds ``reciprocal.json`` and
  the updated evaluation to the bundle this run published for each reverse use case (``latest``,
  when its metrics are this run's) and publishes that as the next version (the gate is checked
  again; nothing is rebuilt: ANN indexes and content lists are the published bundle's).

Layout of the step's output::

    <out>/<use_case>/evaluation/{metrics.json, report.md, *.png, ...}
    <out>/<use_case>/reciprocal.json            (reverse use cases with a twin)
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from startup_recs.core import artifacts, storage
from startup_recs.core.usecases import get_use_case, twin_of
from startup_recs.pipeline.folders import fresh_dir, split_kwargs
from startup_recs.pipeline.step import step

log = logging.getLogger(__name__)
EVALUATION = "evaluation"
# manifest keys bundle.publish writes itself; every other key of the published one is carried over
_OWN_KEYS = frozenset({"use_case", "version", "created_at", "data_watermark", "package_version", "metrics", "files",
                       "unchanged"})


def _use_case_of(folder: str) -> str | None:
    """The use case a models / stage-1 folder (``serving/serving_data.json``) or an evaluation
    folder (``metrics.json``) belongs to."""
    for rel in (f"{artifacts.SERVING_DIR}/{artifacts.SERVING_META}", artifacts.METRICS):
        f = Path(folder) / rel
        if f.is_file():
            return storage.read_json(str(f)).get("use_case")
    return None


def _by_use_case(folders: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in folders:
        uc = _use_case_of(f)
        if uc:
            out[uc] = f
    return out


@step("reciprocal")
def fit_reciprocal(snapshot: str, models_dirs: Sequence[str], stage1_dirs: Sequence[str], eval_dirs: Sequence[str],
                   out_dir: str, *, k: str = "10,20,50", split_at: str = "", test_days: float = 14.0,
                   val_days: float = 14.0) -> dict[str, Any]:
    """See the module docstring. Returns ``{use_case: {"method", "reciprocal-mutual_ndcg@10", ...}}``."""
    out = fresh_dir(out_dir)
    models, stage1, evals = _by_use_case(models_dirs), _by_use_case(stage1_dirs), _by_use_case(eval_dirs)
    ks = [int(x) for x in str(k).split(",") if x.strip()]
    summary: dict[str, Any] = {}
    for uc, src in evals.items():
        shutil.copytree(src, out / uc / EVALUATION)
    for uc in evals:
        twin = twin_of(uc)
        if get_use_case(uc).direction != "reverse" or not all(uc in d and twin in d for d in (models, stage1)):
            continue
        summary[uc] = _fit_one(snapshot, uc, models[uc], stage1[uc], models[twin], stage1[twin], out / uc, ks,
                               **split_kwargs(split_at, test_days, val_days))
    return summary


def _fit_one(snapshot: str, use_case: str, models_dir: str, stage1_dir: str, fwd_models: str, fwd_stage1: str,
             out: Path, ks: list[int], **split: Any) -> dict[str, Any]:
    from startup_recs.data.snapshot import load_snapshot
    from startup_recs.data.split import TimeSplit
    from startup_recs.evaluation import reciprocal_fit
    from startup_recs.evaluation import report as evaluation_report
    from startup_recs.evaluation.mutual import mutual_target, prefixed
    from startup_recs.evaluation.protocol import summarize_target, target_window
    from startup_recs.serving.recommender import Recommender

    snap = load_snapshot(snapshot)
    events = snap.events(use_case)
    tsplit = TimeSplit.resolve(events["ts"], split.get("split_at"), split.get("test_days", 14.0),
                               split.get("val_days", 14.0))
    final = Recommender.load(models_dir, use_case)
    forward = Recommender.load(fwd_models, twin_of(use_case))
    scorer = reciprocal_fit.fit(snap, use_case, tsplit, reciprocal_fit.stage1(snap, use_case, tsplit, stage1_dir,
                                                                             final.routing),
                                Recommender.load(fwd_stage1, twin_of(use_case)), ks)
    scorer.save(str(out))
    # the test window, as evaluate scored every other model (final models, serving data until split_at)
    t = target_window(events, final.data, tsplit.split_at, None, imported=snap.source == "events")
    mt = mutual_target(snap, final.data, tsplit.split_at, None)
    ids = list(dict.fromkeys(t.entity_ids + (mt.entity_ids if mt is not None else [])))
    top = reciprocal_fit.ranking(final, forward, scorer, ids, max(ks))
    where = {e: i for i, e in enumerate(ids)}
    row = summarize_target(top[[where[e] for e in t.entity_ids]], t, final.data.n_candidates, ks)
    if mt is not None:
        for seg, vals in prefixed(summarize_target(top[[where[e] for e in mt.entity_ids]], mt,
                                                   final.data.n_candidates, ks)).items():
            row.setdefault(seg, {}).update(vals)
    ev_dir = out / EVALUATION
    metrics = storage.read_json(str(ev_dir / artifacts.METRICS))
    metrics["models"]["reciprocal"] = row
    metrics["reciprocal"] = scorer.to_dict()
    storage.write_json(str(ev_dir / artifacts.METRICS), metrics)
    evaluation_report.write_report(metrics, str(ev_dir), models_dir=models_dir)
    tuning = ev_dir / artifacts.TUNING_REPORT
    if tuning.is_file():  # evaluate appended the tuning trials to its report: keep them
        report = ev_dir / artifacts.REPORT
        report.write_text(report.read_text().rstrip() + "\n\n" + tuning.read_text())
    k0 = min(ks)
    info = {"method": scorer.method, f"reciprocal-mutual_ndcg@{k0}": row["all"].get(f"mutual_ndcg@{k0}"),
            f"routed_ranked-mutual_ndcg@{k0}": metrics["models"].get("routed_ranked", {}).get("all", {}).get(
                f"mutual_ndcg@{k0}")}
    log.info("reciprocal %s: %s", use_case, info)
    return info


@step("publish-reciprocal")
def publish_reciprocal(fit_dir: str, models_uri: str, *, margin: float | None = 0.02) -> dict[str, Any]:
    """For each reverse use case of ``fit_dir`` (:func:`fit_reciprocal`'s output): the latest
    bundle plus ``reciprocal.json`` and the updated evaluation, published as the next version,
    when that bundle is this run's (its ``routed_ranked`` metrics equal the fit's). ``margin``:
    the gate's (``None``: no gate, as ``bundle.publish``). Returns ``{use_case: version or None}``."""
    import tempfile

    from startup_recs.core import bundle
    from startup_recs.evaluation.report import reciprocal_section
    from startup_recs.serving.reciprocal import FILE

    out: dict[str, Any] = {}
    for uc_dir in sorted(Path(fit_dir).iterdir()):
        uc = uc_dir.name
        if not (uc_dir / FILE).is_file():
            continue
        metrics = storage.read_json(str(uc_dir / EVALUATION / artifacts.METRICS))
        current = bundle.current_manifest(models_uri, uc)
        ours = (metrics.get("models") or {}).get("routed_ranked")
        if current is None or (current.get("metrics") or {}).get("models", {}).get("routed_ranked") != ours:
            log.info("publish-reciprocal %s: this run published no bundle for it; nothing to add to", uc)
            out[uc] = None
            continue
        ptr = bundle.read_pointer(models_uri, uc)
        with tempfile.TemporaryDirectory(prefix="recs-stage-") as tmp:
            staging = Path(tmp) / "bundle"
            storage.download(storage.join(models_uri, uc, ptr["path"]), str(staging))
            (staging / artifacts.MANIFEST).unlink(missing_ok=True)
            shutil.copy2(uc_dir / FILE, staging / FILE)
            storage.write_json(str(staging / artifacts.METRICS), metrics)  # with the reciprocal row
            report = staging / artifacts.REPORT  # the published report (it says what the models saw) + ours
            if report.is_file():
                report.write_text(report.read_text().rstrip() + "\n\n" + reciprocal_section(metrics) + "\n")
            extra = {key: v for key, v in current.items() if key not in _OWN_KEYS}  # routing, ann, fit_until, ...
            manifest = bundle.publish(staging, models_uri, uc, metrics=metrics, watermark=current.get("data_watermark"),
                                      extra=extra, gate_margin=margin)
        out[uc] = manifest["version"]
        log.info("published %s v%d with its reciprocal scorer (%s)", uc, manifest["version"],
                 storage.read_json(str(uc_dir / FILE)).get("method"))
    return out
