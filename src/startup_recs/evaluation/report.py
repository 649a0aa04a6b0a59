"""The evaluation's human outputs: ``report.md`` (comparison tables, headline vs popularity, the
quality targets) and PNG plots (NDCG@K by model and segment; training curves).

Everything here reads the ``metrics.json`` dict that :mod:`startup_recs.evaluation.protocol` writes, plus
training histories found in the models folder (``*_history.json`` lists, or a ``"history"`` list
inside a ``*_config.json``). matplotlib runs headless (Agg).
"""

from __future__ import annotations

import io
import logging
from typing import Any

from startup_recs.core import artifacts, storage
from startup_recs.evaluation.metrics import SEGMENTS

log = logging.getLogger(__name__)

ORDER = ("popularity", "content", "als", "two_tower", "item2item", "routed", "routed_ranked", "reciprocal",
         "oracle@pool", "oracle", "oracle_mutual")


def _models(metrics: dict[str, Any]) -> list[str]:
    names = list(metrics.get("models", {}))
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def _get(metrics: dict[str, Any], model: str, seg: str, name: str) -> float | None:
    v = metrics.get("models", {}).get(model, {}).get(seg, {}).get(name)
    return float(v) if isinstance(v, int | float) else None


def _fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0.0) else None


def headline_table(metrics: dict[str, Any], metric: str | None = None) -> str:
    """Markdown table: one row per model, one column per segment (default metric: NDCG@first K).
    A ``mutual_`` metric counts its own users (``mutual_users``)."""
    metric = metric or f"ndcg@{metrics['k'][0]}"
    lines = [f"| {metric} | " + " | ".join(SEGMENTS) + " |", "|---|" + "---:|" * len(SEGMENTS)]
    for m in _models(metrics):
        lines.append(f"| {m} | " + " | ".join(_fmt(_get(metrics, m, s, metric)) for s in SEGMENTS) + " |")
    users_key = "mutual_users" if metric.startswith("mutual_") else "users"
    users = [str(metrics["models"][_models(metrics)[0]].get(s, {}).get(users_key, 0)) for s in SEGMENTS]
    lines.append("| users | " + " | ".join(users) + " |")
    return "\n".join(lines)


def targets(metrics: dict[str, Any]) -> list[tuple[str, float | None, float, bool | None]]:
    """The platform's quality targets: ``(description, value, threshold, met)``.

    The routed and re-ranked system at least 2x popularity's NDCG@10 on warm and hot entities,
    the ranker at least 10 % over the routed retrieval, and on synthetic data (planted-affinity
    oracle): the routed system at least 70 % of the oracle, the re-ranked one at least 50 %, and
    the ranker at least 70 % of its own pool's ceiling (``ranking_efficiency``).
    ``value``/``met`` are None when a model is missing.
    """
    out: list[tuple[str, float | None, float, bool | None]] = []
    for seg in ("warm", "hot"):
        r = _ratio(_get(metrics, "routed_ranked", seg, "ndcg@10"), _get(metrics, "popularity", seg, "ndcg@10"))
        out.append((f"routed_ranked / popularity NDCG@10, {seg}", r, 2.0, None if r is None else r >= 2.0))
    g = _ratio(_get(metrics, "routed_ranked", "all", "ndcg@10"), _get(metrics, "routed", "all", "ndcg@10"))
    out.append(("ranker gain: routed_ranked / routed NDCG@10, all", g, 1.10, None if g is None else g >= 1.10))
    o = _ratio(_get(metrics, "routed", "all", "ndcg@10"), _get(metrics, "oracle", "all", "ndcg@10"))
    out.append(("routed / oracle NDCG@10, all", o, 0.70, None if o is None else o >= 0.70))
    if "reciprocal" in metrics.get("models", {}):
        r = _ratio(_get(metrics, "reciprocal", "all", "mutual_ndcg@10"),
                   _get(metrics, "routed_ranked", "all", "mutual_ndcg@10"))
        out.append(("reciprocal / routed_ranked mutual NDCG@10, all", r, 1.15, None if r is None else r >= 1.15))
    r = _ratio(_get(metrics, "routed_ranked", "all", "ndcg@10"), _get(metrics, "oracle", "all", "ndcg@10"))
    out.append(("routed_ranked / oracle NDCG@10, all", r, 0.50, None if r is None else r >= 0.50))
    e = (metrics.get("ranking_efficiency") or {}).get("all")
    e = float(e) if isinstance(e, int | float) else None
    out.append(("ranking_efficiency (ranked / oracle@pool NDCG@10), all", e, 0.70, None if e is None else e >= 0.70))
    return out


