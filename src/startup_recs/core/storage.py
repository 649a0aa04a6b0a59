"""URIs for every input and output: a local path, ``file://...`` or ``s3://bucket/prefix``.

S3-compatible endpoints (MinIO, moto, Ceph...) come from ``AWS_ENDPOINT_URL``. pyarrow's
S3FileSystem ignores that variable, so :func:`filesystem` passes ``endpoint_override`` itself.

Writes are atomic. Locally: write to a hidden temporary name in the same directory, then
``os.replace``. On S3: one PUT of a finished object (a failed upload leaves nothing behind).
A reader therefore never sees a half-written artifact.

Every S3 failure, whatever botocore raises (connection refused, timeouts, throttling, access
denied), leaves this module as a :class:`StorageError`: callers that must survive an outage (the
predictor's reload poller) catch one type. Downloaded keys are joined to the destination only
through :func:`contained`, so a key holding ``../`` cannot write outside it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from startup_recs.core.errors import StorageError


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def local(uri: str | os.PathLike) -> Path:
    """The local path of a plain path or ``file://`` URI (raises for ``s3://``)."""
    uri = str(uri)
    if is_s3(uri):
        raise StorageError(f"{uri} is not a local path")
    return Path(urlparse(uri).path if uri.startswith("file://") else uri)


def join(uri: str | os.PathLike, *parts: str) -> str:
    """Join path parts onto a URI with ``/`` (never drops the scheme)."""
    base = str(uri).rstrip("/")
    return "/".join([base, *(p.strip("/") for p in parts if p)])


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise StorageError(f"bad S3 URI {uri!r}: expected s3://bucket/key")
    return parsed.netloc, parsed.path.lstrip("/")


def s3_client() -> Any:
    """A boto3 S3 client honouring ``AWS_ENDPOINT_URL`` (and the usual AWS_* credentials)."""
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it; S3 gets ``endpoint_override`` explicitly."""
    uri = str(uri)
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict[str, Any] = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
        if endpoint:
            parsed = urlparse(endpoint)
            kwargs["endpoint_override"] = parsed.netloc or endpoint
            kwargs["scheme"] = parsed.scheme or "http"
        return pafs.S3FileSystem(**kwargs), f"{bucket}/{key}".rstrip("/")
    return pafs.LocalFileSystem(), str(local(uri))


def _s3_error(uri: str, exc: Exception) -> StorageError:
    return StorageError(f"{uri}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def contained(root: str | os.PathLike, rel: str) -> Path:
    """``root / rel``, refused unless it stays inside ``root``.

    Why: object keys and manifest entries come from storage a writer controls; a key such as
    ``v3/../../etc/x`` or an absolute one would otherwise write (or be read) outside the bundle
    folder. Raises :class:`StorageError` for an empty, absolute or escaping ``rel``.
    """
    base = Path(root).resolve()
    if not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel:
        raise StorageError(f"refused path {rel!r}: not a plain relative path")
    out = (base / rel).resolve()
    if out == base or not out.is_relative_to(base):
        raise StorageError(f"refused path {rel!r}: it leaves {base}")
    return out


def _is_precondition_failed(exc: Exception) -> bool:
    resp = getattr(exc, "response", None) or {}
    code = str(resp.get("Error", {}).get("Code", ""))
    status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict") or status in (409, 412)


# --- reading -------------------------------------------------------------------------------------
def exists(uri: str) -> bool:
    """True for an existing file, or a directory / S3 prefix with at least one object."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        client = s3_client()
        try:
            client.head_object(Bucket=bucket, Key=key)
            return True
        except Exception as exc:  # noqa: BLE001 - not a plain object; maybe a prefix
            if not _is_not_found(exc):
                raise _s3_error(uri, exc) from None
        try:
            resp = client.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
        except Exception as exc:  # noqa: BLE001
            raise _s3_error(uri, exc) from None
        return resp.get("KeyCount", 0) > 0
    return local(uri).exists()


