"""Local storage: URIs, atomic writes, table round trips."""

from pathlib import Path

import pyarrow as pa
import pytest

from startup_recs.core import storage
from startup_recs.core.errors import StorageError


def test_join_and_local(tmp_path: Path) -> None:
    assert storage.join("s3://b/p/", "x", "/y") == "s3://b/p/x/y"
    assert storage.local(f"file://{tmp_path}/a") == tmp_path / "a"
    with pytest.raises(StorageError):
        storage.local("s3://b/k")


def test_table_round_trip_parquet_and_csv(tmp_path: Path) -> None:
    t = pa.table({"id": ["a", "b"], "skills": [["x", "y"], []], "n": [1, 2]})
    storage.write_table(t, str(tmp_path / "t.parquet"))
    assert storage.read_table(str(tmp_path / "t.parquet")).equals(t)
    storage.write_table(t, str(tmp_path / "t.csv"))
    back = storage.read_table(str(tmp_path / "t.csv"))
    assert back.column("skills").to_pylist() == ["x|y", None] or back.column("skills").to_pylist()[0] == "x|y"
    assert back.column("n").to_pylist() == [1, 2]


def test_failed_write_leaves_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "a.json"
    storage.write_json(str(target), {"v": 1})
    with pytest.raises(RuntimeError), storage.atomic_local_path(str(target)) as tmp:
        tmp.write_text('{"v": 2, "half')
        raise RuntimeError("step died midway")
    assert storage.read_json(str(target)) == {"v": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]  # no temp left behind


def test_walk_download_remove(tmp_path: Path) -> None:
    src = tmp_path / "src"
    storage.write_bytes(str(src / "a" / "b.txt"), b"hi")
    storage.write_bytes(str(src / "c.txt"), b"yo")
    assert storage.walk_files(str(src)) == ["a/b.txt", "c.txt"]
    assert storage.listdir(str(src)) == ["a", "c.txt"]
    storage.download(str(src), tmp_path / "dst")
    assert (tmp_path / "dst" / "a" / "b.txt").read_bytes() == b"hi"
    storage.remove(str(src))
    assert not storage.exists(str(src))


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="missing.bin"):
        storage.read_bytes(str(tmp_path / "missing.bin"))