def ceiling_table(metrics: dict[str, Any]) -> str:
    """Markdown: per segment the ranked NDCG@10, its pool's ceiling ``oracle@pool``, their ratio
    ``ranking_efficiency`` and the full ``oracle`` (empty string without an oracle)."""
    eff = metrics.get("ranking_efficiency") or {}
    if not eff:
        return ""
    ranked = eff.get("ranked", "routed_ranked")
    rows = [(ranked, [_get(metrics, ranked, s, "ndcg@10") for s in SEGMENTS]),
            ("oracle@pool", [_get(metrics, "oracle@pool", s, "ndcg@10") for s in SEGMENTS]),
            ("ranking_efficiency", [eff.get(s) if isinstance(eff.get(s), int | float) else None for s in SEGMENTS]),
            ("oracle", [_get(metrics, "oracle", s, "ndcg@10") for s in SEGMENTS])]
    lines = ["| NDCG@10 | " + " | ".join(SEGMENTS) + " |", "|---|" + "---:|" * len(SEGMENTS)]
    lines += [f"| {name} | " + " | ".join(_fmt(v, 4 if name != "ranking_efficiency" else 2) for v in vals) + " |"
              for name, vals in rows]
    pool = metrics.get("pool") or {}
    if pool:
        lines += ["", f"Pool: {pool.get('spec')}, {pool.get('mean_size', 0):.0f} candidates on average. "
                  "oracle - oracle@pool is what retrieval loses; oracle@pool - ranked what the ranker loses."]
    return "\n".join(lines)


