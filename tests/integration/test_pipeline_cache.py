"""kfp.local's cache around extract, and the persistent snapshot each extract appends to: the
watermark and entity probes always run and feed extract, so the same data reuses the cached
snapshot, a newer event reruns extract (which reads only the new rows into the persistent
snapshot: no duplicates) and so does an edited profile (the real components, the real kfp.local
subprocess runner, a SQLite marketplace). No ``from __future__ import annotations``: KFP reads
the pipeline's annotations as types."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kfp")

from kfp import dsl, local  # noqa: E402

import components as c  # noqa: E402


@dsl.pipeline(name="extract-only")
def extract_only(db_url: str, snapshot_uri: str) -> dsl.Dataset:
    probe = c.probe_source(db_url=db_url).set_caching_options(False)
    profiles = c.probe_entities(db_url=db_url).set_caching_options(False)
    return c.extract(watermark=probe.output, entities=profiles.output, db_url=db_url,
                     snapshot_uri=snapshot_uri).set_caching_options(True).outputs["snapshot"]


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="recs-pipeline-cache-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_extract_is_cached_until_events_or_profiles_change_and_appends_only_new_rows(work: Path) -> None:
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from startup_recs import synth
    from startup_recs.data import appdb
    from startup_recs.pipeline import data_steps

    tables = synth.generate("tiny", 0)
    db = work / "m.db"
    appdb.write_db({k: v for k, v in tables.items() if k != "oracle"}, str(db))
    url = f"sqlite:///{db}"
    home = str(work / "persistent")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "root"),
               enable_caching=True, cache_root=str(work / "cache"))

    def interactions(snapshot: str) -> int:
        return pq.read_table(Path(snapshot) / "startup_interactions").num_rows

    first = extract_only(db_url=url, snapshot_uri=home).output
    n0 = tables["startup_interactions"].num_rows
    assert first.metadata["appended.startup_interactions"] == n0 == interactions(first.path)
    again = extract_only(db_url=url, snapshot_uri=home).output
    assert again.uri == first.uri  # cache hit: the same artifact, extract did not run
    wm1 = first.metadata["data_watermark"]
    assert wm1 == data_steps.probe_source(db_url=url)

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        row = conn.execute(sa.text("select startup_id, user_id from startup_interactions limit 1")).one()
        for minute in (0, 1):
            conn.execute(sa.text("insert into startup_interactions (startup_id, user_id, event, ts) "
                                 f"values (:s, :u, 'view', '2030-01-01 00:0{minute}:00')"), {"s": row[0], "u": row[1]})
    fresh = extract_only(db_url=url, snapshot_uri=home).output
    assert fresh.uri != first.uri  # new data: a new cache key, extract ran again ...
    assert fresh.metadata["appended.startup_interactions"] == 2  # ... and read only the new rows
    assert fresh.metadata["data_watermark"].startswith("2030-01-01")
    assert interactions(fresh.path) == n0 + 2 == interactions(home)  # the persistent snapshot, no duplicates
    snap = pq.read_table(Path(home) / "startup_interactions").to_pandas()
    assert not snap.duplicated().any()
    assert interactions(first.path) == n0  # an earlier run's artifact is never changed
    assert Path(fresh.path, "extract_stats.json").is_file()

    with engine.begin() as conn:  # an edited profile, no new event
        conn.execute(sa.text("update users set location = 'Tallinn' where user_id = :u"), {"u": row[1]})
    engine.dispose()
    edited = extract_only(db_url=url, snapshot_uri=home).output
    assert edited.uri != fresh.uri  # the entity digest changed: extract ran
    assert edited.metadata["appended.startup_interactions"] == 0
    users = pq.read_table(Path(edited.path) / "users").to_pandas().set_index("user_id")
    assert users.loc[row[1], "location"] == "Tallinn"
    assert interactions(edited.path) == n0 + 2
