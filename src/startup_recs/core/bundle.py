"""Versioned model bundles: publish atomically, resolve the ``latest`` pointer, verify checksums.

Layout (docs/contracts.md)::

    <models_uri>/<use_case>/v<N>/...            model files, serving data, metrics.json, report.md
    <models_uri>/<use_case>/v<N>/manifest.json  written last: version, checksums, metrics, watermark
    <models_uri>/<use_case>/latest              {"version": N, "path": "vN", "updated_at": ...}

Publishing uploads every file, then the manifest, then replaces ``latest`` in one atomic write
(a single PUT on S3, a rename locally). A run that fails or is gated out before that last step
leaves the previous bundle and pointer untouched; a half-uploaded ``v<N>`` has no manifest, so
no reader takes it for whole, and the next publish skips past its number.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from startup_recs import __version__
from startup_recs.core import artifacts, storage
from startup_recs.core.errors import BundleError, StorageError

log = logging.getLogger(__name__)

MANIFEST = artifacts.MANIFEST
LATEST = artifacts.LATEST
HEADLINE_MODEL = "routed_ranked"
HEADLINE_METRIC = "ndcg@10"
_VERSION_DIR = re.compile(r"^v(\d+)$")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def headline(metrics: dict[str, Any], model: str = HEADLINE_MODEL, metric: str = HEADLINE_METRIC) -> float | None:
    """``metrics["models"][model]["all"][metric]`` from an evaluation's metrics.json, or None."""
    try:
        return float(metrics["models"][model]["all"][metric])
    except (KeyError, TypeError, ValueError):
        return None


# --- the evaluation gate -----------------------------------------------------------------------
@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    new: float | None
    popularity: float | None
    current: float | None
    current_version: int | None


def check_gate(metrics: dict[str, Any], models_uri: str, use_case: str, margin: float = 0.02) -> GateResult:
    """Publish only if the headline NDCG@10 beats popularity and is not more than ``margin``
    (relative, e.g. 0.02 = 2 %) below the currently published bundle's."""
    new, pop = headline(metrics), headline(metrics, "popularity")
    cur_manifest = current_manifest(models_uri, use_case)
    cur = headline(cur_manifest.get("metrics", {})) if cur_manifest else None
    cur_v = cur_manifest.get("version") if cur_manifest else None
    if new is None:
        return GateResult(False, f"metrics lack models.{HEADLINE_MODEL}.all.{HEADLINE_METRIC}", new, pop, cur, cur_v)
    if pop is not None and not new > pop:
        return GateResult(False, f"{HEADLINE_MODEL} {HEADLINE_METRIC} {new:.4f} does not beat popularity {pop:.4f}",
                          new, pop, cur, cur_v)
    if cur is not None and new < cur * (1.0 - margin):
        return GateResult(False, f"{HEADLINE_MODEL} {HEADLINE_METRIC} {new:.4f} is more than {margin:.0%} below "
                          f"the published v{cur_v} ({cur:.4f})", new, pop, cur, cur_v)
    return GateResult(True, f"{HEADLINE_MODEL} {HEADLINE_METRIC} {new:.4f} (popularity {pop}, published {cur})",
                      new, pop, cur, cur_v)


# --- reading -----------------------------------------------------------------------------------
def versions(models_uri: str, use_case: str) -> list[int]:
    """Every ``v<N>`` folder number under ``<models_uri>/<use_case>``, complete or not, sorted."""
    names = storage.listdir(storage.join(models_uri, use_case))
    return sorted(int(m.group(1)) for n in names if (m := _VERSION_DIR.match(n)))


def read_pointer(models_uri: str, use_case: str) -> dict[str, Any] | None:
    uri = storage.join(models_uri, use_case, LATEST)
    if not storage.exists(uri):
        return None
    return storage.read_json(uri)


def current_manifest(models_uri: str, use_case: str) -> dict[str, Any] | None:
    """The manifest the ``latest`` pointer names, or None when nothing is published yet."""
    ptr = read_pointer(models_uri, use_case)
    if not ptr:
        return None
    return storage.read_json(storage.join(models_uri, use_case, ptr["path"], MANIFEST))