def render_markdown(metrics: dict[str, Any], plots: list[str] | None = None) -> str:
    ks = metrics["k"]
    k0 = ks[0]
    lines = [f"# Evaluation: {metrics.get('use_case')}", "",
             f"Temporal split at **{metrics.get('split_at')}** (validation from {metrics.get('val_start')}); "
             f"{metrics.get('n_test_entities')} test entities, {metrics.get('n_candidates')} candidates, "
             "full ranking minus already-seen candidates. Segments by training interactions: "
             "cold < 5, warm 5-19, hot 20+.", "",
             "Routes (chosen on " + str(metrics.get('routing', {}).get('chosen_on')) + "): "
             + ", ".join(f"{seg} → **{_route_head(metrics, seg)}**" for seg in ("cold", "warm", "hot"))
             + "; validation NDCG@10 by segment: "
             + "; ".join(f"{seg} " + ", ".join(f"{k} {v:.4f}" for k, v in vals.items())
                         for seg, vals in (metrics.get('routing', {}).get('val_ndcg@10_by_segment') or
                                           {"warm": metrics.get('routing', {}).get('val_ndcg@10') or {}}).items())
             + ". Routes taken on test: "
             + ", ".join(f"{k} {v}" for k, v in sorted((metrics.get('routes') or {}).items())) + ".", "",
             f"## NDCG@{k0} by model and segment", "", headline_table(metrics), ""]
    ceiling = ceiling_table(metrics)
    if ceiling:
        lines += ["## Ranking ceiling (planted affinity, synthetic data)", "", ceiling, ""]
    pop = {s: _get(metrics, "popularity", s, f"ndcg@{k0}") for s in SEGMENTS}
    lines += [f"## Versus popularity (NDCG@{k0} ratio)", "",
              "| model | " + " | ".join(SEGMENTS) + " |", "|---|" + "---:|" * len(SEGMENTS)]
    for m in _models(metrics):
        if m == "popularity":
            continue
        lines.append(f"| {m} | " + " | ".join(_fmt(_ratio(_get(metrics, m, s, f'ndcg@{k0}'), pop[s]), 2) + "x"
                                               for s in SEGMENTS) + " |")
    lines += ["", "## Quality targets", "", "| target | value | threshold | met |", "|---|---:|---:|:---:|"]
    for desc, v, thr, ok in targets(metrics):
        lines.append(f"| {desc} | {_fmt(v, 3)} | {thr} | {'-' if ok is None else ('yes' if ok else 'NO')} |")
    if metrics.get("n_mutual_entities"):
        lines += ["", f"## Mutual: both sides acted ({metrics['n_mutual_entities']} test entities)", "",
                  "A test pair counts when the startup acted on the candidate (contact, or a reply to an "
                  "application) and the candidate on the startup (applied, contacted, or replied), both "
                  "after the split.", "", headline_table(metrics, f"mutual_ndcg@{k0}"), "",
                  headline_table(metrics, f"mutual_recall@{k0}")]
    if metrics.get("reciprocal"):
        lines += ["", reciprocal_section(metrics)]
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "map", "hitrate", "coverage")]
    lines += ["", "## All metrics (all test entities)", "", "| model | " + " | ".join(cols) + " |",
              "|---|" + "---:|" * len(cols)]
    for m in _models(metrics):
        lines.append(f"| {m} | " + " | ".join(_fmt(_get(metrics, m, "all", c)) for c in cols) + " |")
    val = metrics.get("validation")
    if val:
        lines += ["", f"## Validation (stage-1 models, [{val.get('val_start')}, {val.get('split_at')}); "
                  "used for choices only)", "", headline_table(val | {"k": ks})]
    for p in plots or []:
        lines += ["", f"![{p.rsplit('.', 1)[0]}]({p})"]
    return "\n".join(lines) + "\n"


