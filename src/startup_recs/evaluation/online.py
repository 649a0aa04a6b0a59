"""Online evaluation (``recs monitor``): what the served slates earned, per model version or arm.

What: the recommendation sessions of one use case in ``[since, until)`` are joined with their
impressions (``session_id, candidate_id, position, model_version``) and with the interactions that
came after them. An interaction counts for an impression when it is on a *shown* candidate of that
session's entity, at or after the session and within the attribution window (``window_days``,
default 7):

* an event naming a session (``session_id``) counts for that session's impression of the
  candidate, and for no other;
* an event without a session id counts for the latest session of that entity that showed the
  candidate before it (within the window);
* an event on a candidate that was not shown counts for nothing (organic behaviour).

Each impression is then *clicked* (a linked ``click``) and *contacted* (a linked positive event of
the use case: ``contact`` / ``apply_received`` for ``startup_developer``), each at most once, and a
*new contact* when contacted and the pair had no positive event before the session (a new
connection, not a repeat of an old one). Per arm: ``sessions, impressions, clicks, contacts, ctr =
clicks / impressions, contact_rate = contacts / impressions, contact_rate_ci95, new_contacts,
new_contact_rate, new_contact_rate_ci95``.

Arms: by the impressions' ``model_version`` (a bundle ``v3``, or a baseline policy's name), or,
with ``experiment=(name, percent)``, by the arm the experiment assigns each entity
(:func:`startup_recs.serving.experiments.assign` recomputed from the entity id: the assignment is
a pure function of name and id), which separates the arms of an A/A experiment that serves one
bundle twice and counts a treatment entity that got the control's fallback in its assigned arm.

Statistics (``docs/online.md``): the unit of assignment and of dependence is the *entity* (a
startup sees ten slots per session and comes back for many sessions), so the interval and the
test resample entities, not impressions. ``contact_rate_ci95`` is the percentile interval of an
entity bootstrap (``n_boot`` resamples of the arm's entities with replacement, the ratio of
summed contacts to summed impressions). A comparison's ``p_value`` is two-sided, from the entity
bootstrap's standard error of the difference in contact rates (arms resampled independently) and
the normal approximation; ``lift`` = ``rate_a / rate_b - 1``. The naive two-proportion z-test over
impressions is reported beside it (``p_value_two_proportion``) and is too optimistic for this data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from startup_recs.core import storage
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.core.usecases import UseCase, get_use_case
from startup_recs.data.appdb import db_url, mask_url

log = logging.getLogger(__name__)

CLICK = "click"
METRICS_JSON, REPORT_MD = "metrics.json", "report.md"
RATE_PLOT, POSITION_PLOT = "contact_rate_by_arm.png", "rate_by_position.png"


# --- reading the app database --------------------------------------------------------------------
def _ts(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="mixed")


def parse_time(text: str | None) -> pd.Timestamp | None:
    """An ISO-8601 time (naive = UTC), or None."""
    if text in (None, ""):
        return None
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"bad time {text!r}: {exc}") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def load(url: str, use_case: str | UseCase, *, since: pd.Timestamp | None = None,
         until: pd.Timestamp | None = None) -> dict[str, pd.DataFrame]:
    """The period's sessions, their impressions, the use case's click / positive events from
    the first session on, and each (entity, candidate) pair's first positive event ever
    (``first_positive``; SQLAlchemy URL; the app tables of ``startup_recs.data.appdb``)."""
    import sqlalchemy as sa

    uc = get_use_case(use_case) if isinstance(use_case, str) else use_case
    engine = sa.create_engine(db_url(url))
    ent, cand = ("startup_id", "user_id") if uc.entity_is_startup else ("user_id", "startup_id")
    events = (CLICK, *uc.positive_events)
    try:
        with engine.connect() as conn:
            sessions = pd.read_sql(sa.text("SELECT session_id, entity_id, ts FROM recommendation_sessions "
                                           "WHERE use_case = :uc"), conn, params={"uc": uc.name})
            sessions["ts"] = _ts(sessions["ts"])
            if since is not None:
                sessions = sessions[sessions["ts"] >= since]
            if until is not None:
                sessions = sessions[sessions["ts"] < until]
            ids = sessions["session_id"].astype(str).tolist()
            imps = []
            for lo in range(0, len(ids), 900):  # SQLite's bound-parameter limit
                chunk = ids[lo:lo + 900]
                stmt = sa.text("SELECT session_id, candidate_id, position, model_version FROM impressions "
                               "WHERE session_id IN :ids").bindparams(sa.bindparam("ids", expanding=True))
                imps.append(pd.read_sql(stmt, conn, params={"ids": chunk}))
            first = sessions["ts"].min() if len(sessions) else None
            stmt = sa.text(f"SELECT {ent} AS entity_id, {cand} AS candidate_id, event, ts, session_id "  # noqa: S608
                           f"FROM {uc.interactions_table} WHERE event IN :events"
                           ).bindparams(sa.bindparam("events", expanding=True))
            ev = pd.read_sql(stmt, conn, params={"events": list(events)})
    except sa.exc.SQLAlchemyError as exc:
        raise DataError(f"cannot read the sessions of {mask_url(db_url(url))}: {str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()
    impressions = (pd.concat(imps, ignore_index=True) if imps else
                   pd.DataFrame(columns=["session_id", "candidate_id", "position", "model_version"]))
    ev["ts"] = _ts(ev["ts"])
    pos = ev[ev["event"].isin(list(uc.positive_events))]
    first_positive = (pos.groupby(["entity_id", "candidate_id"], as_index=False)["ts"].min()
                      .rename(columns={"ts": "first_positive"}).astype({"entity_id": str, "candidate_id": str}))
    if first is not None:
        ev = ev[ev["ts"] >= first]
    return {"sessions": sessions.reset_index(drop=True), "impressions": impressions,
            "events": ev.reset_index(drop=True), "first_positive": first_positive}


# --- attribution -----------------------------------------------------------------------------------
def attribute(sessions: pd.DataFrame, impressions: pd.DataFrame, events: pd.DataFrame,
              positive_events: Sequence[str], *, window_days: float = 7.0,
              first_positive: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per impression: ``session_id, entity_id, candidate_id, position, model_version, ts
    (session), clicked, contacted, new_contact`` (bool), by the rules of the module docstring.
    ``new_contact``: contacted, and the pair had no positive event before the session
    (``first_positive``: ``entity_id, candidate_id, first_positive``; without it every contact is new)."""
    imp = impressions.merge(sessions, on="session_id", how="inner")
    imp = imp.astype({"session_id": str, "entity_id": str, "candidate_id": str})
    imp["position"] = imp["position"].astype(np.int64)
    imp["model_version"] = imp["model_version"].fillna("unknown").astype(str)
    imp = imp.reset_index(drop=True)
    imp["row"] = np.arange(len(imp))
    window = pd.Timedelta(days=window_days)
    ev = events.copy()
    ev["entity_id"], ev["candidate_id"] = ev["entity_id"].astype(str), ev["candidate_id"].astype(str)
    ev["positive"] = ev["event"].isin(list(positive_events))
    ev["click"] = ev["event"] == CLICK
    linked = []
    # events that name a session: that session's impression of the candidate
    named = ev[ev["session_id"].notna()].astype({"session_id": str})
    m = named.merge(imp[["row", "session_id", "entity_id", "candidate_id", "ts"]],
                    on=["session_id", "entity_id", "candidate_id"], suffixes=("_ev", ""))
    m = m[(m["ts_ev"] >= m["ts"]) & (m["ts_ev"] < m["ts"] + window)]
    linked.append(m[["row", "positive", "click"]])
    # events without one: the latest earlier session of the entity that showed the candidate
    free = ev[ev["session_id"].isna()].sort_values("ts")
    if len(free) and len(imp):
        left = free.rename(columns={"ts": "ts_ev"})[["entity_id", "candidate_id", "ts_ev", "positive", "click"]]
        right = imp[["row", "entity_id", "candidate_id", "ts"]].sort_values("ts")
        a = pd.merge_asof(left.sort_values("ts_ev"), right, left_on="ts_ev", right_on="ts",
                          by=["entity_id", "candidate_id"], direction="backward", tolerance=window)
        a = a[a["row"].notna() & (a["ts_ev"] < a["ts"] + window)]
        linked.append(a[["row", "positive", "click"]].astype({"row": np.int64}))
    links = pd.concat(linked, ignore_index=True)
    clicked = np.zeros(len(imp), dtype=bool)
    contacted = np.zeros(len(imp), dtype=bool)
    clicked[links.loc[links["click"], "row"].to_numpy(np.int64)] = True
    contacted[links.loc[links["positive"], "row"].to_numpy(np.int64)] = True
    imp["clicked"], imp["contacted"] = clicked, contacted
    imp["new_contact"] = contacted
    if first_positive is not None and len(first_positive) and len(imp):
        before = imp[["entity_id", "candidate_id", "ts"]].merge(first_positive, on=["entity_id", "candidate_id"],
                                                                 how="left")["first_positive"]
        imp["new_contact"] = contacted & ~(before < imp["ts"]).to_numpy(bool)
    return imp.drop(columns=["row"])


