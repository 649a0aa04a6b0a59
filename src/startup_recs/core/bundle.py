"""Versioned model bundles: publish atomically, resolve the ``latest`` pointer, verify checksums.

Layout (docs/contracts.md)::

    <models_uri>/<use_case>/v<N>/...            model files, serving data, metrics.json, report.md
    <models_uri>/<use_case>/v<N>/manifest.json  written last: version, checksums, metrics, watermark
    <models_uri>/<use_case>/latest              {"version": N, "path": "vN", "updated_at": ...}

Publishing uploads every file, then the manifest, then replaces ``latest`` in one atomic write
(a single PUT on S3, a rename locally). A run that fails or is gated out before that last step
leaves the previous bundle and pointer untouched; a half-uploaded ``v<N>`` has no manifest, so
no reader takes it for whole, and the next publish skips past its number.

Concurrent publishers (:mod:`startup_recs.core.bundle_pointer`): a version number is claimed
with a create-if-absent object (``v<N>/.claim``, S3 ``If-None-Match: *``) before anything is
uploaded into it, and ``latest`` is moved with compare-and-swap and never to a lower version.
A publish whose files equal the current bundle's (same checksums) writes nothing ("unchanged").

Readers trust the manifest only: it is validated (:func:`check_manifest`), and only the files it
lists are downloaded, linked into a load folder and verified; anything else in the folder is
never read, and no listed name may leave the folder.
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


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_manifest(obj: Any, where: str) -> dict[str, Any]:
    """``obj`` if it is a well-formed manifest, else :class:`BundleError`.

    Why: the manifest decides what gets downloaded and loaded; a malformed one (``files`` not a
    mapping, a size that is a string, a name with ``../``) must refuse the bundle with one clear
    reason, not surface later as a KeyError or TypeError in a reload loop.
    """
    if not isinstance(obj, dict):
        raise BundleError(f"{where}: corrupt manifest (not a JSON object)")
    files = obj.get("files")
    if not isinstance(files, dict):
        raise BundleError(f"{where}: corrupt manifest ('files' is not an object)")
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(f"{where}: corrupt manifest (version {version!r})")
    for rel, meta in files.items():
        parts = str(rel).split("/")
        if (not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel
                or any(p in ("", ".", "..") for p in parts) or rel == MANIFEST):
            raise BundleError(f"{where}: corrupt manifest (file name {rel!r})")
        if (not isinstance(meta, dict) or not isinstance(meta.get("bytes"), int) or meta["bytes"] < 0
                or not isinstance(meta.get("sha256"), str) or not _SHA256.match(meta["sha256"])):
            raise BundleError(f"{where}: corrupt manifest (entry of {rel})")
    return obj


def read_manifest(bundle_uri: str) -> dict[str, Any]:
    """The validated manifest of the bundle at ``bundle_uri``. :class:`StorageError` when storage
    cannot be reached (an outage: try later), :class:`BundleError` when it is not a manifest."""
    import json

    uri = storage.join(bundle_uri, MANIFEST)
    data = storage.read_bytes(uri)
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"{uri}: corrupt manifest ({exc})") from None
    return check_manifest(obj, uri)


def current_manifest(models_uri: str, use_case: str) -> dict[str, Any] | None:
    """The manifest the ``latest`` pointer names, or None when nothing is published yet."""
    ptr = read_pointer(models_uri, use_case)
    if not ptr:
        return None
    return storage.read_json(storage.join(models_uri, use_case, ptr["path"], MANIFEST))


def pointer_path(data: bytes, where: str) -> str:
    """The ``path`` (``v<N>``) a ``latest`` pointer's bytes name; :class:`BundleError` when the
    pointer is not JSON, has no such key, or names anything but a ``v<N>`` folder."""
    import json

    try:
        path = json.loads(data)["path"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{where}: unreadable '{LATEST}' pointer ({type(exc).__name__}: {exc})") from None
    if not isinstance(path, str) or not _VERSION_DIR.match(path):
        raise BundleError(f"{where}: '{LATEST}' names {path!r}, not a v<N> folder")
    return path


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
    target = storage.join(base, pointer_path(storage.read_bytes(pointer), pointer))
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

        manifest = check_manifest(json.loads(mpath.read_text()), str(mpath))
    except ValueError as exc:
        raise BundleError(f"{mpath}: corrupt manifest ({exc})") from None
    for rel, meta in sorted(manifest["files"].items()):
        try:
            f = storage.contained(root, rel)
        except StorageError as exc:
            raise BundleError(f"{root}: {exc}") from None
        if not f.is_file():
            raise BundleError(f"{root}: missing file {rel} listed in the manifest")
        if f.stat().st_size != meta["bytes"] or sha256_file(f) != meta["sha256"]:
            raise BundleError(f"{root}: checksum mismatch for {rel}")
    return manifest


def fetch_verified(uri: str, dest: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Resolve ``uri``, bring the files its manifest lists (and only those) to a local folder and
    verify them; return the folder and the manifest.

    ``s3://``: downloaded into ``dest`` (or a temp dir). Local: with ``dest``, the listed files
    are hard-linked (symlinked across devices) into it, so a loader reading ``dest`` sees
    nothing the manifest does not list; without it the bundle is verified in place (manifest
    readers only). Raises :class:`BundleError` for anything off in the bundle and lets
    :class:`StorageError` through when storage cannot be reached (an outage, not a bad bundle).
    """
    import json

    target = resolve(uri)
    if not storage.is_s3(target) and dest is None:
        local = storage.local(target)
        return local, verify_dir(local)
    manifest = read_manifest(target)
    local = Path(dest) if dest else Path(tempfile.mkdtemp(prefix="recs-bundle-"))
    local.mkdir(parents=True, exist_ok=True)
    rels = sorted(manifest["files"])
    try:
        if storage.is_s3(target):
            storage.download_files(target, rels, local)
        else:
            _link_files(storage.local(target), rels, local)
    except StorageError as exc:
        if "refused path" in str(exc):
            raise BundleError(f"{target}: {exc}") from None
        raise
    (local / MANIFEST).write_text(json.dumps(manifest))
    return local, verify_dir(local)


