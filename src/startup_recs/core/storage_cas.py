"""Conditional writes: create-if-absent and compare-and-swap, on S3 and on a local folder.

Why: two publishers running at once (a retried pipeline run beside a manual one) both read "the
newest version is v4" and both write v5, or the slower one moves ``latest`` back to an older
bundle. Plain PUTs cannot prevent that; conditional ones can:

- S3 ``PutObject`` with ``If-None-Match: *`` creates an object only when the key is free, and
  ``If-Match: <etag>`` replaces it only when nobody changed it since it was read (AWS S3, MinIO
  and moto's server all answer 412 otherwise);
- locally, ``os.link`` of a finished temp file creates the target only if it is absent, and a
  swap happens under a lock file created with ``O_EXCL``; a lock older than ``LOCK_LEASE_S``
  belongs to a crashed writer and is broken.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

from startup_recs.core import storage
from startup_recs.core.errors import StorageError

LOCK_LEASE_S = 30.0


def create_exclusive(uri: str, data: bytes) -> bool:
    """Write ``data`` at ``uri`` only if nothing is there yet. False when it already exists."""
    if storage.is_s3(uri):
        bucket, key = storage._split_s3(uri)
        try:
            storage.s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except Exception as exc:  # noqa: BLE001
            if storage._is_precondition_failed(exc):
                return False
            raise storage._s3_error(uri, exc) from None
    target = storage.local(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.new-{uuid.uuid4().hex[:8]}"
    tmp.write_bytes(data)
    try:
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def read_tagged(uri: str) -> tuple[bytes | None, str | None]:
    """The object's bytes and a tag that changes whenever it is rewritten (the S3 ETag, a local
    sha256); ``(None, None)`` when it does not exist."""
    if storage.is_s3(uri):
        bucket, key = storage._split_s3(uri)
        try:
            resp = storage.s3_client().get_object(Bucket=bucket, Key=key)
            return resp["Body"].read(), str(resp["ETag"])
        except Exception as exc:  # noqa: BLE001
            if storage._is_not_found(exc):
                return None, None
            raise storage._s3_error(uri, exc) from None
    path = storage.local(uri)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    return data, hashlib.sha256(data).hexdigest()


def replace_if(uri: str, data: bytes, tag: str | None) -> bool:
    """Write ``data`` at ``uri`` only if it still carries ``tag`` (None: only if it is absent).
    False when another writer got there first: read again and decide again."""
    if tag is None:
        return create_exclusive(uri, data)
    if storage.is_s3(uri):
        bucket, key = storage._split_s3(uri)
        try:
            storage.s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfMatch=tag)
            return True
        except Exception as exc:  # noqa: BLE001
            if storage._is_precondition_failed(exc) or storage._is_not_found(exc):
                return False
            raise storage._s3_error(uri, exc) from None
    target = storage.local(uri)
    with _local_lock(target):
        _, now = read_tagged(uri)
        if now != tag:
            return False
        storage.write_bytes(uri, data)
        return True


class _local_lock:  # noqa: N801 - used as a context manager
    """``<target>.lock`` created with O_EXCL; waits up to ``LOCK_LEASE_S`` and breaks a lock older
    than that (its writer died)."""

    def __init__(self, target: Path) -> None:
        self.path = target.parent / f".{target.name}.lock"

    def __enter__(self) -> None:
        deadline = time.monotonic() + LOCK_LEASE_S
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.close(fd)
                return
            except FileExistsError:
                try:
                    if time.time() - self.path.stat().st_mtime > LOCK_LEASE_S:
                        self.path.unlink(missing_ok=True)
                        continue
                except FileNotFoundError:
                    continue
                if time.monotonic() > deadline:
                    raise StorageError(f"{self.path}: lock held for more than {LOCK_LEASE_S:.0f} s") from None
                time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