# --- statistics ------------------------------------------------------------------------------------
def _per_entity(rows: pd.DataFrame, column: str = "contacted") -> tuple[np.ndarray, np.ndarray]:
    g = rows.groupby("entity_id", sort=True)
    return g[column].sum().to_numpy(np.float64), g.size().to_numpy(np.float64)


def bootstrap_rates(contacts: np.ndarray, imps: np.ndarray, n_boot: int, rng: np.random.Generator,
                    block: int = 250) -> np.ndarray:
    """``n_boot`` entity-bootstrap replicates of ``sum(contacts) / sum(imps)`` (entities resampled
    with replacement; multinomial counts in blocks, so memory stays ``block x entities``)."""
    n = len(imps)
    if n == 0:
        return np.full(n_boot, np.nan)
    out = np.empty(n_boot)
    p = np.full(n, 1.0 / n)
    for lo in range(0, n_boot, block):
        w = rng.multinomial(n, p, size=min(block, n_boot - lo)).astype(np.float64)
        den = w @ imps
        out[lo:lo + len(w)] = np.divide(w @ contacts, den, out=np.full(len(w), np.nan), where=den > 0)
    return out


def _norm_p(z: float) -> float:
    return float(math.erfc(abs(z) / math.sqrt(2.0)))


def two_proportion_p(x1: float, n1: float, x2: float, n2: float) -> float:
    """Two-sided p of the pooled two-proportion z-test (impressions as independent trials)."""
    if min(n1, n2) <= 0:
        return float("nan")
    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return 1.0 if se == 0 else _norm_p((x1 / n1 - x2 / n2) / se)