def _is_not_found(exc: Exception) -> bool:
    resp = getattr(exc, "response", None) or {}
    code = str(resp.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001
            raise _s3_error(uri, exc) from None
    try:
        return local(uri).read_bytes()
    except OSError as exc:
        raise StorageError(f"{uri}: {exc.strerror or exc}") from None


def read_json(uri: str) -> Any:
    try:
        return json.loads(read_bytes(uri))
    except json.JSONDecodeError as exc:
        raise StorageError(f"{uri}: not valid JSON ({exc})") from None


def listdir(uri: str) -> list[str]:
    """Names (not paths) directly under a directory or S3 prefix, sorted."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        names: set[str] = set()
        try:
            for page in s3_client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/"
            ):
                names.update(o["Key"][len(prefix):] for o in page.get("Contents", []))
                names.update(p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", []))
        except Exception as exc:  # noqa: BLE001
            raise _s3_error(uri, exc) from None
        return sorted(n for n in names if n)
    path = local(uri)
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def walk_files(uri: str) -> list[str]:
    """Relative paths of every file below a directory or S3 prefix, sorted."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        prefix = key.rstrip("/") + "/"
        out = []
        try:
            for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                out.extend(o["Key"][len(prefix):] for o in page.get("Contents", []))
        except Exception as exc:  # noqa: BLE001
            raise _s3_error(uri, exc) from None
        return sorted(out)
    root = local(uri)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read a Parquet file or Parquet dataset directory, or a ``.csv`` file, as one table."""
    uri = str(uri)
    try:
        if uri.endswith(".csv"):
            return pacsv.read_csv(io.BytesIO(read_bytes(uri))) if is_s3(uri) else pacsv.read_csv(local(uri))
        fs, path = filesystem(uri)
        return pq.read_table(path, filesystem=fs, columns=columns)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StorageError(f"cannot read {uri}: {str(exc).splitlines()[0]}") from None


# --- writing (atomic) ----------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_local_path(uri: str) -> Iterator[Path]:
    """Yield a temporary local file path; on success it becomes ``uri`` in one step.

    Local: the temp file sits beside the target and is ``os.replace``-d over it. S3: the temp
    file is uploaded with one PUT after the block succeeds. On error the temp file is removed and
    the target is untouched.
    """
    uri = str(uri)
    if is_s3(uri):
        fd, tmp = tempfile.mkstemp(prefix=".recs-upload-")
        os.close(fd)
        try:
            yield Path(tmp)
            bucket, key = _split_s3(uri)
            try:
                s3_client().upload_file(tmp, bucket, key)
            except Exception as exc:  # noqa: BLE001
                raise _s3_error(uri, exc) from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        return
    target = local(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_local_path(uri) as tmp:
        tmp.write_bytes(data)


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_table(table: pa.Table, uri: str) -> None:
    """Write a table as Parquet (default) or CSV (``.csv``, for the legacy scripts), atomically."""
    with atomic_local_path(uri) as tmp:
        if str(uri).endswith(".csv"):
            pacsv.write_csv(_csv_safe(table), tmp)
        else:
            pq.write_table(table, tmp, compression="zstd")


def _csv_safe(table: pa.Table) -> pa.Table:
    """CSV has no lists: join list columns with ``|``."""
    import pyarrow.compute as pc

    cols = []
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            col = pc.binary_join(col, "|")
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def upload_file(path: str | os.PathLike, uri: str) -> None:
    """Copy one local file to ``uri`` atomically."""
    with atomic_local_path(uri) as tmp:
        shutil.copyfile(path, tmp)


def download(uri: str, dest: str | os.PathLike) -> Path:
    """Copy a file or a whole directory/prefix at ``uri`` to local ``dest``; returns ``dest``."""
    dest = Path(dest)
    if not is_s3(uri):
        src = local(uri)
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        return dest
    bucket, key = _split_s3(uri)
    client = s3_client()
    files = walk_files(uri)
    if not files:  # a single object
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            client.download_file(bucket, key, str(dest))
        except Exception as exc:  # noqa: BLE001
            raise _s3_error(uri, exc) from None
        return dest
    return download_files(uri, files, dest)


def download_files(uri: str, rels: list[str], dest: str | os.PathLike) -> Path:
    """Copy exactly the files ``rels`` (relative to the directory/prefix ``uri``) to ``dest``.

    Each target passes :func:`contained` first: a name with ``../`` is refused before anything
    is written. Only the names asked for are fetched, so whatever else lies under the prefix
    never reaches the disk.
    """
    dest = Path(dest)
    targets = [(rel, contained(dest, rel)) for rel in rels]
    if not is_s3(uri):
        src_root = local(uri)
        for rel, out in targets:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(contained(src_root, rel), out)
        return dest
    bucket, key = _split_s3(uri)
    client = s3_client()
    for rel, out in targets:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            client.download_file(bucket, f"{key.rstrip('/')}/{rel}", str(out))
        except Exception as exc:  # noqa: BLE001
            raise _s3_error(join(uri, rel), exc) from None
    return dest


def upload_dir(path: str | os.PathLike, uri: str) -> list[str]:
    """Copy every file under local ``path`` to ``uri`` (each file atomically); returns rel paths."""
    root = Path(path)
    rels = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    for rel in rels:
        upload_file(root / rel, join(uri, rel))
    return rels


def remove(uri: str) -> None:
    """Delete a file or a whole directory/prefix (missing is fine)."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        client = s3_client()
        keys = [f"{key.rstrip('/')}/{rel}" for rel in walk_files(uri)] or [key]
        try:
            for i in range(0, len(keys), 1000):
                client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
        except Exception as exc:  # noqa: BLE001
            raise _s3_error(uri, exc) from None
        return
    path = local(uri)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
