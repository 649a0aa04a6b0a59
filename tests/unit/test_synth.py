"""Synthetic marketplace: determinism, contracts, skew, segments, position bias, planted truth."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from startup_recs import synth
from startup_recs.cli import main
from startup_recs.core.config import segment_of
from startup_recs.core.errors import ConfigError
from startup_recs.data import appdb, schema


def _df(tables: dict[str, pa.Table], name: str) -> pd.DataFrame:
    return tables[name].to_pandas()


def test_same_seed_same_tables_other_seed_differs(tiny_tables):
    again = synth.generate("tiny", 0)
    assert set(again) == {*schema.APP_TABLES, "oracle"}
    for name, table in tiny_tables.items():
        assert again[name].equals(table), name
    other = synth.generate("tiny", 1)
    assert not other["startup_interactions"].equals(tiny_tables["startup_interactions"])


def test_unknown_size_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown size 'huge'"):
        synth.generate("huge", 0)


def test_tables_follow_the_contract(tiny_tables):
    for name in schema.APP_TABLES:
        table = tiny_tables[name]
        assert table.schema.equals(schema.SCHEMAS[name]), name
        assert schema.validate(table, name).equals(table)
    startups, users = _df(tiny_tables, "startups"), _df(tiny_tables, "users")
    assert len(startups) == 200 and len(users) == 1_000
    assert startups.startup_id.is_unique and users.user_id.is_unique
    dev_share = (users.role == "developer").mean()
    assert 0.72 < dev_share < 0.88
    devs, invs = users[users.role == "developer"], users[users.role == "investor"]
    assert devs.skills.map(len).between(3, 6).all() and (devs.sectors.map(len) == 0).all()
    assert invs.sectors.map(len).between(1, 3).all() and invs.stages.map(len).between(1, 3).all()
    assert invs.check_size_usd.notna().all() and devs.check_size_usd.isna().all()
    assert startups.skills_needed.map(len).between(2, 5).all()
    # later stages raise more money (medians increase along the stage order)
    med = startups.groupby("stage").funding_usd.median()
    present = [s for s in synth.STAGES if s in med.index]
    assert list(med[present]) == sorted(med[present])


def test_skewed_categories(tiny_tables):
    """Zipf-like: the most common sector/location/skill is several times the median one."""
    startups, users = _df(tiny_tables, "startups"), _df(tiny_tables, "users")
    for counts in (startups.sector.value_counts(), users.location.value_counts(),
                   users.skills.explode().value_counts()):
        assert counts.iloc[0] >= 3 * counts.median()


def test_events_respect_time_and_references(tiny_tables):
    startups = _df(tiny_tables, "startups").set_index("startup_id")
    users = _df(tiny_tables, "users").set_index("user_id")
    sessions = _df(tiny_tables, "recommendation_sessions")
    for name in ("startup_interactions", "user_interactions"):
        ev = _df(tiny_tables, name)
        assert ev.startup_id.isin(startups.index).all() and ev.user_id.isin(users.index).all()
        # nobody acts before both sides exist; events span the ~180-day window
        assert (ev.ts.values >= startups.created_at.reindex(ev.startup_id).values).all()
        assert (ev.ts.values >= users.created_at.reindex(ev.user_id).values).all()
        span = (ev.ts.max() - ev.ts.min()).days
        assert 170 <= span <= 181
        sid = ev.session_id.dropna()
        assert sid.isin(sessions.session_id).all()
        assert 0.1 < ev.session_id.isna().mean() < 0.8  # organic events exist beside sessions
    si = _df(tiny_tables, "startup_interactions")
    roles = users.role.reindex(si.user_id).values
    assert set(si.event[roles == "investor"]) == {"view", "click", "contact", "reply"}  # reply: to investors' contacts
    applied = si[si.event == "apply_received"]
    assert len(applied) > 100 and (users.role.reindex(applied.user_id) == "developer").all()
    ui = _df(tiny_tables, "user_interactions")
    assert (ui.event == "apply").sum() == len(applied)  # each application seen from both sides


def test_sessions_and_impressions(tiny_tables):
    sessions = _df(tiny_tables, "recommendation_sessions")
    imp = _df(tiny_tables, "impressions")
    assert set(sessions.use_case) == set(schema.ENUMS[("recommendation_sessions", "use_case")])
    assert imp.session_id.isin(sessions.session_id).all()
    assert not imp.duplicated(["session_id", "candidate_id"]).any()
    assert not imp.duplicated(["session_id", "position"]).any()
    per = imp.groupby("session_id").position.agg(["min", "max", "count"])
    assert (per["min"] == 0).all() and per["max"].max() == 9 and per["count"].median() == 10
    # candidates of reverse sessions are users of the right role
    users = _df(tiny_tables, "users").set_index("user_id")
    m = imp.merge(sessions, on="session_id")
    dev = m[m.use_case == "startup_developer"]
    assert (users.role.reindex(dev.candidate_id) == "developer").all()
    fwd = m[m.use_case == "developer_startup"]
    assert fwd.candidate_id.str.startswith("s").all()


@pytest.mark.parametrize("use_case", ["startup_developer", "startup_investor"])
def test_power_law_gives_every_segment(tiny_tables, use_case):
    seg = synth.segment_counts(tiny_tables)[use_case]
    assert sum(seg.values()) == 200
    for name in ("cold", "warm", "hot"):
        assert seg[name] >= 20, seg  # each segment holds at least 10 % of the startups
    # heavy tail: the most active 10 % of startups hold a large share of the events
    users = _df(tiny_tables, "users").set_index("user_id")
    si = _df(tiny_tables, "startup_interactions")
    role = "developer" if use_case == "startup_developer" else "investor"
    counts = si[users.role.reindex(si.user_id).values == role].startup_id.value_counts()
    top = counts.iloc[: len(counts) // 10].sum() / counts.sum()
    assert top > 0.25
    assert counts.max() > 8 * counts.median()


def test_cold_startups_exist_at_any_split(tiny_tables):
    """New startups keep arriving, so a late split still has cold (< 5 training events) ones."""
    si = _df(tiny_tables, "startup_interactions")
    split = si.ts.max() - pd.Timedelta(days=28)
    counts = si[si.ts < split].startup_id.value_counts()
    startups = _df(tiny_tables, "startups")
    created_late = startups[startups.created_at > split - pd.Timedelta(days=30)]
    assert len(created_late) >= 10
    cold = [s for s in startups.startup_id if segment_of(int(counts.get(s, 0))) == "cold"]
    assert len(cold) >= 30


def test_position_bias_visible_in_logged_ctr(tiny_tables):
    imp = _df(tiny_tables, "impressions")
    si = _df(tiny_tables, "startup_interactions")
    clicked = si[si.session_id.notna() & (si.event != "view")][["session_id", "user_id"]].drop_duplicates()
    clicked["hit"] = 1
    m = imp.merge(clicked, left_on=["session_id", "candidate_id"], right_on=["session_id", "user_id"],
                  how="left")
    sessions = _df(tiny_tables, "recommendation_sessions").set_index("session_id")
    m = m[sessions.use_case.reindex(m.session_id).isin(synth.REVERSE).values]
    ctr = m.hit.fillna(0).groupby(m.position).mean()
    assert ctr[0] > ctr[4] > ctr[9]
    assert ctr[0] > 2 * ctr[9]
    # positions 0-2 beat 7-9 clearly even though the policy's ordering is noisy
    assert ctr[[0, 1, 2]].mean() > 1.5 * ctr[[7, 8, 9]].mean()


def test_oracle_shape(tiny_tables):
    o = _df(tiny_tables, "oracle")
    assert list(o.columns) == ["use_case", "entity_id", "candidate_id", "affinity", "rank", "mutual_affinity",
                               "mutual_rank"]
    users = _df(tiny_tables, "users").set_index("user_id")
    n_dev = int((users.role == "developer").sum())
    sizes = o.groupby("use_case").entity_id.nunique()
    assert sizes["startup_developer"] == 200 and sizes["startup_investor"] == 200
    assert sizes["developer_startup"] == n_dev and sizes["investor_startup"] == 1_000 - n_dev
    per = o.groupby(["use_case", "entity_id"])
    assert (per["rank"].min() == 1).all()
    k = per.size()
    assert (k.loc["startup_developer"] == 200).all() and (k.loc["investor_startup"] == 200).all()
    assert (per["rank"].max() == k).all() and not o.duplicated(["use_case", "entity_id", "candidate_id"]).any()
    assert per.affinity.apply(lambda a: bool(np.all(np.diff(a.to_numpy()) <= 0))).all()
    dev = o[o.use_case == "startup_developer"]
    assert (users.role.reindex(dev.candidate_id) == "developer").all()


def test_planted_truth_drives_behaviour(tiny_tables):
    """Positive events concentrate on the oracle's top candidates far beyond chance."""
    o = _df(tiny_tables, "oracle")
    si = _df(tiny_tables, "startup_interactions")
    users = _df(tiny_tables, "users").set_index("user_id")
    dev_oracle = o[o.use_case == "startup_developer"]
    top20 = set(zip(dev_oracle.entity_id[dev_oracle["rank"] <= 20], dev_oracle.candidate_id[dev_oracle["rank"] <= 20],
                    strict=True))
    pos = si[si.event.isin(["contact", "apply_received"])
             & (users.role.reindex(si.user_id) == "developer").values]
    share = np.mean([(s, u) in top20 for s, u in zip(pos.startup_id, pos.user_id, strict=True)])
    n_dev = int((users.role == "developer").sum())
    assert share > 10 * 20 / n_dev  # chance would be 20 / n_dev (~2.5 %)