def _arm_key(rows: pd.DataFrame, experiment: tuple[str, float] | None) -> pd.Series:
    if experiment is None:
        return rows["model_version"]
    from startup_recs.serving.experiments import assign  # one definition of the assignment

    name, percent = experiment
    arms = {e: assign(name, e, percent / 100.0) for e in rows["entity_id"].unique()}
    return rows["entity_id"].map(arms)


def _compare(ra: float | None, rb: float | None, boot_a: np.ndarray, boot_b: np.ndarray) -> dict[str, Any]:
    """Lift, ratio, the lift's bootstrap interval and the bootstrap-SE p value of two rates."""
    if ra is None or rb is None:
        return {"lift": None, "ratio": None, "lift_ci95": None, "p_value": float("nan")}
    diff = boot_a - boot_b
    se = float(np.nanstd(diff, ddof=1)) if np.isfinite(diff).sum() > 1 else float("nan")
    p = (1.0 if ra == rb else 0.0) if se == 0 else (_norm_p((ra - rb) / se) if np.isfinite(se) else float("nan"))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_boot = boot_a / boot_b
    ratio_boot[~np.isfinite(ratio_boot)] = np.nan
    ci = ([float(np.nanpercentile(ratio_boot, 2.5) - 1.0), float(np.nanpercentile(ratio_boot, 97.5) - 1.0)]
          if np.isfinite(ratio_boot).any() else None)
    return {"lift": (ra / rb - 1.0) if rb else None, "ratio": (ra / rb) if rb else None, "lift_ci95": ci, "p_value": p}


def _ci(boot: np.ndarray) -> list[float]:
    return [float(np.nanpercentile(boot, 2.5)), float(np.nanpercentile(boot, 97.5))]


