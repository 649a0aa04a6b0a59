"""The snapshot's commit marker: ``extract_stats.json`` lists the parts readers read; a part it
does not list (an extract still running, or one that crashed before its commit) is invisible,
and extract parts without any marker are refused. Locally and on moto's S3 server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from startup_recs.core import storage
from startup_recs.core.errors import DataError
from startup_recs.data.snapshot import load_snapshot


def _copy(tiny_snapshot: str, dest: str, tmp_path: Path) -> None:
    if storage.is_s3(dest):
        storage.upload_dir(tiny_snapshot, dest)
    else:
        shutil.copytree(tiny_snapshot, dest)


@pytest.fixture(params=["local", "s3"])
def snap(request: pytest.FixtureRequest, tiny_snapshot: str, tmp_path: Path) -> str:
    dest = (storage.join(request.getfixturevalue("s3_bucket"), "snap") if request.param == "s3"
            else str(tmp_path / "snap"))
    _copy(tiny_snapshot, dest, tmp_path)
    return dest


def test_unlisted_parts_and_tables_are_invisible(snap: str, tiny_snapshot: str) -> None:
    stats = storage.read_json(storage.join(snap, "extract_stats.json"))
    table = "startup_interactions"
    listed = stats["parts"][table]
    before = len(load_snapshot(snap).table(table))
    assert before == stats["tables"][table]
    # a part of a run that has not committed yet: same rows again, not in the marker
    storage.upload_file(Path(tiny_snapshot) / table / listed[0], storage.join(snap, table, "part-00099.parquet"))
    storage.upload_file(Path(tiny_snapshot) / table / listed[0], storage.join(snap, "half_table", "part-00000.parquet"))
    snapshot = load_snapshot(snap)
    assert len(snapshot.table(table)) == before
    assert not snapshot.has("half_table")


def test_parts_without_a_marker_are_refused(tmp_path: Path, tiny_snapshot: str) -> None:
    dest = tmp_path / "first-run"
    shutil.copytree(tiny_snapshot, dest)
    (dest / "extract_stats.json").unlink()  # the first extract crashed before its commit
    with pytest.raises(DataError, match="not committed"):
        load_snapshot(str(dest))
