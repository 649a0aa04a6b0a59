"""recs monitor (startup_recs.evaluation.online) on a tiny hand-made log whose numbers are worked
out by hand below: attribution rules, per-arm counts and rates, arms by experiment assignment."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from startup_recs.cli import main as recs
from startup_recs.data import schema
from startup_recs.data.appdb import write_db
from startup_recs.evaluation import online
from startup_recs.serving.experiments import assign

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def tables() -> dict[str, pa.Table]:
    # sessions: A1, A2 (model v1), B1 (v2) for startup s1 / s2; X1 is another use case's
    sessions = [("A1", "s1", "startup_developer", at(0)), ("A2", "s2", "startup_developer", at(1)),
                ("B1", "s1", "startup_developer", at(2)), ("X1", "s1", "startup_investor", at(0)),
                ("OLD", "s1", "startup_developer", at(-100))]
    imps = [("A1", "u1", 0, "v1"), ("A1", "u2", 1, "v1"), ("A1", "u3", 2, "v1"),
            ("A2", "u1", 0, "v1"), ("A2", "u4", 1, "v1"),
            ("B1", "u5", 0, "v2"), ("B1", "u2", 1, "v2"),
            ("X1", "u9", 0, "v7"), ("OLD", "u1", 0, "v0")]
    events = [
        ("s1", "u1", "click", at(0.1), "A1"), ("s1", "u1", "contact", at(0.2), "A1"),  # A1/u1: click + contact
        ("s1", "u2", "click", at(0.3), None),  # no session id: the latest session of s1 showing u2 before it = A1
        ("s1", "u2", "contact", at(2.5), None),  # after B1 (which also shows u2): B1/u2 contact
        ("s1", "u3", "contact", at(24 * 8), None),  # 8 days after A1: outside the 7-day window
        ("s1", "u7", "contact", at(0.5), None),  # never shown: organic, counts for nothing
        ("s2", "u4", "contact", at(0.5), None),  # before A2 (1 h): no earlier session of s2 showed u4
        ("s2", "u1", "click", at(1.5), "A1"),  # names A1, but A1 was s1's: counts nowhere
        ("s2", "u1", "view", at(1.1), "A2"),  # a view is neither a click nor a contact
        ("s1", "u5", "apply_received", at(2.2), "B1"),  # a positive event of startup_developer
        ("s1", "u1", "contact", at(-99), "OLD"),  # the OLD session, outside --since
    ]
    ev = pa.table({"startup_id": [e[0] for e in events], "user_id": [e[1] for e in events],
                   "event": [e[2] for e in events], "ts": pa.array([e[3] for e in events], schema.TS),
                   "session_id": pa.array([e[4] for e in events], pa.string())})
    return {
        "startups": schema.empty("startups"), "users": schema.empty("users"),
        "startup_interactions": ev, "user_interactions": schema.empty("user_interactions"),
        "recommendation_sessions": pa.table({
            "session_id": [s[0] for s in sessions], "entity_id": [s[1] for s in sessions],
            "use_case": [s[2] for s in sessions], "ts": pa.array([s[3] for s in sessions], schema.TS)}),
        "impressions": pa.table({
            "session_id": [i[0] for i in imps], "candidate_id": [i[1] for i in imps],
            "position": pa.array([i[2] for i in imps], pa.int32()), "model_version": [i[3] for i in imps]}),
    }


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "app.db"
    write_db({k: schema.validate(v, k) for k, v in tables().items()}, str(path))
    return f"sqlite:///{path}"


def test_attribution_and_counts_match_the_hand_computed_numbers(db):
    m = online.monitor(db, "startup_developer", since="2026-06-30", n_boot=200)
    v1, v2 = m["arms"]["v1"], m["arms"]["v2"]
    # v1: A1 (u1 clicked + contacted, u2 clicked, u3 nothing: its contact is 8 days later), A2 (u1, u4: nothing)
    assert (v1["sessions"], v1["entities"], v1["impressions"], v1["clicks"], v1["contacts"]) == (2, 2, 5, 2, 1)
    assert v1["ctr"] == pytest.approx(2 / 5) and v1["contact_rate"] == pytest.approx(1 / 5)
    # v2: B1 (u5 apply_received, u2 contact without session id after B1)
    assert (v2["sessions"], v2["entities"], v2["impressions"], v2["clicks"], v2["contacts"]) == (1, 1, 2, 0, 2)
    assert v2["contact_rate"] == 1.0
    # new contacts: A1/u1's contact repeats the OLD session's contact of the pair s1-u1; B1's two are new
    assert (v1["new_contacts"], v2["new_contacts"], v2["new_contact_rate"]) == (0, 2, 1.0)
    assert set(m["arms"]) == {"v1", "v2"}  # the other use case's and the OLD session are out
    lo, hi = v1["contact_rate_ci95"]
    assert 0.0 <= lo <= v1["contact_rate"] <= hi <= 1.0
    (c,) = m["comparisons"]
    assert (c["a"], c["b"]) == ("v2", "v1") and c["lift"] == pytest.approx(1.0 / 0.2 - 1) and c["ratio"] == 5.0
    pos = m["by_position"]["v1"]
    assert pos[0] == {"impressions": 2, "clicks": 1, "contacts": 1, "new_contacts": 0, "ctr": 0.5, "contact_rate": 0.5}
    assert pos[1]["clicks"] == 1 and pos[2]["impressions"] == 1
    # a 10-day window: A1/u3's late contact counts too
    assert online.monitor(db, "startup_developer", since="2026-06-30", window_days=10, n_boot=50)["arms"]["v1"]["contacts"] == 2
    # --until before B1: v2 has no session in the period
    assert set(online.monitor(db, "startup_developer", since="2026-06-30", until=at(1.5).isoformat(), n_boot=50)["arms"]) == {"v1"}


def test_arms_by_experiment_assignment(db):
    name = next(f"aa-{i}" for i in range(1000) if assign(f"aa-{i}", "s1", 0.5) != assign(f"aa-{i}", "s2", 0.5))
    m = online.monitor(db, "startup_developer", since="2026-06-30", experiment=(name, 50.0), n_boot=50)
    s1_arm, s2_arm = assign(name, "s1", 0.5), assign(name, "s2", 0.5)
    assert m["arms"][s1_arm]["impressions"] == 5 and m["arms"][s1_arm]["model_versions"] == {"v1": 3, "v2": 2}
    assert m["arms"][s2_arm]["impressions"] == 2 and m["arms"][s2_arm]["contacts"] == 0
    assert [(c["a"], c["b"]) for c in m["comparisons"]] == [("treatment", "control")]


def test_bootstrap_and_tests_on_known_cases():
    rng = np.random.default_rng(0)
    # every entity has the same rate: the bootstrap has no spread
    boot = online.bootstrap_rates(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]), 100, rng)
    assert np.allclose(boot, 0.1)
    assert online.two_proportion_p(10, 100, 10, 100) == pytest.approx(1.0)
    assert online.two_proportion_p(30, 100, 10, 100) < 0.001


def test_cli_writes_metrics_report_and_plots(db, tmp_path, capsys):
    out = tmp_path / "mon"
    assert recs(["monitor", "--db", db, "--use-case", "startup_developer", "--since", "2026-06-30",
                 "--n-boot", "100", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["arms"]["v1"]) >= {"sessions", "impressions", "clicks", "contacts", "ctr", "contact_rate",
                                    "contact_rate_ci95"}
    assert {"a", "b", "lift", "p_value"} <= set(m["comparisons"][0])
    assert (out / online.RATE_PLOT).stat().st_size > 1000 and (out / online.POSITION_PLOT).is_file()
    assert "| v1 | 2 | 2 | 5 | 2 | 1 | 0.4000 | 0.2000 |" in (out / "report.md").read_text()
    assert "v2 vs v1" in capsys.readouterr().out


def test_pipeline_step_reads_the_period_since_the_previous_run(db, tmp_path):
    from startup_recs.core import bundle
    from startup_recs.pipeline import monitor_steps

    models = tmp_path / "models"
    for i, wm in enumerate(("2026-06-01T00:00:00+00:00", at(1.5).isoformat(), at(30).isoformat())):
        staging = tmp_path / f"staging{i}"
        staging.mkdir()
        (staging / "x.json").write_text(json.dumps({"run": i}))  # a distinct bundle each time
        bundle.publish(staging, str(models), "startup_developer", metrics={}, watermark=wm)
    # this run's data ends at +30 h and v3 (this run's own publish) already moved latest: the
    # period starts at v2's watermark (+1.5 h), so only B1 (+2 h) is in it
    assert monitor_steps.previous_watermark(str(models), "startup_developer", at(30).isoformat()) == at(1.5).isoformat()
    out, md = tmp_path / "online", tmp_path / "report.md"
    snapshot = tmp_path / "snapshot"  # the run's watermark comes from its snapshot (the KFP step's input)
    snapshot.mkdir()
    (snapshot / "extract_stats.json").write_text(json.dumps({"watermark": at(30).isoformat()}))
    info = monitor_steps.monitor(db, "startup_developer", str(models), str(out), snapshot=str(snapshot),
                                 report_md=str(md))
    assert set(json.loads((out / "metrics.json").read_text())["arms"]) == {"v2"}
    assert info["headline"]["v2_contact_rate"] == 1.0 and info["metadata"]["sessions"] == 1
    assert "data:image/png;base64," in md.read_text()
    assert monitor_steps.monitor("", "startup_developer", str(models), str(tmp_path / "none"))["headline"] == {}