def summarise(imp: pd.DataFrame, sessions: pd.DataFrame, *, experiment: tuple[str, float] | None = None,
              n_boot: int = 2000, seed: int = 0, baseline: str | None = None) -> dict[str, Any]:
    """``{"arms": {...}, "comparisons": [...], "by_position": {...}}`` from :func:`attribute`'s rows.

    Both rates of an arm (``contact_rate``, ``new_contact_rate``) are bootstrapped with the same
    resampled entities (one generator per arm, restarted for the second rate)."""
    if "new_contact" not in imp:
        imp = imp.assign(new_contact=imp["contacted"])
    imp = imp.assign(arm=_arm_key(imp, experiment).astype(str)) if len(imp) else imp.assign(arm=pd.Series(dtype=str))
    arms: dict[str, Any] = {}
    boots: dict[tuple[str, str], np.ndarray] = {}
    per_position: dict[str, Any] = {}
    for k, arm in enumerate(sorted(imp["arm"].unique())):
        rows = imp[imp["arm"] == arm]
        n_imp, n_clk = len(rows), int(rows["clicked"].sum())
        n_con, n_new = int(rows["contacted"].sum()), int(rows["new_contact"].sum())
        for column in ("contacted", "new_contact"):
            num, imps = _per_entity(rows, column)
            boots[arm, column] = bootstrap_rates(num, imps, n_boot, np.random.default_rng([seed, k]))
        arms[arm] = {
            "sessions": int(rows["session_id"].nunique()), "entities": int(rows["entity_id"].nunique()),
            "impressions": int(n_imp), "clicks": n_clk, "contacts": n_con,
            "ctr": n_clk / n_imp if n_imp else None, "contact_rate": n_con / n_imp if n_imp else None,
            "contact_rate_ci95": _ci(boots[arm, "contacted"]),
            "new_contacts": n_new, "new_contact_rate": n_new / n_imp if n_imp else None,
            "new_contact_rate_ci95": _ci(boots[arm, "new_contact"]),
        }
        if experiment is not None:
            arms[arm]["model_versions"] = {str(v): int(n) for v, n in rows["model_version"].value_counts().items()}
        pos = rows.groupby("position").agg(impressions=("contacted", "size"), contacts=("contacted", "sum"),
                                           clicks=("clicked", "sum"), new_contacts=("new_contact", "sum"))
        per_position[arm] = {int(p): {"impressions": int(r.impressions), "clicks": int(r.clicks),
                                      "contacts": int(r.contacts), "new_contacts": int(r.new_contacts),
                                      "ctr": float(r.clicks / r.impressions),
                                      "contact_rate": float(r.contacts / r.impressions)} for p, r in pos.iterrows()}
    comparisons = []
    names = list(arms)
    pairs = ([(a, baseline) for a in names if a != baseline] if baseline in arms else
             [(names[j], names[i]) for i in range(len(names)) for j in range(i + 1, len(names))])
    if experiment is not None and set(names) == {"control", "treatment"}:
        pairs = [("treatment", "control")]
    for a, b in pairs:
        c = {"a": a, "b": b, **_compare(arms[a]["contact_rate"], arms[b]["contact_rate"],
                                        boots[a, "contacted"], boots[b, "contacted"])}
        c["significant"] = bool(c["p_value"] < 0.05)
        c["p_value_two_proportion"] = two_proportion_p(arms[a]["contacts"], arms[a]["impressions"],
                                                       arms[b]["contacts"], arms[b]["impressions"])
        new = _compare(arms[a]["new_contact_rate"], arms[b]["new_contact_rate"],
                       boots[a, "new_contact"], boots[b, "new_contact"])
        c.update({f"new_contact_{key}": value for key, value in new.items()})
        comparisons.append(c)
    return {"arms": arms, "comparisons": comparisons, "by_position": per_position}


