"""What the Kubeflow UI shows of a run: the tuning summary in Markdown, the evaluation report with
its plots embedded (no download needed), and a self-contained HTML page.

The evaluation's own Markdown report comes from :mod:`startup_recs.evaluation.report`; this
module only adds the UI-side parts around it.
"""

from __future__ import annotations

import base64
import html as html_lib
from pathlib import Path
from typing import Any

from startup_recs.core.artifacts import TUNING_REPORT


def fmt(v: Any) -> str:
    """A table cell: numbers with 4 decimals, ``None`` empty, anything else as text."""
    return f"{v:.4f}" if isinstance(v, int | float) else ("" if v is None else str(v))


def tuning_report(summary: dict[str, Any]) -> str:
    """Markdown for the KFP UI: chosen vs default parameters and the trials table."""
    lines = [f"## Tuning {summary['model']} ({summary['use_case']})", "",
             f"{summary['n_trials']} trials on train -> validation ({summary['metric']}); "
             f"best {fmt(summary['best_value'])}, defaults {fmt(summary['default_value'])}.", "",
             "| parameter | chosen | default |", "|---|---|---|"]
    for k, v in summary["best_params"].items():
        lines.append(f"| {k} | {v} | {summary['default_params'].get(k, '')} |")
    if summary["trials"]:
        from startup_recs.tuning.search import trials_table

        lines += ["", trials_table(summary)]
    return "\n".join(lines) + "\n"


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
                         + "".join(f"<td>{fmt(row.get(c))}</td>" for c in cols) + "</tr>")
        parts.append("</table>")
    for png in _plots(folder):
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<h3>{html_lib.escape(png.stem)}</h3><img src='data:image/png;base64,{data}'/>")
    if (folder / TUNING_REPORT).is_file():
        parts.append(f"<pre>{html_lib.escape((folder / TUNING_REPORT).read_text())}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
