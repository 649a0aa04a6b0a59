"""Build the ANN indexes of a models folder (publish time): one per learned retriever.

:func:`build_indexes` loads the folder's serving data and embedding retrievers exactly as serving
does (so each index is built on the candidate matrix serving will hold, in serving order), tunes
each on a sample of that retriever's own entity vectors with their serving exclusions
(:func:`startup_recs.serving.ann.build`), and writes ``ann/<retriever>.{faiss,json}`` into the
folder. The publish step runs it on its staging copy, so the files enter the bundle's manifest
with checksums like every other file; the returned summary goes into ``manifest.json`` too.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from startup_recs.serving import ann
from startup_recs.serving.data import ServingData
from startup_recs.serving.retrievers import EmbeddingRetriever, load_retrievers

log = logging.getLogger(__name__)

LEARNED = ("two_tower", "als")
SERVING_DIR = "serving"


def build_indexes(models_dir: str | Path, *, names: Sequence[str] = LEARNED, kind: str = "auto",
                  exact_below: int = ann.EXACT_BELOW, k: int = ann.RECALL_K, target: float = ann.RECALL_TARGET,
                  n_queries: int = 500, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Write ``<models_dir>/ann/`` for every embedding retriever in ``names`` that the folder has.

    Returns ``{retriever: AnnInfo.summary}`` (kind, search breadth, ``recall@k``). A previous
    ``ann/`` folder is replaced. Needs ``<models_dir>/serving/`` (evaluate writes it).
    """
    root = Path(models_dir)
    shutil.rmtree(root / ann.ANN_DIR, ignore_errors=True)  # never tune on a stale index
    data = ServingData.load(str(root / SERVING_DIR))
    retrievers = load_retrievers(str(root), data, names=list(names))
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for name, r in retrievers.items():
        if not isinstance(r, EmbeddingRetriever):
            continue
        ids = list(r.entity_index)
        pick = rng.choice(len(ids), min(n_queries, len(ids)), replace=False) if ids else np.zeros(0, np.int64)
        queries = r.entity_vectors[pick] if len(pick) else np.zeros((0, r.dim), np.float32)
        exclude = data.exclusion_lists([ids[i] for i in pick])
        if not len(queries) and ann.choose_kind(r.index.size, kind, exact_below) != "exact":
            log.warning("%s: no entity vectors to tune an ANN index on; it stays exact", name)
            index, info = ann.build(r.index.vectors, queries, kind="exact", retriever=name)
        else:
            index, info = ann.build(r.index.vectors, queries, exclude, kind=kind, exact_below=exact_below, k=k,
                                    target=target, seed=seed, retriever=name)
        ann.save(root, name, index, info)
        out[name] = info.summary
    return out
