"""Claiming a version number and moving ``latest``, safe with concurrent publishers.

Why a module of its own: :func:`startup_recs.core.bundle.publish` and ``recs bundle rollback``
both move the pointer, and both must agree on the rules:

- a number ``N`` belongs to whoever created ``v<N>/.claim`` first (create-if-absent, see
  :mod:`startup_recs.core.storage_cas`); a publisher that loses the race takes ``N+1``, so two
  publishers never upload into the same folder. The claim is not in the manifest, so no reader
  ever reads it;
- ``latest`` is replaced by compare-and-swap: read it with its tag, decide, write only if the
  tag is unchanged, else read again. A publish never moves it to a lower version than the one it
  names (a slow publisher finishing after a faster one leaves the newer bundle served); only an
  explicit rollback may (``allow_lower``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from startup_recs.core import artifacts, storage, storage_cas
from startup_recs.core.errors import BundleError, StorageError

log = logging.getLogger(__name__)

CLAIM = ".claim"
_MAX_TRIES = 100


def claim_version(models_uri: str, use_case: str, start: int) -> int:
    """The first free version number ``>= start``, claimed for this publisher."""
    body = json.dumps({"claimed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}).encode()
    for n in range(start, start + _MAX_TRIES):
        if storage_cas.create_exclusive(storage.join(models_uri, use_case, f"v{n}", CLAIM), body):
            return n
        log.info("%s: v%d was claimed by another publisher; trying v%d", use_case, n, n + 1)
    raise BundleError(f"{use_case}: no free version number in v{start}..v{start + _MAX_TRIES - 1}")


def pointer_bytes(version: int, updated_at: str) -> bytes:
    """The ``latest`` object: ``{"version", "path", "updated_at"}`` (docs/contracts.md)."""
    obj = {"path": f"v{version}", "updated_at": updated_at, "version": version}
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def pointed_version(data: bytes | None) -> int | None:
    """The version a pointer's bytes name, or None (no pointer, or one too broken to compare)."""
    if data is None:
        return None
    try:
        v = json.loads(data).get("version")
    except (ValueError, AttributeError):
        return None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def move_latest(models_uri: str, use_case: str, version: int, updated_at: str | None = None, *,
                allow_lower: bool = False) -> bool:
    """Point ``latest`` at ``v<version>``. False (and nothing written) when it already names a
    higher version and ``allow_lower`` is off."""
    uri = storage.join(models_uri, use_case, artifacts.LATEST)
    stamp = updated_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for _ in range(_MAX_TRIES):
        data, tag = storage_cas.read_tagged(uri)
        cur = pointed_version(data)
        if cur is not None and cur > version and not allow_lower:
            log.warning("%s: latest already names v%d; not moving it back to v%d", use_case, cur, version)
            return False
        if storage_cas.replace_if(uri, pointer_bytes(version, stamp), tag):
            return True
        log.info("%s: latest changed while moving it to v%d; reading it again", use_case, version)
    raise StorageError(f"{uri}: could not move it to v{version} ({_MAX_TRIES} conflicting writers)")
