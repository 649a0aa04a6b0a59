"""A fitted item-to-item model (EASE weights or an item-kNN similarity) and its files.

Scores are ``history @ W``: an entity's (binarised) candidate history ``[n, n_c]`` times the
candidate x candidate matrix ``W`` (dense float32 ``[n_c, n_c]`` for EASE, CSR for kNN).
Fitting lives in :mod:`startup_recs.train.item2item`; this module is what serving needs.

Files (names from :func:`startup_recs.core.artifacts.item2item_files`; ``<stem>`` defaults to
``item2item{sfx}_v1``): ``<stem>_config.json``, ``<stem>_weights.npy`` (EASE) or
``<stem>_similarity.npz`` (kNN, CSR), and the candidate mapping ``<stem>_item_mapping.json``
(candidate id -> column). Local paths or ``s3://`` (staged through a temporary folder).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from startup_recs.core import artifacts, storage

DEFAULT_EASE_BUDGET = 4 * 1024**3  # bytes of memory the EASE solve may use


@dataclass
class Item2ItemConfig:
    """Hyperparameters and what the fit chose (``chosen``: ``ease`` | ``cosine`` | ``bm25``)."""

    use_case: str
    method: str = "auto"  # auto | ease | cosine | bm25
    lam: float = 200.0  # EASE L2 strength
    neighbours: int = 100  # item-kNN K
    binary: bool = True  # fit on X > 0 rather than summed event weights
    memory_budget: int = DEFAULT_EASE_BUDGET  # bytes
    n_candidates: int = 0
    chosen: str = ""
    fit_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Item2ItemModel:
    """Scores entities by the candidates they interacted with: ``history @ W``."""

    def __init__(self, config: Item2ItemConfig, weights: np.ndarray | sp.csr_matrix):
        self.config = config
        self.weights = weights  # [n_c, n_c] float32, dense (EASE) or CSR (kNN)

    def score(self, history: sp.csr_matrix) -> np.ndarray:
        """Scores [n, n_c] float32 for entities whose (binarised) histories are ``history`` [n, n_c]."""
        h = sp.csr_matrix(history, dtype=np.float32)
        if self.config.binary:
            h.data[:] = 1.0
        out = h @ self.weights
        return np.asarray(out.toarray() if sp.issparse(out) else out, dtype=np.float32)

    # ---------------------------------------------------------------- files
    def _save_local(self, out: Path, name: str, item_mapping: dict[str, int]) -> list[Path]:
        files = artifacts.item2item_files_named(name)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / files.config, out / files.item_mapping]
        if isinstance(self.weights, np.ndarray):
            paths.append(out / files.weights)
            np.save(paths[-1], self.weights)
        else:
            paths.append(out / files.similarity)
            sp.save_npz(paths[-1], self.weights)
        paths[0].write_text(json.dumps({**asdict(self.config), "name": name}, indent=2))
        paths[1].write_text(json.dumps(item_mapping))
        return paths

    def save(self, output_dir: str | Path, name: str, item_mapping: dict[str, int]) -> list[str]:
        """Write config, candidate mapping (id -> column) and weights under ``name``; returns the
        written paths / URIs. ``s3://`` targets are written locally first, then uploaded."""
        if storage.is_s3(str(output_dir)):
            with tempfile.TemporaryDirectory() as tmp:
                uris = []
                for p in self._save_local(Path(tmp), name, item_mapping):
                    uris.append(storage.join(str(output_dir), p.name))
                    storage.upload_file(p, uris[-1])
                return uris
        return [str(p) for p in self._save_local(storage.local(output_dir), name, item_mapping)]

    @staticmethod
    def exists(models_dir: str | Path, name: str) -> bool:
        """Whether ``models_dir`` holds an item-to-item model named ``name`` (its config)."""
        return storage.exists(storage.join(str(models_dir), artifacts.item2item_files_named(name).config))

    @classmethod
    def _load_local(cls, d: Path, name: str) -> tuple[Item2ItemModel, dict[str, int]]:
        files = artifacts.item2item_files_named(name)
        raw = json.loads((d / files.config).read_text())
        raw.pop("name", None)
        config = Item2ItemConfig(**raw)
        if (d / files.weights).exists():
            weights: np.ndarray | sp.csr_matrix = np.load(d / files.weights, allow_pickle=False)
        else:
            weights = sp.load_npz(d / files.similarity).tocsr()
        mapping = json.loads((d / files.item_mapping).read_text())
        return cls(config, weights), mapping

    @classmethod
    def load(cls, models_dir: str | Path, name: str) -> tuple[Item2ItemModel, dict[str, int]]:
        """``(model, candidate id -> column)`` from a folder written by :meth:`save`."""
        if not storage.is_s3(str(models_dir)):
            return cls._load_local(storage.local(models_dir), name)
        with tempfile.TemporaryDirectory(prefix="recs-i2i-") as tmp:
            for file in artifacts.item2item_files_named(name).names():
                uri = storage.join(str(models_dir), file)
                if storage.exists(uri):
                    storage.download(uri, f"{tmp}/{file}")
            return cls._load_local(Path(tmp), name)
