"""The artifact folders the steps read and write, and the provenance they report.

Folder layout of each artifact (what the next step reads):

- snapshot: ``recs extract`` output (one Parquet dataset dir per table + extract_stats.json);
- two-tower / ranker dataset: ``<stem>.parquet`` and its sidecars (docs/contracts.md);
- ALS dataset: ``recs dataset als --output-dir`` of one fit window;
- a model: the trainer's ``--output-dir`` (legacy file names);
- stage 1 (``train_ranker``'s output): the stage-1 two-tower + ALS files and the ranker;
- models (``evaluate``'s output): final two-tower + ALS, the stage-1 ranker, routing.json and
  ``serving/`` data: the folder that is published as a bundle;
- evaluation: metrics.json, report.md, routing.json and plots.

Each step returns JSON scalars (:func:`provenance`): rows, the data watermark, and for models a
content-derived version (:func:`dir_digest`).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from startup_recs import __version__
from startup_recs.core import storage
from startup_recs.core.artifacts import EXTRACT_STATS
from startup_recs.core.errors import DataError


def opt(value: str) -> str | None:
    """KFP parameters cannot be None; an empty string means "not given"."""
    return value if value not in ("", None) else None


def split_kwargs(split_at: str, test_days: float, val_days: float) -> dict[str, Any]:
    """The time-split keywords of every dataset builder and the evaluation."""
    return {"split_at": opt(split_at), "test_days": float(test_days), "val_days": float(val_days)}


def fresh_dir(path: str) -> Path:
    """The output folder, empty (a retried task must not see a previous attempt's files)."""
    p = storage.local(path)
    if p.exists():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    p.mkdir(parents=True)
    return p


def snapshot_stats(snapshot: str) -> dict[str, Any]:
    """The snapshot's ``extract_stats.json`` (``{}`` without one)."""
    uri = storage.join(snapshot, EXTRACT_STATS)
    return storage.read_json(uri) if storage.exists(uri) else {}


def watermark_of(snapshot: str) -> str:
    """The snapshot's data watermark (newest event time), ``""`` when unknown."""
    return str(snapshot_stats(snapshot).get("watermark") or "")


def dir_digest(path: str | Path) -> str:
    """sha256 over a folder's relative file names and contents (12 hex): a model's version id."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:12]


def scalars(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten to JSON scalars (artifact metadata is shown as a flat table in the KFP UI)."""
    out: dict[str, Any] = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(scalars(v, key + "."))
        elif isinstance(v, bool | int | float | str) or v is None:
            out[key] = v
        elif isinstance(v, list | tuple) and len(v) <= 8 and all(isinstance(x, int | float | str) for x in v):
            out[key] = ", ".join(map(str, v))
    return out


def provenance(snapshot: str | None, use_case: str | None, **extra: Any) -> dict[str, Any]:
    """A step's flat metadata: package version, data watermark, use case, then ``extra``."""
    meta: dict[str, Any] = {"package_version": __version__}
    if snapshot:
        meta["data_watermark"] = watermark_of(snapshot)
    if use_case:
        meta["use_case"] = use_case
    meta.update(scalars(extra))
    return meta


def find_one(folder: Path, pattern: str) -> Path:
    """The single file of ``folder`` matching ``pattern`` (else :class:`DataError`)."""
    hits = sorted(folder.glob(pattern))
    if len(hits) != 1:
        raise DataError(f"{folder}: expected one {pattern}, found {len(hits)}")
    return hits[0]


def copy_files(src: str | Path, dst: Path) -> list[str]:
    """Copy the plain files of ``src`` (not its sub-folders) into ``dst``; returns their names."""
    names = []
    for f in sorted(Path(src).iterdir()):
        if f.is_file():
            shutil.copy2(f, dst / f.name)
            names.append(f.name)
    return names


def time_split(snapshot: str, use_case: str, split_at: str = "", test_days: float = 14.0,
               val_days: float = 14.0) -> Any:
    """The :class:`~startup_recs.data.split.TimeSplit` every dataset builder resolves for these flags."""
    from startup_recs.data.snapshot import load_snapshot
    from startup_recs.data.split import TimeSplit

    events = load_snapshot(snapshot).events(use_case)
    return TimeSplit.resolve(events["ts"], opt(split_at), float(test_days), float(val_days))
