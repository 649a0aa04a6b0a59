"""Tiny hand-made snapshots with known answers for the snapshot/split/features/dataset tests.

Written as validated tables with ``storage.write_table`` into ``<dir>/<table>/part-0.parquet``,
exactly as ``recs extract`` lays them out. Times are whole days after :data:`T0`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from startup_recs.core import storage
from startup_recs.data.schema import validate

T0 = pd.Timestamp("2026-01-01", tz="UTC")
# val_start = day 40, split_at = day 50 (use with split_at=day(50), val_days=10)


def day(d: float) -> pd.Timestamp:
    return (T0 + pd.Timedelta(days=d)).floor("us")


def write(snapshot: Path | str, name: str, rows: list[dict[str, Any]] | pd.DataFrame, *,
          schema_name: str | None = None, allowed_events: frozenset[str] | None = None) -> None:
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    table = pa.Table.from_pandas(df, preserve_index=False)
    if schema_name is not False and (schema_name or name) in {
        "startups", "users", "startup_interactions", "user_interactions", "recommendation_sessions",
        "impressions", "events"}:
        table = validate(table, schema_name or name, allowed_events=allowed_events)
    storage.write_table(table, storage.join(str(snapshot), name, "part-0.parquet"))


STARTUPS = [
    dict(startup_id="s1", name="A", sector="fintech", stage="seed", location="Berlin",
         skills_needed=["python", "ml"], funding_usd=1e6, created_at=day(-100)),
    dict(startup_id="s2", name="B", sector="ai", stage="series_a", location="Paris",
         skills_needed=["go"], funding_usd=5e6, created_at=day(-100)),
    dict(startup_id="s3", name="C", sector="bio", stage="seed", location="Berlin",
         skills_needed=["python"], funding_usd=2e6, created_at=day(-100)),
    dict(startup_id="s4", name="D", sector="ai", stage="seed", location="Paris",
         skills_needed=["rust"], funding_usd=None, created_at=day(45)),
]
USERS = [
    dict(user_id="d1", role="developer", skills=["python", "ml"], location="Berlin", experience_years=5.0),
    dict(user_id="d2", role="developer", skills=["go"], location="Paris", experience_years=2.0),
    dict(user_id="d3", role="developer", skills=["python"], location="Berlin", experience_years=8.0),
    dict(user_id="d4", role="developer", skills=["rust"], location="Lisbon", experience_years=1.0),
    dict(user_id="d5", role="developer", skills=["java"], location="Paris", experience_years=3.0),
    dict(user_id="d6", role="developer", skills=["ml"], location="Berlin", experience_years=4.0),
    dict(user_id="d7", role="developer", skills=["haskell"], location="Oslo", experience_years=9.0),
    dict(user_id="i1", role="investor", sectors=["fintech"], stages=["seed"], location="Berlin", check_size_usd=1e5),
    dict(user_id="i2", role="investor", sectors=["ai"], stages=["series_a"], location="Paris", check_size_usd=1e6),
]
for _u in USERS:
    _u["created_at"] = day(-100)

# (startup, user, event, day, session)
SI = [
    ("s1", "d1", "click", 1.0, "A1"),
    ("s1", "d1", "contact", 2.0, "A1"),
    ("s1", "d2", "view", 5.0, None),
    ("s2", "d2", "click", 10.0, "B1"),
    ("s2", "d5", "apply_received", 12.0, None),
    ("s2", "d5", "contact", 13.0, "B1"),
    ("s3", "d3", "contact", 20.0, "C1"),
    ("s1", "d3", "click", 42.0, "A2"),       # val
    ("s1", "d6", "contact", 43.0, "A2"),     # val
    ("s2", "d2", "contact", 44.0, None),     # val, pair first seen in train -> stays train
    ("s1", "d4", "contact", 55.0, None),     # test
    ("s4", "d4", "contact", 56.0, None),     # test, new startup
    ("s1", "i1", "contact", 3.0, None),      # investor use case
    ("s2", "i2", "click", 41.0, None),
    ("s3", "i1", "contact", 52.0, None),
]
SESSIONS = [
    ("A1", "s1", "startup_developer", 1.0),
    ("B1", "s2", "startup_developer", 10.0),
    ("C1", "s3", "startup_developer", 20.0),
    ("A2", "s1", "startup_developer", 42.0),
    ("I1", "s1", "startup_investor", 3.0),
]
IMPRESSIONS = [
    ("A1", "d1", 0), ("A1", "d5", 1), ("A1", "d6", 2),
    ("B1", "d2", 0), ("B1", "d5", 1), ("B1", "d7", 2),
    ("C1", "d7", 0), ("C1", "d3", 1), ("C1", "d6", 2),
    ("A2", "d3", 0), ("A2", "d6", 1), ("A2", "d7", 2),
    ("I1", "i2", 0), ("I1", "i1", 1),
]
UI = [
    ("d1", "s1", "apply", 1.5, None),
    ("d1", "s3", "save", 30.0, None),
    ("d3", "s1", "contact", 45.0, None),
    ("d2", "s2", "view", 51.0, None),
    ("i1", "s1", "contact", 4.0, None),
]


def db_snapshot(path: Path | str) -> str:
    """The hand-made app-database snapshot above; returns its URI."""
    path = str(path)
    write(path, "startups", STARTUPS)
    write(path, "users", USERS)
    write(path, "startup_interactions", [dict(startup_id=s, user_id=u, event=e, ts=day(d), session_id=sid)
                                         for s, u, e, d, sid in SI])
    write(path, "user_interactions", [dict(user_id=u, startup_id=s, event=e, ts=day(d), session_id=sid)
                                      for u, s, e, d, sid in UI])
    write(path, "recommendation_sessions", [dict(session_id=s, entity_id=e, use_case=uc, ts=day(d))
                                            for s, e, uc, d in SESSIONS])
    write(path, "impressions", [dict(session_id=s, candidate_id=c, position=p, model_version="v0")
                                for s, c, p in IMPRESSIONS])
    return path


def events_snapshot(path: Path | str, rows: list[tuple[str, str, float, str, float]], *,
                    use_case: str = "startup_developer", entity_features: pd.DataFrame | None = None,
                    candidate_features: pd.DataFrame | None = None) -> str:
    """An imported-log snapshot: rows of (entity, candidate, day, event, weight)."""
    path = str(path)
    write(path, "events", [dict(entity_id=e, candidate_id=c, ts=day(d), event=ev, weight=w)
                           for e, c, d, ev, w in rows], allowed_events=frozenset({"interaction", "view", "click",
                                                                                  "contact", "purchase"}))
    if entity_features is not None:
        write(path, "entity_features", entity_features)
    if candidate_features is not None:
        write(path, "candidate_features", candidate_features)
    storage.write_json(storage.join(path, "extract_stats.json"),
                       {"source": "events", "use_case": use_case, "event_weights": {"purchase": 4.0}})
    return path


def random_db_snapshot(path: Path | str, seed: int = 0, n_startups: int = 30, n_devs: int = 80,
                       n_investors: int = 20, n_sessions: int = 300, days: int = 60) -> str:
    """A random but valid app-database snapshot for property tests (no known answers, only rules)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    path = str(path)
    skills = ["python", "go", "rust", "ml", "sql", "java", "react"]
    startups = [dict(startup_id=f"s{i}", name=f"S{i}", sector=str(rng.choice(["ai", "fintech", "bio"])),
                     stage=str(rng.choice(["seed", "series_a"])), location=str(rng.choice(["Berlin", "Paris"])),
                     skills_needed=list(rng.choice(skills, size=2, replace=False)), funding_usd=float(rng.integers(1, 50)) * 1e5,
                     created_at=day(-10)) for i in range(n_startups)]
    users = [dict(user_id=f"d{i}", role="developer", skills=list(rng.choice(skills, size=int(rng.integers(1, 4)), replace=False)),
                  location=str(rng.choice(["Berlin", "Paris", "Oslo"])), experience_years=float(rng.integers(0, 15)),
                  created_at=day(-10)) for i in range(n_devs)]
    users += [dict(user_id=f"i{i}", role="investor", sectors=[str(rng.choice(["ai", "fintech", "bio"]))], stages=["seed"],
                   location="Berlin", check_size_usd=1e5, created_at=day(-10)) for i in range(n_investors)]
    sessions, imps, si = [], [], []
    for k in range(n_sessions):
        s = f"s{int(rng.zipf(1.6)) % n_startups}"
        t = float(rng.uniform(0, days))
        investor = rng.random() < 0.2
        pool = [f"i{j}" for j in range(n_investors)] if investor else [f"d{j}" for j in range(n_devs)]
        uc = "startup_investor" if investor else "startup_developer"
        sid = f"q{k}"
        sessions.append(dict(session_id=sid, entity_id=s, use_case=uc, ts=day(t)))
        shown = rng.choice(pool, size=6, replace=False)
        for pos, c in enumerate(shown):
            imps.append(dict(session_id=sid, candidate_id=str(c), position=pos, model_version="v0"))
            p_click = 0.5 / (1 + pos)
            if rng.random() < p_click:
                si.append(dict(startup_id=s, user_id=str(c), event="click", ts=day(t + 0.01),
                               session_id=sid if rng.random() < 0.5 else None))
                if rng.random() < 0.5:
                    ev = "contact" if investor or rng.random() < 0.5 else "apply_received"
                    si.append(dict(startup_id=s, user_id=str(c), event=ev, ts=day(t + float(rng.uniform(0.02, 2))),
                                   session_id=None))
            elif rng.random() < 0.2:
                si.append(dict(startup_id=s, user_id=str(c), event="view", ts=day(t + 0.01), session_id=sid))
    for _ in range(400):  # organic events outside sessions
        s = f"s{int(rng.integers(n_startups))}"
        c = f"d{int(rng.integers(n_devs))}"
        si.append(dict(startup_id=s, user_id=c, event=str(rng.choice(["view", "click", "contact"])),
                       ts=day(float(rng.uniform(0, days))), session_id=None))
    write(path, "startups", startups)
    write(path, "users", users)
    write(path, "startup_interactions", si)
    write(path, "user_interactions", [dict(user_id="d0", startup_id="s0", event="view", ts=day(1.0), session_id=None)])
    write(path, "recommendation_sessions", sessions)
    write(path, "impressions", imps)
    return path
