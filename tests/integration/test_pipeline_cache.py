"""kfp.local's cache around extract: the watermark probe always runs and feeds extract, so the
same data reuses the cached snapshot and a newer event reruns extract (the real components, the
real kfp.local subprocess runner, a SQLite marketplace). No ``from __future__ import annotations``:
KFP reads the pipeline's annotations as types."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kfp")

from kfp import dsl, local  # noqa: E402

import components as c  # noqa: E402


@dsl.pipeline(name="extract-only")
def extract_only(db_url: str) -> dsl.Dataset:
    probe = c.probe_source(db_url=db_url).set_caching_options(False)
    return c.extract(watermark=probe.output, db_url=db_url).set_caching_options(True).outputs["snapshot"]


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="recs-pipeline-cache-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_extract_is_cached_until_new_events_arrive(work: Path) -> None:
    import sqlalchemy as sa

    from startup_recs import synth
    from startup_recs.data import appdb
    from startup_recs.pipeline import data_steps

    tables = synth.generate("tiny", 0)
    db = work / "m.db"
    appdb.write_db({k: v for k, v in tables.items() if k != "oracle"}, str(db))
    url = f"sqlite:///{db}"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "root"),
               enable_caching=True, cache_root=str(work / "cache"))

    first = extract_only(db_url=url).output
    again = extract_only(db_url=url).output
    assert again.uri == first.uri  # cache hit: the same artifact, extract did not run
    wm1 = first.metadata["data_watermark"]
    assert wm1 == data_steps.probe_source(db_url=url)

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        row = conn.execute(sa.text("select startup_id, user_id from startup_interactions limit 1")).one()
        conn.execute(sa.text("insert into startup_interactions (startup_id, user_id, event, ts) "
                             "values (:s, :u, 'view', '2030-01-01 00:00:00')"), {"s": row[0], "u": row[1]})
    engine.dispose()
    fresh = extract_only(db_url=url).output
    assert fresh.uri != first.uri  # new data: a new cache key, extract ran again
    assert fresh.metadata["data_watermark"].startswith("2030-01-01")
    assert Path(fresh.uri, "extract_stats.json").is_file()
