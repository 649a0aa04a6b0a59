"""Fresh exclusions: a candidate contacted after the bundle's watermark is never answered again.

A real recommender on the tiny marketplace, fitted on all of it; its app database (a copy
of the tiny SQLite file, and a real PostgreSQL schema) gets contacts *after* that watermark, and
:class:`~startup_recs.serving.fresh.FreshExclusions` must remove exactly those candidates from
every answer path (materialised-free scoring, the hybrid pool, filters), leave a view alone, follow
new events on refresh, and survive an unreachable database without raising.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pyarrow as pa
import pytest

from startup_recs.data import appdb, schema
from startup_recs.serving.fresh import FreshExclusions

UC = "startup_developer"


@pytest.fixture(scope="module")
def rec(tiny_snapshot, tmp_path_factory):
    from startup_recs.data.snapshot import load_snapshot
    from startup_recs.serving.data import ServingData
    from startup_recs.serving.recommender import Recommender
    from startup_recs.serving.retrievers import load_retrievers

    snap = load_snapshot(tiny_snapshot)
    # fitted on every event of the database, as a refit bundle is: what comes later is fresh
    data = ServingData.from_snapshot(snap, UC, until=pd.to_datetime(snap.events(UC)["ts"], utc=True).max()
                                     + pd.Timedelta(seconds=1))
    folder = tmp_path_factory.mktemp("fresh_models")
    return Recommender(data, load_retrievers(str(folder), data))


def _events(rows: list[tuple[str, str, str, pd.Timestamp]]) -> dict[str, pa.Table]:
    t = pa.table({"startup_id": [r[0] for r in rows], "user_id": [r[1] for r in rows],
                  "event": [r[2] for r in rows], "ts": pa.array([r[3] for r in rows], schema.TS),
                  "session_id": pa.nulls(len(rows), pa.string())})
    return {"startup_interactions": schema.validate(t, "startup_interactions")}


def _ids(answer: dict) -> list[str]:
    return [c["id"] for c in answer["candidates"]]


def _check(rec, url: str) -> None:
    busy = sorted(rec.data.entity_counts, key=rec.data.entity_counts.get, reverse=True)[:3]
    e, other, third = busy
    before = _ids(rec.recommend(e, 10))
    other_before = _ids(rec.recommend(other, 10))
    after_mark = rec.data.until + pd.Timedelta(hours=1)
    appdb.insert_rows(url, _events([(e, before[0], "contact", after_mark), (e, before[1], "view", after_mark),
                                    (other, other_before[2], "apply_received", after_mark),
                                    (third, before[0], "contact", rec.data.until - pd.Timedelta(days=400))]))
    fresh = FreshExclusions(url, interval_s=0)
    fresh.attach(rec)
    try:
        now = _ids(rec.recommend(e, 10))
        assert before[0] not in now and before[1] in now  # a contact excludes, a view does not
        assert now == [c for c in before if c != before[0]] + now[9:]  # the rest keeps its order
        assert other_before[2] not in _ids(rec.recommend(other, 10))
        assert rec.data.fresh_of(e).tolist() == [rec.data.candidate_index[before[0]]]
        assert len(rec.data.fresh_of(third)) == 0  # before the watermark: the bundle's business
        batch = rec.recommend_batch([e, other], 10)
        assert before[0] not in _ids(batch[0]) and other_before[2] not in _ids(batch[1])
        # a new contact is read on the next refresh, incrementally
        appdb.insert_rows(url, _events([(e, now[0], "contact", after_mark + pd.Timedelta(minutes=5))]))
        assert fresh.refresh() >= 1
        assert now[0] not in _ids(rec.recommend(e, 10))
        assert fresh.counts() == {UC: 3}
    finally:
        rec.data.attach_fresh(None)


def test_sqlite_contacts_after_the_watermark_are_excluded(rec, tiny_db, tmp_path) -> None:
    db = tmp_path / "app.db"
    shutil.copy(tiny_db, db)
    _check(rec, f"sqlite:///{db}")


def test_postgresql_contacts_after_the_watermark_are_excluded(rec, pg_url, tiny_tables) -> None:
    appdb.write_db({k: v.slice(0, 0) for k, v in tiny_tables.items() if k != "oracle"}, pg_url)
    _check(rec, pg_url)


def test_an_unreachable_database_never_raises_and_keeps_answers(rec, tmp_path, caplog) -> None:
    fresh = FreshExclusions(f"sqlite:///{tmp_path / 'missing.db'}", interval_s=0)
    e = max(rec.data.entity_counts, key=rec.data.entity_counts.get)
    before = _ids(rec.recommend(e, 10))
    try:
        with caplog.at_level("WARNING"):
            fresh.attach(rec)
            assert fresh.refresh() == 0
        assert sum("cannot read" in r.getMessage() for r in caplog.records) == 1  # one line per outage
        assert _ids(rec.recommend(e, 10)) == before
    finally:
        rec.data.attach_fresh(None)


def test_a_bundle_fitted_on_every_event_uses_its_manifest_watermark(tiny_snapshot, tiny_db, tmp_path) -> None:
    """A published refit bundle's serving data has no ``until`` (every event of its snapshot); the
    manifest's ``data_watermark`` is where its exclusions end and the fresh ones begin."""
    import json

    from startup_recs.data.snapshot import load_snapshot
    from startup_recs.serving.data import ServingData
    from startup_recs.serving.fresh import watermark_of
    from startup_recs.serving.recommender import Recommender
    from startup_recs.serving.retrievers import load_retrievers

    snap = load_snapshot(tiny_snapshot)
    data = ServingData.from_snapshot(snap, UC, until=None)
    (tmp_path / "m").mkdir()
    rec_all = Recommender(data, load_retrievers(str(tmp_path / "m"), data))
    mark = pd.to_datetime(snap.events(UC)["ts"], utc=True).max()
    bundle_dir = tmp_path / "v1"
    bundle_dir.mkdir()
    (bundle_dir / "manifest.json").write_text(json.dumps({"use_case": UC, "version": 1, "files": {},
                                                         "data_watermark": mark.isoformat()}))
    assert watermark_of(bundle_dir) == mark and watermark_of(tmp_path / "none") is None
    db = tmp_path / "app.db"
    shutil.copy(tiny_db, db)
    e = max(data.entity_counts, key=data.entity_counts.get)
    top = _ids(rec_all.recommend(e, 10))[0]
    appdb.insert_rows(f"sqlite:///{db}", _events([(e, top, "contact", mark + pd.Timedelta(minutes=1))]))
    fresh = FreshExclusions(f"sqlite:///{db}", interval_s=0)
    fresh.attach(rec_all, watermark_of(bundle_dir))
    assert fresh.counts() == {UC: 1} and top not in _ids(rec_all.recommend(e, 10))


def test_lookups_while_the_poller_adds_rows_never_fail() -> None:
    """The poller's thread adds rows while requests read them: each entity's set is replaced
    whole, so a reader never iterates a dict that changes under it."""
    import threading

    fresh = FreshExclusions("sqlite:///unused.db", interval_s=0)
    fresh._from[UC] = 0
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            fresh._add(UC, [("s1", f"u{i}", pd.Timestamp("2026-07-01", tz="UTC"))])
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        of = fresh.lookup(UC)
        sizes = [len(of("s1")) for _ in range(20_000)]
    finally:
        stop.set()
        t.join()
    assert sizes == sorted(sizes) and sizes[-1] > 0  # only ever grows, never raises
