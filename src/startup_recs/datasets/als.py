"""ALS interaction matrix (legacy ``generate_als_dataset``).

Writes into ``output_dir`` (legacy names from :func:`startup_recs.core.artifacts.als_dataset_files`;
``{sfx}`` = ``_reverse`` for reverse use cases):

- ``als_interactions{sfx}.npz``: scipy CSR float32 [n_entities, n_candidates], the summed event
  weights of the fit window (``trainval`` = events before ``split_at``, default, for the final
  model; ``train`` = before ``val_start``, for stage-1 models and tuning; ``all`` = every event,
  for the published refit);
- ``als{sfx}_user_mapping.json`` (entity id -> row), ``als{sfx}_item_mapping.json`` (candidate
  id -> column), both sorted by id;
- ``als{sfx}_meta.json``: use case, split, fit window, shape, provenance (written last).

Only the fit window is read, so nothing after it reaches the matrix or the mappings.
"""

from __future__ import annotations

import argparse
import io
import logging
from typing import Any

import numpy as np
import scipy.sparse as sp

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.data.split import TimeSplit
from startup_recs.datasets.common import elapsed, entity_filter, prepare, sorted_unique

log = logging.getLogger(__name__)

WINDOW_PART = {"train": 0, "trainval": 1, "all": 2}


def als_names(use_case_suffix: str) -> dict[str, str]:
    """The legacy file names of one use case's ALS dataset (``{"matrix", "user_mapping",
    "item_mapping", "meta"}``, from :mod:`startup_recs.core.artifacts`)."""
    return artifacts.ALSDatasetFiles.for_suffix(use_case_suffix).as_dict()


def _sorted_positions(codes: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct ids of ``codes`` sorted, each code's position among them): int work, no strings."""
    used = sorted_unique(codes)
    order = np.argsort(ids[used].astype(str), kind="stable")
    pos = np.full(len(ids), -1, np.int64)
    pos[used[order]] = np.arange(len(used))
    return ids[used[order]].astype(str), pos[codes]


def build_als(snapshot_uri: str, use_case: str, output_dir: str, *, min_interactions: int = 1,
              fit_window: str = "trainval", split: TimeSplit | None = None, split_at: Any = None,
              test_days: float = 14.0, val_days: float = 14.0) -> dict[str, Any]:
    """Write the CSR matrix, the two mappings and the meta JSON; return stats.

    ``min_interactions`` counts an entity's events in the fit window; fewer -> its row is dropped.
    """
    if fit_window not in WINDOW_PART:
        raise ConfigError(f"unknown --fit-window {fit_window!r}; expected train, trainval or all")
    prep = prepare(snapshot_uri, use_case, split, split_at=split_at, test_days=test_days, val_days=val_days)
    wp = WINDOW_PART[fit_window]
    keep = entity_filter(prep, min_interactions, wp)
    m = (prep.part <= wp) & keep[prep.ent]
    e_codes, c_codes = prep.ent[m], prep.cand[m]
    rows_ids, r = _sorted_positions(e_codes, prep.entity_ids)
    col_ids, c = _sorted_positions(c_codes, prep.candidate_ids)
    w = prep.events["weight"].to_numpy(np.float64)[m]
    matrix = sp.csr_matrix((w, (r, c)), shape=(len(rows_ids), len(col_ids)), dtype=np.float64)
    matrix.sum_duplicates()
    matrix = matrix.astype(np.float32)
    matrix.sort_indices()

    names = als_names(prep.uc.suffix)
    cutoff = prep.split.cutoff(fit_window)
    with storage.atomic_local_path(storage.join(output_dir, names["matrix"])) as tmp, open(tmp, "wb") as fh:
        sp.save_npz(fh, matrix, compressed=True)  # a file object: save_npz would append ".npz" to a path
    storage.write_json(storage.join(output_dir, names["user_mapping"]), {k: i for i, k in enumerate(rows_ids.tolist())})
    storage.write_json(storage.join(output_dir, names["item_mapping"]), {k: i for i, k in enumerate(col_ids.tolist())})
    stats = {
        **prep.provenance(),
        "kind": "als",
        "output_dir": str(output_dir),
        "fit_window": fit_window,
        "cutoff": None if cutoff is None else cutoff.isoformat(),  # all: every event
        "shape": [int(matrix.shape[0]), int(matrix.shape[1])],
        "nnz": int(matrix.nnz),
        "events": int(m.sum()),
        "density": float(matrix.nnz / max(matrix.shape[0] * matrix.shape[1], 1)),
        "dropped_entities": int((~keep).sum()),
        "params": {"min_interactions": int(min_interactions)},
        "files": names,
    }
    stats["seconds"] = elapsed(prep)
    storage.write_json(storage.join(output_dir, names["meta"]), stats)
    log.info("als %s: %s nnz=%d in %.1fs", prep.uc.name, stats["shape"], stats["nnz"], stats["seconds"])
    return stats


def load_matrix(data: str, user_mapping: str, item_mapping: str) -> tuple[sp.csr_matrix, list[str], list[str]]:
    """Read an ALS dataset by file: the CSR ``.npz`` [n_entities, n_candidates] (no pickle) and
    the ids of its rows and columns (from the two id -> row mappings, in row order).

    Raises :class:`DataError` for a missing file, a file that is not a scipy sparse ``.npz`` or a
    mapping whose rows are not ``0..n-1``.
    """
    for uri in (data, user_mapping, item_mapping):
        if not storage.exists(uri):
            raise DataError(f"{uri}: no such file")
    try:
        matrix = sp.load_npz(io.BytesIO(storage.read_bytes(data))).tocsr()
    except (ValueError, OSError, KeyError) as exc:
        raise DataError(f"{data}: not a scipy sparse .npz ({exc})") from None

    def ids(uri: str) -> list[str]:
        mapping = storage.read_json(uri)
        if not isinstance(mapping, dict):
            raise DataError(f"{uri}: expected a JSON object id -> row")
        out = [str(k) for k, _ in sorted(mapping.items(), key=lambda kv: int(kv[1]))]
        if sorted(int(v) for v in mapping.values()) != list(range(len(mapping))):
            raise DataError(f"{uri}: rows must be 0..{len(mapping) - 1}")
        return out

    return matrix, ids(user_mapping), ids(item_mapping)


def load_als(output_dir: str, use_case_suffix: str) -> tuple[sp.csr_matrix, dict[str, int], dict[str, int]]:
    """Read back (matrix, entity id -> row, candidate id -> column) as written by :func:`build_als`."""
    names = artifacts.ALSDatasetFiles.for_suffix(use_case_suffix)
    matrix, users, items = load_matrix(*(storage.join(output_dir, f)
                                         for f in (names.matrix, names.user_mapping, names.item_mapping)))
    return matrix, {u: i for i, u in enumerate(users)}, {c: i for i, c in enumerate(items)}


def cli_build(args: argparse.Namespace) -> int:
    stats = build_als(args.snapshot, args.use_case, args.output_dir, min_interactions=args.min_interactions,
                      fit_window=args.fit_window, split_at=args.split_at, test_days=args.test_days,
                      val_days=args.val_days)
    n, k = stats["shape"]
    print(f"als {stats['use_case']}: {n} entities x {k} candidates, nnz {stats['nnz']} "
          f"({stats['fit_window']} window, events < {stats['cutoff']}) -> {stats['output_dir']}/{stats['files']['matrix']}"
          f"  ({stats['seconds']}s)")
    return 0