def reciprocal_section(metrics: dict[str, Any]) -> str:
    """Markdown: the reciprocal scorer fitted on validation (fusion chosen, calibrations, each
    fusion's validation mutual NDCG@10) and its test row against the one-sided ranking."""
    r = metrics.get("reciprocal") or {}
    val = r.get("validation") or {}
    cal = r.get("calibration") or {}
    lines = ["## Reciprocal scorer (both sides' interest)", "",
             f"Fusion **{r.get('method')}** chosen on validation ({val.get('entities', '-')} startups, "
             f"{val.get('pairs', '-')} pool pairs) with the forward twin **{r.get('forward_use_case')}**. "
             "Calibrations (Platt): reverse p = sigmoid({a:.3f} z + {b:.3f}), forward q = sigmoid({fa:.3f} "
             "logit(percentile) + {fb:.3f}).".format(a=cal.get("reverse", {}).get("a", float("nan")),
                                                     b=cal.get("reverse", {}).get("b", float("nan")),
                                                     fa=cal.get("forward", {}).get("a", float("nan")),
                                                     fb=cal.get("forward", {}).get("b", float("nan"))), ""]
    scores = val.get("mutual_ndcg@10") or {}
    if scores:
        lines += ["| validation | mutual_ndcg@10 |", "|---|---:|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in scores.items()]
    test = [(m, _get(metrics, m, "all", "mutual_ndcg@10"), _get(metrics, m, "all", "ndcg@10"))
            for m in ("routed_ranked", "reciprocal") if m in metrics.get("models", {})]
    if test:
        lines += ["", "| test | mutual_ndcg@10 | ndcg@10 |", "|---|---:|---:|"]
        lines += [f"| {m} | {_fmt(mu)} | {_fmt(nd)} |" for m, mu, nd in test]
    return "\n".join(lines)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_ndcg(metrics: dict[str, Any]) -> dict[str, bytes]:
    """One grouped bar chart per K: NDCG@K of each model in each segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = {}
    models = _models(metrics)
    for k in metrics["k"]:
        fig, ax = plt.subplots(figsize=(9, 4))
        w = 0.8 / max(len(models), 1)
        x = np.arange(len(SEGMENTS))
        for i, m in enumerate(models):
            vals = [_get(metrics, m, s, f"ndcg@{k}") or 0.0 for s in SEGMENTS]
            ax.bar(x + i * w - 0.4 + w / 2, vals, w, label=m)
        users = [metrics["models"][models[0]].get(s, {}).get("users", 0) for s in SEGMENTS]
        ax.set_xticks(x, [f"{s}\n(n={u})" for s, u in zip(SEGMENTS, users, strict=True)])
        ax.set_ylabel(f"NDCG@{k}")
        ax.set_title(f"{metrics.get('use_case')}: NDCG@{k} by model and segment (test)")
        ax.legend(fontsize=8, ncol=4)
        out[artifacts.ndcg_plot(k)] = _png(fig)
        plt.close(fig)
    return out


def find_histories(models_dir: str | None) -> dict[str, list[dict[str, Any]]]:
    """Training histories in a models folder: ``{model stem: [row, ...]}``."""
    if not models_dir or not storage.exists(models_dir):
        return {}
    found: dict[str, list[dict[str, Any]]] = {}
    for name in storage.listdir(models_dir):
        if not name.endswith(".json"):
            continue
        try:
            if name.endswith(artifacts.HISTORY_SUFFIX):
                rows = storage.read_json(storage.join(models_dir, name))
                stem = name[: -len(artifacts.HISTORY_SUFFIX)]
            elif name.endswith(artifacts.CONFIG_SUFFIX):
                rows = storage.read_json(storage.join(models_dir, name)).get("history")
                stem = name[: -len(artifacts.CONFIG_SUFFIX)]
            else:
                continue
        except Exception:  # noqa: BLE001 - a report never fails on a foreign file
            continue
        if isinstance(rows, list) and rows and isinstance(rows[0], dict) and stem not in found:
            found[stem] = rows
    return found


def plot_histories(histories: dict[str, list[dict[str, Any]]]) -> dict[str, bytes]:
    """One figure: training loss per epoch/iteration of each model (own axis each)."""
    series = {}
    for stem, rows in histories.items():
        xs = [r.get("epoch", r.get("iteration", i + 1)) for i, r in enumerate(rows)]
        ys = [r.get("loss", r.get("train_loss")) for r in rows]
        pts = [(x, y) for x, y in zip(xs, ys, strict=True) if isinstance(y, int | float)]
        if pts:
            series[stem] = pts
    if not series:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.2), squeeze=False)
    for ax, (stem, pts) in zip(axes[0], series.items(), strict=True):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3)
        ax.set_title(stem, fontsize=9)
        ax.set_xlabel("epoch / iteration")
        ax.set_ylabel("training loss")
    fig.suptitle("training curves")
    data = {artifacts.TRAINING_CURVES_PLOT: _png(fig)}
    plt.close(fig)
    return data


def write_report(metrics: dict[str, Any], out: str, *, models_dir: str | None = None) -> list[str]:
    """Write the plots and ``report.md`` into ``out``; returns the file names written."""
    pngs: dict[str, bytes] = {}
    try:
        pngs.update(plot_ndcg(metrics))
        pngs.update(plot_histories(find_histories(models_dir)))
    except ImportError as exc:  # matplotlib is a dependency; keep the report if it is broken
        log.warning("plots skipped: %s", exc)
    for name, data in pngs.items():
        storage.write_bytes(storage.join(out, name), data)
    storage.write_bytes(storage.join(out, artifacts.REPORT), render_markdown(metrics, sorted(pngs)).encode())
    return [*sorted(pngs), artifacts.REPORT]


def _route_head(metrics: dict, segment: str) -> str:
    """The retriever heading ``segment``'s chain in the evaluated routing."""
    from startup_recs.serving.router import Routing

    return Routing.from_dict(metrics.get("routing") or {}).chain(segment)[0]
