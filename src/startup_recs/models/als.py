"""A fitted implicit-ALS model: factors, id mappings, and the one reader/writer of its files.

Files (names from :func:`startup_recs.core.artifacts.als_files`; ``<stem>`` = ``als{sfx}_v1``
unless ``--model-name`` chose another):

    <stem>_user_factors.npy   float32 [n_entities, factors]   (entities = the "users" of ALS)
    <stem>_item_factors.npy   float32 [n_candidates, factors]
    <stem>_user_mapping.json  entity id -> row
    <stem>_item_mapping.json  candidate id -> row
    <stem>_config.json        hyperparameters, use case, shapes, diagnostics, history (written last)

Training (:mod:`startup_recs.train.als`) writes them with :meth:`ALSModel.save`; serving
(:mod:`startup_recs.serving.retrievers`) and everything else read them with :meth:`ALSModel.load`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import ModelMismatchError


@dataclass
class ALSModel:
    """Fitted factors and the id mappings that give their rows meaning."""

    user_factors: np.ndarray  # float32 [n_entities, factors]
    item_factors: np.ndarray  # float32 [n_candidates, factors]
    user_ids: list[str]
    item_ids: list[str]
    config: dict[str, Any] = field(default_factory=dict)

    def scores(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """``float32 [len(rows), n_candidates]`` = user factors of ``rows`` @ item factors.T."""
        return self.user_factors[np.asarray(rows)] @ self.item_factors.T

    def save(self, output_dir: str, name: str) -> dict[str, str]:
        """Write the five files under ``name`` (config last, so its presence means complete);
        returns the four data file names (the config's ``"files"``)."""
        files = artifacts.als_files_named(name).data_files()
        for key, arr in (("user_factors", self.user_factors), ("item_factors", self.item_factors)):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
            storage.write_bytes(storage.join(output_dir, files[key]), buf.getvalue())
        storage.write_json(storage.join(output_dir, files["user_mapping"]),
                           {u: i for i, u in enumerate(self.user_ids)})
        storage.write_json(storage.join(output_dir, files["item_mapping"]),
                           {c: i for i, c in enumerate(self.item_ids)})
        config = {**self.config, "model_name": name, "files": files}
        storage.write_json(storage.join(output_dir, artifacts.als_files_named(name).config), config)
        return files

    @staticmethod
    def exists(models_dir: str, name: str) -> bool:
        """Whether ``models_dir`` holds an ALS model named ``name`` (its item factors)."""
        return storage.exists(storage.join(models_dir, artifacts.als_files_named(name).item_factors))

    @classmethod
    def load(cls, models_dir: str, name: str) -> ALSModel:
        """Read a model written by :meth:`save` (local path or ``s3://``). A missing config
        gives ``config == {}``; mappings whose sizes differ from the factor rows raise
        :class:`ModelMismatchError`."""
        files = artifacts.als_files_named(name)

        def uri(file: str) -> str:
            return storage.join(models_dir, file)

        config = storage.read_json(uri(files.config)) if storage.exists(uri(files.config)) else {}

        def npy(file: str) -> np.ndarray:
            return np.load(io.BytesIO(storage.read_bytes(uri(file))), allow_pickle=False)

        def ids(file: str) -> list[str]:
            mapping = storage.read_json(uri(file))
            return [k for k, _ in sorted(mapping.items(), key=lambda kv: kv[1])]

        users, items = npy(files.user_factors), npy(files.item_factors)
        user_ids, item_ids = ids(files.user_mapping), ids(files.item_mapping)
        if len(user_ids) != users.shape[0] or len(item_ids) != items.shape[0]:
            raise ModelMismatchError(f"{storage.join(models_dir, name)}: mappings do not match the factor shapes")
        return cls(users, items, user_ids, item_ids, config)
