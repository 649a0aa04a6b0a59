"""A loaded bundle answers a few recommendations before it is served.

The first answer of a fresh process pays one-off costs (lazy imports, the first torch forward,
first-touch of the arrays): about 2 s on two cores, the whole default request deadline. So the
loader that the bundle slots use also warms the model up: it answers the least and the most
active known entity and one in between (so the cold, warm and hot routes each run once) before
the slot swaps the bundle in. A bundle that cannot answer them is refused like a corrupt one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from startup_recs.serving.reload import Loader, Servable

log = logging.getLogger("predictors")
SAMPLE = 2000  # known entities looked at to pick the three


def warm_up(model: Servable) -> int:
    """Answer up to three known entities of ``model`` (different activity); returns how many."""
    data: Any = getattr(model, "data", None)
    if data is None or not hasattr(data, "known_entities"):
        return 0
    known = list(data.known_entities()[:SAMPLE])
    if not known:
        return 0
    if hasattr(data, "interaction_count"):
        known.sort(key=data.interaction_count)
    picks = list(dict.fromkeys([known[0], known[len(known) // 2], known[-1]]))
    for entity in picks:
        model.recommend(entity, 10)
    return len(picks)


def warming(loader: Loader) -> Loader:
    """``loader``, then :func:`warm_up` on what it loaded."""

    def load(local_dir: Path) -> Servable:
        model = loader(local_dir)
        t0 = time.perf_counter()
        n = warm_up(model)
        if n:
            log.info("warmed up %s with %d answers in %.2fs", local_dir, n, time.perf_counter() - t0)
        return model

    return load
