"""The monitor step: online evaluation of what the last published bundle served since the last run.

The period is ``(previous run's data watermark, this run's data watermark]``: ``since`` is the
data watermark recorded in the newest published bundle whose watermark is *before* this run's
(so the step reads the same period whether or not this run's own publish has already moved
``latest``), ``until`` the newest event (the snapshot's watermark: a task output parameter passed
into the ``ParallelFor`` would be replaced by the loop item in ``kfp.local``, so the step reads the
watermark from the snapshot artifact). Sessions of that period are joined with their
impressions and later events by :mod:`startup_recs.evaluation.online`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from startup_recs.core import bundle, storage
from startup_recs.core.errors import RecsError
from startup_recs.pipeline.step import step
from startup_recs.pipeline.ui_report import embed_plots_markdown

log = logging.getLogger(__name__)


def previous_watermark(models_uri: str, use_case: str, before: str | None) -> str | None:
    """The newest published bundle's data watermark strictly before ``before`` (ISO), or None."""
    cut = pd.Timestamp(before) if before else None
    best = None
    try:
        numbers = bundle.versions(models_uri, use_case)
    except RecsError:
        return None
    for n in numbers:
        uri = storage.join(models_uri, use_case, f"v{n}", bundle.MANIFEST)
        try:
            wm = storage.read_json(uri).get("data_watermark")
        except (RecsError, OSError, ValueError):
            continue  # an incomplete version folder
        if not wm:
            continue
        t = pd.Timestamp(wm)
        if (cut is None or t < cut) and (best is None or t > best):
            best = t
    return best.isoformat() if best is not None else None


def _headline(m: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for arm, a in m["arms"].items():
        for key in ("sessions", "impressions", "contacts", "contact_rate", "ctr"):
            if isinstance(a.get(key), int | float):
                out[f"{arm}_{key}"] = float(a[key])
    for c in m["comparisons"]:
        for key in ("lift", "p_value"):
            if isinstance(c.get(key), int | float):
                out[f"{c['a']}_vs_{c['b']}_{key}"] = float(c[key])
    return out


@step("monitor")
def monitor(db_url: str, use_case: str, models_uri: str, out_dir: str, *, watermark: str = "",
            snapshot: str = "", report_md: str | None = None, window_days: float = 7.0,
            since: str = "") -> dict[str, Any]:
    """``metrics.json``, ``report.md`` and plots into ``out_dir`` (and the Markdown with embedded
    plots to ``report_md``). This run's data watermark is ``watermark`` or, without it, the one
    ``snapshot`` records. Returns ``{"headline": {name: float}, "metadata": {...}}``."""
    from startup_recs.evaluation import online
    from startup_recs.pipeline.folders import watermark_of
    from startup_recs.pipeline.urls import source_db_url

    watermark = watermark or (watermark_of(snapshot) if snapshot else "")

    db_url = source_db_url(db_url)  # "" -> $RECS_DB_URL (the Secret), as the extract steps
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not db_url:
        text = f"# Online evaluation: {use_case}\n\nNo app database (an imported event log): nothing was served.\n"
        (out / online.REPORT_MD).write_text(text)
        if report_md:
            Path(report_md).write_text(text)
        return {"headline": {}, "metadata": {"use_case": use_case, "sessions": 0}}
    since = since or previous_watermark(models_uri, use_case, watermark or None) or ""
    m = online.monitor(db_url, use_case, since=since or None, until=None, window_days=window_days)
    if watermark:
        m["data_watermark"] = watermark
    online.write(m, str(out))
    log.info("online evaluation of %s since %s:\n%s", use_case, since or "the first session", online.table(m))
    if report_md:
        md = (out / online.REPORT_MD).read_text()
        Path(report_md).write_text(embed_plots_markdown(md, out))
    sessions = sum(a["sessions"] for a in m["arms"].values())
    return {"headline": _headline(m), "metadata": {"use_case": use_case, "since": since or None,
                                                   "sessions": sessions, "arms": sorted(m["arms"])}}