def test_write_db_sqlite_roundtrip_and_replace(tmp_path: Path, tiny_tables):
    app = {k: v for k, v in tiny_tables.items() if k != "oracle"}
    db = tmp_path / "sub" / "m.db"
    appdb.write_db(app, str(db))  # a bare path means SQLite
    with sqlite3.connect(db) as conn:
        n = conn.execute("select count(*) from startup_interactions").fetchone()[0]
        skills = conn.execute("select skills from users where role = 'developer' limit 1").fetchone()[0]
    assert n == tiny_tables["startup_interactions"].num_rows
    assert skills.startswith('["')  # list columns are JSON text
    with pytest.raises(ConfigError, match="already exists"):
        appdb.write_db(app, f"sqlite:///{db}")
    appdb.write_db(app, f"sqlite:///{db}", replace=True)
    assert [p.name for p in db.parent.iterdir()] == ["m.db"]  # no temp files left


def test_cli_synth(tmp_path: Path, capsys):
    db = tmp_path / "data" / "market.db"
    assert main(["synth", "--db", str(db), "--size", "tiny", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "startup_developer" in out and "cold=" in out and "impressions" in out
    oracle = pq.read_table(tmp_path / "data" / "oracle.parquet")
    assert oracle.num_rows > 0 and set(oracle.column("use_case").to_pylist()) >= set(synth.REVERSE)
    assert main(["synth", "--db", str(db), "--size", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--force" in err and "\n" not in err
    custom = tmp_path / "o" / "truth.parquet"
    assert main(["synth", "--db", str(db), "--size", "tiny", "--force", "--oracle", str(custom)]) == 0
    assert custom.exists()
