"""Operations over a use case's published versions: which bundles may serve, and rollback.

Why here and not in the serving code: ``recs bundle rollback`` (an operator's command) and the
predictor's reload must agree on what "a version that verifies" means, and the predictor image
carries no pipeline code. Both go through :func:`startup_recs.core.bundle.fetch_verified`.
"""

from __future__ import annotations

import argparse
import logging
import re
import tempfile
from typing import Any

from startup_recs.core import bundle, storage, storage_cas
from startup_recs.core.bundle_pointer import move_latest
from startup_recs.core.errors import BundleError, ConfigError
from startup_recs.core.usecases import get_use_case

log = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"^v(\d+)$")


def serving_candidates(source: str, limit: int = 5) -> tuple[str | None, list[str]]:
    """``(named, candidates)`` for a predictor's source URI.

    ``named`` is the bundle ``latest`` names (None when the pointer is missing or unreadable);
    ``candidates`` is what to try, best first: ``named``, then up to ``limit`` older versions,
    newest first. Versions above ``named`` are never candidates: a rollback moved ``latest``
    below them on purpose. A source that is a bundle itself is pinned: ``[source]``, no fallback.
    Raises :class:`~startup_recs.core.errors.StorageError` when storage cannot be reached.
    """
    src = str(source).rstrip("/")
    if storage.exists(storage.join(src, bundle.MANIFEST)):
        return src, [src]
    if src.endswith("/" + bundle.LATEST):
        base, pointer = src.rsplit("/", 1)[0], src
    elif storage.exists(storage.join(src, bundle.LATEST)):
        base, pointer = src, storage.join(src, bundle.LATEST)
    else:
        raise BundleError(f"{src}: no bundle here (no {bundle.MANIFEST} and no '{bundle.LATEST}' pointer)")
    named: str | None = None
    named_v: int | None = None
    data, _ = storage_cas.read_tagged(pointer)
    if data is not None:
        try:
            path = bundle.pointer_path(data, pointer)
            named, named_v = storage.join(base, path), int(path[1:])
        except BundleError as exc:
            log.warning("%s", exc)
    nums = sorted((int(m.group(1)) for n in storage.listdir(base) if (m := _VERSION_DIR.match(n))), reverse=True)
    older = [storage.join(base, f"v{n}") for n in nums if named_v is None or n < named_v][:limit]
    return named, ([named] if named else []) + older


def rollback(models_uri: str, use_case: str, to: int) -> dict[str, Any]:
    """Point ``latest`` of ``use_case`` back at ``v<to>`` after verifying that bundle (every
    listed file downloaded and checked); a corrupt or missing target raises
    :class:`BundleError` and leaves ``latest`` untouched. Returns the target's manifest."""
    target = storage.join(models_uri, use_case, f"v{to}")
    if not storage.exists(storage.join(target, bundle.MANIFEST)):
        raise BundleError(f"{target}: no such bundle (no {bundle.MANIFEST})")
    with tempfile.TemporaryDirectory(prefix="recs-rollback-") as tmp:
        _, manifest = bundle.fetch_verified(target, tmp)
    if manifest.get("use_case") != use_case or manifest.get("version") != to:
        raise BundleError(f"{target} is {manifest.get('use_case')!r} v{manifest.get('version')}, "
                          f"not {use_case} v{to}")
    move_latest(models_uri, use_case, to, allow_lower=True)
    log.info("%s: latest -> v%d (rollback)", use_case, to)
    return manifest


def cli_rollback(args: argparse.Namespace) -> int:
    """``recs bundle rollback --models-uri U --use-case X --to vN``."""
    m = re.fullmatch(r"v?(\d+)", str(args.to).strip())
    if not m or int(m.group(1)) < 1:
        raise ConfigError(f"--to: expected vN (N >= 1), got {args.to!r}")
    use_case = get_use_case(args.use_case).name
    manifest = rollback(args.models_uri, use_case, int(m.group(1)))
    print(f"{use_case}: latest -> v{manifest['version']} (verified {len(manifest['files'])} files)")
    return 0
