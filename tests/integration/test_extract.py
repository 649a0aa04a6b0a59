"""Extract: SQLite and PostgreSQL give the same snapshot; incremental runs append without
duplicates or loss; imports with custom columns; every bad input is one line, exit 2, no output."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from startup_recs.cli import main
from startup_recs.core import storage
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.data import appdb, schema
from startup_recs.data.extract import extract_db, import_events


def _sorted(table: pa.Table) -> pa.Table:
    keys = [(c, "ascending") for c in table.column_names if not pa.types.is_list(table.schema.field(c).type)]
    return table.sort_by(keys)


def _read(snapshot: str, table: str) -> pa.Table:
    return storage.read_table(storage.join(snapshot, table))


def _app(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    return {k: v for k, v in tables.items() if k in schema.APP_TABLES}


def _split_events(tables: dict[str, pa.Table], cut: dt.datetime) -> tuple[dict, dict]:
    """(tables with events before ``cut``, the later event rows) - sessions cut by their ts."""
    early, late = dict(_app(tables)), {}
    cut_s = pa.scalar(cut, schema.TS)
    for name, col in schema.EVENT_TABLES.items():
        t = tables[name]
        early[name] = t.filter(pc.less(t.column(col), cut_s))
        late[name] = t.filter(pc.greater_equal(t.column(col), cut_s))
    sessions_late = set(late["recommendation_sessions"].column("session_id").to_pylist())
    imp = tables["impressions"]
    is_late = pc.is_in(imp.column("session_id"), pa.array(sorted(sessions_late)))
    early["impressions"], late["impressions"] = imp.filter(pc.invert(is_late)), imp.filter(is_late)
    return early, late


# --- SQLite / PostgreSQL -------------------------------------------------------------------------
def test_sqlite_snapshot_is_the_generated_data(tiny_snapshot, tiny_tables):
    for name in schema.APP_TABLES:
        assert _read(tiny_snapshot, name).equals(tiny_tables[name]), name
    stats = json.loads(Path(tiny_snapshot, "extract_stats.json").read_text())
    assert stats["source"] == "db" and stats["use_case"] is None
    assert stats["tables"] == {n: tiny_tables[n].num_rows for n in schema.APP_TABLES}
    last = max(pc.max(tiny_tables[n].column("ts")).as_py() for n in schema.EVENT_TABLES)
    assert stats["watermark"] == last.isoformat()
    assert stats["event_weights"]["contact"] > stats["event_weights"]["view"]
    assert sorted(p.name for p in Path(tiny_snapshot).iterdir()) == sorted(
        [*schema.APP_TABLES, "extract_stats.json"])  # no staging leftovers


@pytest.mark.postgres
def test_postgres_and_sqlite_give_the_same_snapshot(pg_url, tiny_tables, tiny_snapshot, tmp_path):
    appdb.write_db(_app(tiny_tables), pg_url)
    out = tmp_path / "pg_snapshot"
    stats = extract_db(pg_url, str(out), chunk_size=3_000)
    sqlite_stats = json.loads(Path(tiny_snapshot, "extract_stats.json").read_text())
    assert stats["tables"] == sqlite_stats["tables"] and stats["watermark"] == sqlite_stats["watermark"]
    for name in schema.APP_TABLES:
        a, b = _read(str(out), name), _read(tiny_snapshot, name)
        assert a.schema.equals(b.schema), name
        assert _sorted(a).equals(_sorted(b)), name


def test_small_chunks_give_the_same_snapshot(tiny_db, tiny_snapshot, tmp_path):
    out = tmp_path / "chunked"
    extract_db(tiny_db, str(out), chunk_size=777)
    f = pq.ParquetFile(out / "startup_interactions" / "part-00000.parquet")
    assert f.metadata.num_row_groups > 5  # written incrementally, chunk by chunk
    for name in schema.APP_TABLES:
        assert _read(str(out), name).equals(_read(tiny_snapshot, name)), name


def _incremental_roundtrip(url: str, tables: dict[str, pa.Table], out: str) -> None:
    """Extract events before a cut, add the rest (plus a row sharing the watermark), extract again."""
    si = tables["startup_interactions"]
    cut = pc.quantile(si.column("ts").cast(pa.int64()), q=0.7).to_pylist()[0]
    cut_ts = dt.datetime.fromtimestamp(cut / 1e6, dt.UTC)
    early, late = _split_events(tables, cut_ts)
    appdb.write_db(early, url, replace=True)
    first = extract_db(url, out, chunk_size=2_000)
    wm = first["watermarks"]["startup_interactions"]
    # a late-committed event carrying exactly the watermark timestamp must not be lost, and the
    # rows already extracted at that timestamp must not come twice
    at_wm = early["startup_interactions"].filter(
        pc.equal(early["startup_interactions"].column("ts"), pa.scalar(dt.datetime.fromisoformat(wm), schema.TS)))
    assert at_wm.num_rows >= 1
    extra = at_wm.slice(0, 1).set_column(1, schema.SCHEMAS["startup_interactions"].field("user_id"),
                                         pa.array(["u0000001"]))
    appdb.insert_rows(url, {**late, "startup_interactions": pa.concat_tables([extra, late["startup_interactions"]])})
    second = extract_db(url, out, chunk_size=2_000)
    third = extract_db(url, out)  # nothing new: nothing appended, no new part
    expected = dict(_app(tables))
    expected["startup_interactions"] = pa.concat_tables([tables["startup_interactions"], extra])
    for name in schema.APP_TABLES:
        got = _read(out, name)
        assert _sorted(got).equals(_sorted(expected[name])), name
        assert second["tables"][name] == third["tables"][name] == expected[name].num_rows
    assert second["runs"][-1]["appended"]["startup_interactions"] == late["startup_interactions"].num_rows + 1
    assert second["parts"]["startup_interactions"] == ["part-00000.parquet", "part-00001.parquet"]
    assert third["parts"] == second["parts"] and set(third["runs"][-1]["appended"].values()) <= {0, 200, 1000}
    assert third["watermark"] == second["watermark"] > first["watermark"]


def test_incremental_sqlite_appends_without_duplicates_or_loss(tiny_tables, tmp_path):
    _incremental_roundtrip(str(tmp_path / "m.db"), tiny_tables, str(tmp_path / "snap"))


@pytest.mark.postgres
def test_incremental_postgres(pg_url, tiny_tables, tmp_path):
    _incremental_roundtrip(pg_url, tiny_tables, str(tmp_path / "snap"))


def test_since_on_a_fresh_snapshot_keeps_only_later_events(tiny_db, tiny_tables, tmp_path):
    since = "2026-05-01T00:00:00Z"
    stats = extract_db(tiny_db, str(tmp_path / "s"), since=since)
    cut = pa.scalar(dt.datetime(2026, 5, 1, tzinfo=dt.UTC), schema.TS)
    for name, col in schema.EVENT_TABLES.items():
        expect = tiny_tables[name].filter(pc.greater_equal(tiny_tables[name].column(col), cut))
        assert _sorted(_read(str(tmp_path / "s"), name)).equals(_sorted(expect)), name
    sessions = set(_read(str(tmp_path / "s"), "recommendation_sessions").column("session_id").to_pylist())
    imp = _read(str(tmp_path / "s"), "impressions")
    assert set(imp.column("session_id").to_pylist()) == sessions
    assert stats["tables"]["startups"] == 200  # entity tables are whole
    assert stats["runs"][0]["since"] == "2026-05-01T00:00:00+00:00"


def test_failed_incremental_run_leaves_the_snapshot_untouched(tiny_tables, tmp_path):
    db = tmp_path / "m.db"
    appdb.write_db(_app(tiny_tables), str(db))
    out = tmp_path / "snap"
    extract_db(str(db), str(out))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tiny_tables["startup_interactions"].slice(0, 3)
    bad = bad.set_column(3, schema.SCHEMAS["startup_interactions"].field("ts"),
                         pa.array([dt.datetime(2027, 1, 1, tzinfo=dt.UTC)] * 3, schema.TS))
    appdb.insert_rows(str(db), {"startup_interactions": bad})
    with sqlite3.connect(db) as conn:
        conn.execute("update startup_interactions set event = 'like' where ts > '2026-12-31'")
    with pytest.raises(DataError, match="unknown value 'like'"):
        extract_db(str(db), str(out))
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


# --- imports -------------------------------------------------------------------------------------
def _log(n: int = 50) -> pd.DataFrame:
    base = pd.Timestamp("2026-03-01T00:00:00Z")
    return pd.DataFrame({
        "company": [f"{i % 7}" for i in range(n)],  # numeric-looking ids stay strings
        "person": [f"p{i % 11}" for i in range(n)],
        "when": [(base + pd.Timedelta(hours=i)).isoformat() for i in range(n)],
        "action": ["view", "click", "contact", "view", "apply_received"] * (n // 5),
        "strength": [1.0, 2.0, None, 0.5, 3.0] * (n // 5),
    })


def test_csv_import_with_custom_columns(tmp_path):
    df = _log()
    src = tmp_path / "log.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "snap"
    rc = main(["extract", "--events", str(src), "--out", str(out), "--use-case", "startup_developer",
               "--entity-col", "company", "--candidate-col", "person", "--time-col", "when",
               "--event-col", "action", "--weight-col", "strength"])
    assert rc == 0
    ev = _read(str(out), "events")
    assert ev.schema.equals(schema.SCHEMAS["events"])
    assert ev.column("entity_id").to_pylist() == df.company.tolist()
    assert ev.column("candidate_id").to_pylist() == df.person.tolist()
    assert ev.column("event").to_pylist() == df.action.tolist()
    assert ev.column("weight").to_pylist() == df.strength.fillna(1.0).tolist()  # missing weight = 1
    assert ev.column("ts")[1].as_py() == dt.datetime(2026, 3, 1, 1, tzinfo=dt.UTC)
    stats = json.loads((out / "extract_stats.json").read_text())
    assert stats["source"] == "events" and stats["use_case"] == "startup_developer"
    assert stats["tables"] == {"events": 50}
    assert stats["time_range"] == ["2026-03-01T00:00:00+00:00", "2026-03-03T01:00:00+00:00"]


def test_parquet_import_ids_only_with_feature_tables(tmp_path):
    log = pa.table({"entity_id": [1, 1, 2], "candidate_id": ["a", "b", "a"],
                    "ts": pa.array([1_767_225_600, 1_767_225_660, 1_767_225_720], pa.int64())})
    pq.write_table(log, tmp_path / "log.parquet")
    ents = pa.table({"entity_id": ["1", "2"], "sector": ["ai", "saas"], "size": [3, 40]})
    cands = pa.table({"candidate_id": ["a", "b"], "skills": [["python"], ["go", "sql"]]})
    pq.write_table(ents, tmp_path / "ents.parquet")
    pq.write_table(cands, tmp_path / "cands.parquet")
    out = str(tmp_path / "snap")
    import_events(str(tmp_path / "log.parquet"), out, "investor_startup",
                  entity_features=str(tmp_path / "ents.parquet"),
                  candidate_features=str(tmp_path / "cands.parquet"))
    ev = _read(out, "events")
    assert ev.column("event").to_pylist() == ["interaction"] * 3  # no event column
    assert ev.column("weight").to_pylist() == [1.0] * 3
    assert ev.column("ts")[0].as_py() == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # epoch seconds
    assert _read(out, "entity_features").equals(ents)
    assert _read(out, "candidate_features").equals(cands)


def test_import_incremental_and_source_mismatch(tmp_path, tiny_snapshot):
    df = _log(50)
    df.iloc[:30].to_csv(tmp_path / "a.csv", index=False)
    df.to_csv(tmp_path / "b.csv", index=False)  # the same log, grown by 20 rows
    kw = {"entity_col": "company", "candidate_col": "person", "time_col": "when", "event_col": "action",
          "weight_col": "strength"}
    out = str(tmp_path / "snap")
    import_events(str(tmp_path / "a.csv"), out, "startup_developer", **kw)
    stats = import_events(str(tmp_path / "b.csv"), out, "startup_developer", **kw)
    assert stats["tables"]["events"] == 50 and stats["runs"][-1]["appended"]["events"] == 20
    assert _read(out, "events").column("ts").to_pylist() == sorted(_read(out, "events").column("ts").to_pylist())
    with pytest.raises(ConfigError, match="use_case='startup_developer'"):
        import_events(str(tmp_path / "b.csv"), out, "startup_investor", **kw)
    copy = tmp_path / "dbsnap"
    shutil.copytree(tiny_snapshot, copy)
    with pytest.raises(ConfigError, match="source='db'"):
        import_events(str(tmp_path / "b.csv"), str(copy), "startup_developer", **kw)


def test_s3_extract_and_incremental_import(s3_bucket, tiny_db, tiny_snapshot, tmp_path):
    out = f"{s3_bucket}/snapshots/tiny"
    stats = extract_db(tiny_db, out)
    for name in schema.APP_TABLES:
        assert _read(out, name).equals(_read(tiny_snapshot, name)), name
    assert storage.read_json(storage.join(out, "extract_stats.json"))["tables"] == stats["tables"]
    again = extract_db(tiny_db, out)  # nothing new
    assert again["tables"] == stats["tables"] and again["parts"] == stats["parts"]
    df = _log(50)
    df.iloc[:25].to_csv(tmp_path / "a.csv", index=False)
    df.to_csv(tmp_path / "b.csv", index=False)
    kw = {"entity_col": "company", "candidate_col": "person", "time_col": "when", "event_col": "action",
          "weight_col": "strength"}
    imp = f"{s3_bucket}/imports/log"
    import_events(str(tmp_path / "a.csv"), imp, "startup_developer", **kw)
    st = import_events(str(tmp_path / "b.csv"), imp, "startup_developer", **kw)
    assert st["tables"]["events"] == 50 and _read(imp, "events").num_rows == 50
    assert storage.walk_files(imp) == ["events/part-00000.parquet", "events/part-00001.parquet",
                                       "extract_stats.json"]
    # the log itself can live on S3 too
    storage.upload_file(tmp_path / "b.csv", f"{s3_bucket}/logs/b.csv")
    st = import_events(f"{s3_bucket}/logs/b.csv", f"{s3_bucket}/imports/from_s3", "startup_developer", **kw)
    assert _read(f"{s3_bucket}/imports/from_s3", "events").equals(_read(imp, "events"))


# --- bad input: one line, exit code 2, nothing written --------------------------------------------
def _broken_db(tiny_db: str, tmp_path: Path, *sql: str) -> str:
    db = tmp_path / "broken.db"
    shutil.copyfile(tiny_db, db)
    with sqlite3.connect(db) as conn:
        for stmt in sql:
            conn.execute(stmt)
    return str(db)


# a copy of startup_interactions without NOT NULL constraints, so bad rows can be stored
_LOOSE = ("create table si2 as select * from startup_interactions",
          "drop table startup_interactions", "alter table si2 rename to startup_interactions")

DB_CASES = {
    "unreachable": (None, "cannot connect to postgresql+psycopg://nobody@127.0.0.1:1/x"),
    "bad_dialect": (None, "cannot connect to"),
    "missing_file": (None, "database file not found"),
    "missing_table": (("drop table impressions",), "table 'impressions' not found"),
    "missing_column": (("alter table startup_interactions drop column event",),
                       "startup_interactions: missing column 'event'"),
    "unknown_event": (("update startup_interactions set event = 'like' where id = 7",),
                      "startup_interactions.event: unknown value 'like'"),
    "null_id": ((*_LOOSE, "update startup_interactions set user_id = null where rowid = 9"),
                "startup_interactions.user_id: 1 null value(s)"),
    "bad_timestamp": (("update startup_interactions set ts = 'last tuesday' where id = 3",),
                      "startup_interactions.ts: unparseable timestamp 'last tuesday'"),
}


@pytest.mark.parametrize("case", sorted(DB_CASES))
def test_bad_database_input(case, tiny_db, tmp_path, capsys):
    sql, message = DB_CASES[case]
    url = {"unreachable": "postgresql+psycopg://nobody@127.0.0.1:1/x",
           "bad_dialect": "nosuchdb://localhost/x",
           "missing_file": str(tmp_path / "nope.db")}.get(case)
    if url is None:
        url = _broken_db(tiny_db, tmp_path, *sql)
    out = tmp_path / "out"
    assert main(["extract", "--db", url, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]
    if case == "missing_file":
        assert not (tmp_path / "nope.db").exists()  # SQLite did not create an empty database


IMPORT_CASES = {
    "unknown_event": ({"action": "like"}, [], "events.action: unknown event 'like'"),
    "null_id": ({"company": None}, [], "events.company: 1 null id(s)"),
    "bad_timestamp": ({"when": "yesterday"}, [], "events.when: unparseable timestamp 'yesterday'"),
    "missing_column": (None, ["--entity-col", "startup"], "missing column 'startup' (--entity-col)"),
    "unknown_use_case": (None, ["--use-case", "startup_cofounder"], "unknown use case 'startup_cofounder'"),
    "no_use_case": (None, ["--use-case", ""], "--use-case is required with --events"),
    "missing_file": (None, ["--events", "/nonexistent/log.csv"], "file not found: /nonexistent/log.csv"),
    "negative_weight": ({"strength": -2.0}, [], "events.strength: 1 negative or NaN weight(s)"),
}


@pytest.mark.parametrize("case", sorted(IMPORT_CASES))
def test_bad_import_input(case, tmp_path, capsys):
    change, flags, message = IMPORT_CASES[case]
    df = _log(40)
    if change:
        for col, value in change.items():
            df.loc[17, col] = value
    src = tmp_path / "log.csv"
    pacsv.write_csv(pa.Table.from_pandas(df, preserve_index=False), src)
    out = tmp_path / "out"
    args = {"--events": str(src), "--out": str(out), "--use-case": "startup_developer",
            "--entity-col": "company", "--candidate-col": "person", "--time-col": "when",
            "--event-col": "action", "--weight-col": "strength"}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        args[flag] = value
    argv = ["extract"] + [x for kv in args.items() for x in kv if kv[1] != ""]
    argv = [a for a in argv if a != "--use-case"] if args["--use-case"] == "" else argv
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_cli_subprocess_exit_code(tmp_path):
    """The installed entry point: one-line error on stderr, exit status 2, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "startup_recs.cli", "extract", "--db",
                           str(tmp_path / "missing.db"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: database file not found: {tmp_path / 'missing.db'}"