def monitor(url: str, use_case: str, *, since: str | pd.Timestamp | None = None,
            until: str | pd.Timestamp | None = None, window_days: float = 7.0,
            experiment: tuple[str, float] | None = None, n_boot: int = 2000,
            baseline: str | None = None) -> dict[str, Any]:
    """Load, attribute and summarise one use case's sessions; the ``metrics.json`` dict."""
    if window_days <= 0:
        raise ConfigError(f"--window-days must be > 0, got {window_days}")
    uc = get_use_case(use_case)
    lo = since if isinstance(since, pd.Timestamp) or since is None else parse_time(since)
    hi = until if isinstance(until, pd.Timestamp) or until is None else parse_time(until)
    data = load(url, uc, since=lo, until=hi)
    imp = attribute(data["sessions"], data["impressions"], data["events"], uc.positive_events, window_days=window_days,
                    first_positive=data["first_positive"])
    out = summarise(imp, data["sessions"], experiment=experiment, n_boot=n_boot, baseline=baseline)
    s = data["sessions"]["ts"]
    newest = data["events"]["ts"].max() if len(data["events"]) else None
    open_sessions = int((s + pd.Timedelta(days=window_days) > newest).sum()) if newest is not None else len(s)
    out.update({
        "use_case": uc.name, "since": lo.isoformat() if lo is not None else None,
        "until": hi.isoformat() if hi is not None else None, "window_days": window_days,
        "positive_events": list(uc.positive_events), "n_boot": n_boot,
        "first_session": s.min().isoformat() if len(s) else None, "last_session": s.max().isoformat() if len(s) else None,
        "sessions_without_impressions": int(len(s) - imp["session_id"].nunique()) if len(imp) else int(len(s)),
        "sessions_window_open": open_sessions,
        "p_value_method": "entity bootstrap standard error of the rate difference, normal approximation",
        "experiment": {"name": experiment[0], "percent": experiment[1]} if experiment else None,
    })
    return out


