"""The content retriever's top 200 materialized at publish for every entity of the bundle.

Why: content scoring is a scan of every candidate's profile (~30 ms per entity at 1M candidates
on one core, no index can prune it exactly), and every request needs it: cold entities are routed
to content, and the ranker's hybrid pool (``serving/pool.py``) unions content's top 200 with the
learned retrievers' lists for every entity. An entity's content ranking depends only on the bundle
(its feature row, the candidates' rows, popularity and its exclusions), so it is computed once.
Every entity a bundle can answer is in its serving data (an unknown id is a 404), so the lists
cover every request; anything else (another depth) scans as before. Cost: one scan per entity
at publish (n_entities x n_candidates), spread over the cores (the scan is numpy on
``[batch, n_c]`` arrays, which releases the GIL), int32 + float32 x 200 per entity in the bundle.

Files in a models folder / bundle::

    content/lists.json       {"format", "k", "n_candidates", "fingerprint", "entities": [ids]}
    content/top_idx.npy      int32 [n, k]   candidate indices, best first, -1 pads
    content/top_scores.npy   float32 [n, k] their scores, -inf pads

Rows are exactly ``ContentRetriever.top([entity], k)`` (the same code, run in batches of 32
entities: the scores are elementwise, the selection per row), checked by the tests.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from startup_recs.core.config import thread_count

log = logging.getLogger(__name__)

CONTENT_DIR = "content"
K = 200  # the recommender's retrieval depth (N_RETRIEVE)
BATCH = 32


def build(models_dir: str | Path, *, k: int = K, batch: int = BATCH, workers: int | None = None) -> dict[str, Any]:
    """Write ``<models_dir>/content/`` for every entity of the folder's serving data.

    ``workers``: threads scanning batches at once (default: the task's ``OMP_NUM_THREADS``, which
    ``run_local`` sets when use cases share the cores, else the machine's cores, at most 8); the
    rows do not depend on it. Logs progress about every 10 % of the entities.
    Returns ``{"entities", "k", "seconds"}`` (``{"entities": 0}`` without a content retriever).
    """
    from startup_recs.serving.content import data_fingerprint
    from startup_recs.serving.recommender import Recommender

    t0 = time.perf_counter()
    root = Path(models_dir)
    out = root / CONTENT_DIR
    if out.exists():  # never keep lists of another build
        for f in out.iterdir():
            f.unlink()
    rec = Recommender.load(str(root), rerank=False)
    content = rec.retrievers.get("content")
    ids = rec.data.known_entities() if content else []
    if not ids:
        return {"entities": 0}
    k = min(int(k), rec.data.n_candidates)
    idx = np.full((len(ids), k), -1, np.int32)
    sc = np.full((len(ids), k), -np.inf, np.float32)
    starts = range(0, len(ids), batch)
    step = max(1, len(starts) // 10)

    def one(lo: int) -> None:  # each batch writes its own rows: no lock needed
        chunk = ids[lo:lo + batch]
        i, s = content.top(chunk, k, use_lists=False)
        idx[lo:lo + len(chunk), : i.shape[1]] = np.where(np.isfinite(s), i, -1)
        sc[lo:lo + len(chunk), : s.shape[1]] = s

    default = thread_count(os.environ.get("OMP_NUM_THREADS")) or min(os.cpu_count() or 1, 8)
    n_workers = max(1, int(workers or default))
    with ThreadPoolExecutor(n_workers, thread_name_prefix="content-lists") as pool:
        for done, _ in enumerate(pool.map(one, starts), 1):
            if done % step == 0 and done < len(starts):
                log.info("content lists: %d of %d entities (%.0f s)", min(done * batch, len(ids)), len(ids),
                         time.perf_counter() - t0)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "top_idx.npy", idx)
    np.save(out / "top_scores.npy", sc)
    (out / "lists.json").write_text(json.dumps({
        "format": "startup_recs.content_lists/1", "k": k, "n_candidates": rec.data.n_candidates,
        "fingerprint": data_fingerprint(rec.data), "entities": ids}) + "\n")
    seconds = time.perf_counter() - t0
    log.info("content lists: %d entities x top %d in %.1f s (%d threads)", len(ids), k, seconds, n_workers)
    return {"entities": len(ids), "k": k, "seconds": round(seconds, 1)}