def _link_files(src: Path, rels: list[str], dest: Path) -> None:
    """Link each listed file of a local bundle into ``dest`` (hard link, else a symlink)."""
    import os

    for rel in rels:
        s, d = storage.contained(src, rel), storage.contained(dest, rel)
        if not s.is_file():
            raise BundleError(f"{src}: missing file {rel} listed in the manifest")
        d.parent.mkdir(parents=True, exist_ok=True)
        d.unlink(missing_ok=True)
        try:
            os.link(s, d)
        except OSError:
            os.symlink(s, d)


# --- writing -----------------------------------------------------------------------------------
def file_table(staging_dir: Path) -> dict[str, dict[str, Any]]:
    """``{relpath: {"sha256", "bytes"}}`` of every file under ``staging_dir`` but the manifest."""
    files = {}
    for f in sorted(p for p in staging_dir.rglob("*") if p.is_file()):
        rel = str(f.relative_to(staging_dir))
        if rel != MANIFEST:
            files[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    return files


def build_manifest(staging_dir: Path, use_case: str, version: int, *, metrics: dict[str, Any],
                   watermark: str | None, extra: dict[str, Any] | None = None,
                   files: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The manifest of ``staging_dir``; ``files``: its :func:`file_table`, when already computed."""
    files = file_table(staging_dir) if files is None else files
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
    :class:`BundleError` before anything is written. When every file equals the current
    bundle's (same names and checksums), nothing is written and the current manifest comes back
    with ``"unchanged": True``. Safe against a concurrent publisher: the number is claimed
    before any upload, ``latest`` never moves to a lower version. Returns the manifest.
    """
    from startup_recs.core.bundle_pointer import claim_version, move_latest

    staging = Path(staging_dir)
    if not staging.is_dir() or not any(staging.iterdir()):
        raise BundleError(f"{staging}: nothing to publish")
    files = file_table(staging)  # hashed once: compared with the current bundle, then the manifest
    try:
        current = current_manifest(models_uri, use_case)
    except (StorageError, KeyError, TypeError) as exc:  # latest names a broken or missing bundle
        log.warning("%s: the bundle latest names is unreadable (%s); publishing anyway", use_case, exc)
        current = None
    if isinstance(current, dict) and current.get("files") == files:
        log.info("%s: unchanged (every file equals v%s's checksums); nothing published",
                 use_case, current.get("version"))
        return {**current, "unchanged": True}
    if isinstance(current, dict) and isinstance(current.get("files"), dict):
        old = current["files"]
        changed = sorted(set(old) ^ set(files) | {r for r in set(old) & set(files) if old[r] != files[r]})
        log.info("%s: %d files differ from v%s's (%s)", use_case, len(changed), current.get("version"),
                 ", ".join(changed[:8]) + (", ..." if len(changed) > 8 else ""))
    if gate_margin is not None:
        gate = check_gate(metrics, models_uri, use_case, gate_margin)
        if not gate.passed:
            raise BundleError(f"gate refused publishing {use_case}: {gate.reason}")
    version = claim_version(models_uri, use_case, max(versions(models_uri, use_case), default=0) + 1)
    target = storage.join(models_uri, use_case, f"v{version}")
    manifest = build_manifest(staging, use_case, version, metrics=metrics, watermark=watermark, extra=extra,
                              files=files)
    log.info("publishing %s v%d (%d files) to %s", use_case, version, len(manifest["files"]), target)
    for rel in manifest["files"]:
        storage.upload_file(staging / rel, storage.join(target, rel))
    storage.write_json(storage.join(target, MANIFEST), manifest)
    if move_latest(models_uri, use_case, version, manifest["created_at"]):
        log.info("latest -> v%d", version)
    return manifest


def gate_as_dict(g: GateResult) -> dict[str, Any]:
    return asdict(g)