# --- outputs ---------------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def render_markdown(m: dict[str, Any], plots: Sequence[str] = ()) -> str:
    lines = [f"# Online evaluation: {m['use_case']}", "",
             f"Sessions from {m.get('first_session')} to {m.get('last_session')} (asked: since {m.get('since')}, "
             f"until {m.get('until')}); attribution window {m['window_days']:g} days; an impression counts as "
             f"a contact when a linked {' / '.join(m['positive_events'])} followed it, as a click when a linked "
             "click did (only events on shown candidates count).", ""]
    if m.get("experiment"):
        e = m["experiment"]
        lines += [f"Arms by the assignment of experiment **{e['name']}** ({e['percent']:g} % treatment), "
                  "recomputed from each entity id.", ""]
    lines += ["| arm | sessions | entities | impressions | clicks | contacts | CTR | contact rate | 95 % CI "
              "| new contacts | new-contact rate | 95 % CI |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for arm, a in m["arms"].items():
        lo, hi = a["contact_rate_ci95"]
        nlo, nhi = a.get("new_contact_rate_ci95") or [None, None]
        lines.append(f"| {arm} | {a['sessions']} | {a['entities']} | {a['impressions']} | {a['clicks']} | "
                     f"{a['contacts']} | {_fmt(a['ctr'])} | {_fmt(a['contact_rate'])} | [{_fmt(lo)}, {_fmt(hi)}] | "
                     f"{a.get('new_contacts', '-')} | {_fmt(a.get('new_contact_rate'))} | [{_fmt(nlo)}, {_fmt(nhi)}] |")
    if m["comparisons"]:
        lines += ["", "| a vs b | ratio | lift | lift 95 % CI | p (entity bootstrap) | p (two-proportion, naive) "
                  "| new-contact lift | p |", "|---|---:|---:|---|---:|---:|---:|---:|"]
        for c in m["comparisons"]:
            ci = c.get("lift_ci95") or [None, None]
            lines.append(f"| {c['a']} vs {c['b']} | {_fmt(c['ratio'], 3)} | {_fmt(c['lift'], 3)} | "
                         f"[{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}] | {_fmt(c['p_value'])} | "
                         f"{_fmt(c['p_value_two_proportion'])} | {_fmt(c.get('new_contact_lift'), 3)} | "
                         f"{_fmt(c.get('new_contact_p_value'))} |")
    lines += ["", "A new contact is a contact on a pair that had no positive event before the session (a new "
              "connection); the contact rate also counts repeats of old ones.",
              "", "p values: two-sided, from an entity-level bootstrap (the entity is the unit of assignment and "
              "of dependence); the naive two-proportion test treats every impression as independent and is "
              "shown for contrast only.",
              f"{m.get('sessions_window_open', 0)} sessions' attribution windows reach past the newest event: "
              "their counts may still grow."]
    for p in plots:
        lines += ["", f"![{p.rsplit('.', 1)[0]}]({p})"]
    return "\n".join(lines) + "\n"


def plot(m: dict[str, Any]) -> dict[str, bytes]:
    """Contact rate by arm with its interval; contact rate and CTR by position per arm."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def png(fig: Any) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()

    out = {}
    arms = list(m["arms"])
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(arms) + 2), 3.6))
    rates = [m["arms"][a]["contact_rate"] or 0.0 for a in arms]
    lo = [r - m["arms"][a]["contact_rate_ci95"][0] for a, r in zip(arms, rates, strict=True)]
    hi = [m["arms"][a]["contact_rate_ci95"][1] - r for a, r in zip(arms, rates, strict=True)]
    ax.bar(range(len(arms)), rates, yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], capsize=5, color="#4c72b0")
    ax.set_xticks(range(len(arms)), arms)
    ax.set_ylabel("contacts per impression")
    ax.set_title(f"{m['use_case']}: contact rate by arm (95 % entity-bootstrap CI)")
    out[RATE_PLOT] = png(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for arm in arms:
        pos = m["by_position"].get(arm, {})
        xs = sorted(pos)
        axes[0].plot(xs, [pos[x]["contact_rate"] for x in xs], marker="o", label=arm)
        axes[1].plot(xs, [pos[x]["ctr"] for x in xs], marker="o", label=arm)
    axes[0].set(title="contact rate by position", xlabel="position (0 = top)", ylabel="contacts per impression")
    axes[1].set(title="CTR by position", xlabel="position (0 = top)", ylabel="clicks per impression")
    axes[0].legend(fontsize=8)
    out[POSITION_PLOT] = png(fig)
    return out


def write(m: dict[str, Any], out: str) -> list[str]:
    """``metrics.json``, the PNG plots and ``report.md`` into ``out`` (local or ``s3://``)."""
    import json

    names: list[str] = []
    try:
        for name, data in plot(m).items():
            storage.write_bytes(storage.join(out, name), data)
            names.append(name)
    except ImportError as exc:  # matplotlib is a dependency; keep the numbers if it is broken
        log.warning("no plots: %s", exc)
    storage.write_bytes(storage.join(out, METRICS_JSON), json.dumps(m, indent=2, default=str).encode())
    storage.write_bytes(storage.join(out, REPORT_MD), render_markdown(m, names).encode())
    return [METRICS_JSON, REPORT_MD, *names]


def table(m: dict[str, Any]) -> str:
    """The console summary: one line per arm, one per comparison."""
    lines = [f"{'arm':<24}{'sessions':>9}{'impr.':>8}{'contacts':>9}{'rate':>9}  {'95% CI':<18}{'new':>6}{'new rate':>9}"]
    for arm, a in m["arms"].items():
        lo, hi = a["contact_rate_ci95"]
        lines.append(f"{arm:<24}{a['sessions']:>9}{a['impressions']:>8}{a['contacts']:>9}"
                     f"{_fmt(a['contact_rate']):>9}  {f'[{_fmt(lo)}, {_fmt(hi)}]':<18}{a['new_contacts']:>6}"
                     f"{_fmt(a['new_contact_rate']):>9}")
    for c in m["comparisons"]:
        lines.append(f"  {c['a']} vs {c['b']}: ratio {_fmt(c['ratio'], 3)} (lift {_fmt(c['lift'], 3)}), "
                     f"p = {_fmt(c['p_value'])}; new contacts: lift {_fmt(c['new_contact_lift'], 3)}, "
                     f"p = {_fmt(c['new_contact_p_value'])}")
    return "\n".join(lines)


def parse_experiment_arg(text: str | None) -> tuple[str, float] | None:
    """``NAME:PERCENT`` (the serving experiment's name and share) -> ``(name, percent)``."""
    if not text:
        return None
    name, sep, pct = text.rpartition(":")
    try:
        value = float(pct)
    except ValueError:
        value = float("nan")
    if not sep or not name or not 0 < value < 100:
        raise ConfigError(f"bad --experiment {text!r}: expected NAME:PERCENT (the name the predictor reports)")
    return name, value


def cli_monitor(args: Any) -> int:
    """``recs monitor --db URL --use-case UC [--since TS] [--until TS] [--window-days 7] --out DIR``."""
    m = monitor(args.db, args.use_case, since=args.since, until=args.until, window_days=args.window_days,
                experiment=parse_experiment_arg(args.experiment), n_boot=args.n_boot, baseline=args.baseline)
    write(m, args.out)
    print(f"online evaluation of {m['use_case']} ({m['first_session']} .. {m['last_session']}) -> {args.out}")
    print(table(m))
    return 0
