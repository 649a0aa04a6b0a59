"""S3 round trips against a real S3-protocol server on loopback (moto server, over HTTP)."""

import pyarrow as pa
import pytest

from startup_recs.core import storage
from startup_recs.core.errors import StorageError


def test_bytes_json_table_round_trip(s3_bucket: str) -> None:
    storage.write_bytes(storage.join(s3_bucket, "a/b.bin"), b"\x00\x01")
    assert storage.read_bytes(storage.join(s3_bucket, "a/b.bin")) == b"\x00\x01"
    storage.write_json(storage.join(s3_bucket, "x.json"), {"k": [1, 2]})
    assert storage.read_json(storage.join(s3_bucket, "x.json")) == {"k": [1, 2]}
    t = pa.table({"id": ["a", "b", "c"], "w": [1.0, 2.0, 3.0]})
    storage.write_table(t, storage.join(s3_bucket, "snap/events/part-0.parquet"))
    storage.write_table(t, storage.join(s3_bucket, "snap/events/part-1.parquet"))
    # pyarrow's S3FileSystem reaches moto only because storage passes endpoint_override itself
    assert storage.read_table(storage.join(s3_bucket, "snap/events")).num_rows == 6
    assert storage.listdir(storage.join(s3_bucket, "snap")) == ["events"]
    assert storage.walk_files(storage.join(s3_bucket, "snap")) == ["events/part-0.parquet", "events/part-1.parquet"]
    assert storage.exists(storage.join(s3_bucket, "snap")) and not storage.exists(storage.join(s3_bucket, "nope"))


def test_failed_write_midway_leaves_no_object(s3_bucket: str) -> None:
    uri = storage.join(s3_bucket, "model.npy")
    storage.write_bytes(uri, b"good")
    with pytest.raises(RuntimeError), storage.atomic_local_path(uri) as tmp:
        tmp.write_bytes(b"half-writ")
        raise RuntimeError("died before the upload")
    assert storage.read_bytes(uri) == b"good"
    new = storage.join(s3_bucket, "new.npy")
    with pytest.raises(RuntimeError), storage.atomic_local_path(new) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("died")
    assert not storage.exists(new)


def test_upload_download_dir(s3_bucket: str, tmp_path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_text("x")
    (src / "g.txt").write_text("y")
    assert storage.upload_dir(src, storage.join(s3_bucket, "up")) == ["d/f.txt", "g.txt"]
    storage.download(storage.join(s3_bucket, "up"), tmp_path / "back")
    assert (tmp_path / "back" / "d" / "f.txt").read_text() == "x"
    storage.remove(storage.join(s3_bucket, "up"))
    assert storage.walk_files(storage.join(s3_bucket, "up")) == []


def test_missing_object_and_bad_uri(s3_bucket: str) -> None:
    with pytest.raises(StorageError, match="nope.json"):
        storage.read_bytes(storage.join(s3_bucket, "nope.json"))
    with pytest.raises(StorageError, match="bad S3 URI"):
        storage.read_bytes("s3:///key")