def resolve(uri: str) -> str:
    """The bundle URI that ``uri`` names: a bundle itself (has manifest.json), a ``latest``
    pointer object, or a use-case folder holding one."""
    uri = str(uri).rstrip("/")
    if storage.exists(storage.join(uri, MANIFEST)):
        return uri
    pointer = None
    if uri.endswith("/" + LATEST) or uri == LATEST:
        pointer, base = uri, uri.rsplit("/", 1)[0] if "/" in uri else "."
    elif storage.exists(storage.join(uri, LATEST)):
        pointer, base = storage.join(uri, LATEST), uri
    if pointer is None:
        raise BundleError(f"{uri}: no bundle here (no {MANIFEST} and no '{LATEST}' pointer)")
    try:
        ptr = storage.read_json(pointer)
        target = storage.join(base, ptr["path"])
    except (StorageError, KeyError, TypeError) as exc:
        raise BundleError(f"{pointer}: unreadable '{LATEST}' pointer ({exc})") from None
    if not storage.exists(storage.join(target, MANIFEST)):
        raise BundleError(f"{pointer} points to {target}, which has no {MANIFEST}")
    return target


def trained_on(uri: str) -> dict[str, str]:
    """The data URIs the bundle ``uri`` (a bundle, a use-case folder with ``latest``, the pointer)
    was trained on: its manifest's ``"data"`` (``snapshot``, ``two_tower_dataset``,
    ``two_tower_tuned``; the publish step records them), ``{}`` when it records none."""
    manifest = storage.read_json(storage.join(resolve(uri), MANIFEST))
    data = manifest.get("data") or {}
    return {str(k): str(v) for k, v in data.items() if v} if isinstance(data, dict) else {}


def verify_dir(path: str | Path) -> dict[str, Any]:
    """Check every file the manifest lists (size and sha256); return the manifest."""
    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root}: missing {MANIFEST}")
    try:
        import json

        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as exc:
        raise BundleError(f"{mpath}: corrupt manifest ({exc})") from None
    for rel, meta in sorted(files.items()):
        f = root / rel
        if not f.is_file():
            raise BundleError(f"{root}: missing file {rel} listed in the manifest")
        if f.stat().st_size != meta["bytes"] or sha256_file(f) != meta["sha256"]:
            raise BundleError(f"{root}: checksum mismatch for {rel}")
    return manifest


def fetch_verified(uri: str, dest: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Resolve ``uri``, bring the bundle to a local folder (``dest`` or a temp dir; local bundles
    are verified in place) and verify it. Raises :class:`BundleError` when anything is off."""
    target = resolve(uri)
    if storage.is_s3(target):
        local = Path(dest) if dest else Path(tempfile.mkdtemp(prefix="recs-bundle-"))
        try:
            storage.download(target, local)
        except StorageError as exc:
            raise BundleError(f"cannot download {target}: {exc}") from None
    else:
        local = storage.local(target)
    return local, verify_dir(local)


# --- writing -----------------------------------------------------------------------------------
def build_manifest(staging_dir: Path, use_case: str, version: int, *, metrics: dict[str, Any],
                   watermark: str | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    files = {}
    for f in sorted(p for p in staging_dir.rglob("*") if p.is_file()):
        rel = str(f.relative_to(staging_dir))
        if rel == MANIFEST:
            continue
        files[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    return {
        "use_case": use_case,
        "version": version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data_watermark": watermark,
        "package_version": __version__,
        "metrics": metrics,
        **(extra or {}),
        "files": files,
    }


def publish(staging_dir: str | Path, models_uri: str, use_case: str, *, metrics: dict[str, Any],
            watermark: str | None, extra: dict[str, Any] | None = None,
            gate_margin: float | None = None) -> dict[str, Any]:
    """Publish ``staging_dir`` as the next ``v<N>`` and move ``latest`` to it.

    With ``gate_margin`` set, :func:`check_gate` runs first and a failing gate raises
    :class:`BundleError` before anything is written. Returns the manifest.
    """
    staging = Path(staging_dir)
    if not staging.is_dir() or not any(staging.iterdir()):
        raise BundleError(f"{staging}: nothing to publish")
    if gate_margin is not None:
        gate = check_gate(metrics, models_uri, use_case, gate_margin)
        if not gate.passed:
            raise BundleError(f"gate refused publishing {use_case}: {gate.reason}")
    version = max(versions(models_uri, use_case), default=0) + 1
    target = storage.join(models_uri, use_case, f"v{version}")
    manifest = build_manifest(staging, use_case, version, metrics=metrics, watermark=watermark, extra=extra)
    log.info("publishing %s v%d (%d files) to %s", use_case, version, len(manifest["files"]), target)
    for rel in manifest["files"]:
        storage.upload_file(staging / rel, storage.join(target, rel))
    storage.write_json(storage.join(target, MANIFEST), manifest)
    storage.write_json(storage.join(models_uri, use_case, LATEST), {
        "version": version, "path": f"v{version}", "updated_at": manifest["created_at"],
    })
    log.info("latest -> v%d", version)
    return manifest


def gate_as_dict(g: GateResult) -> dict[str, Any]:
    return asdict(g)
