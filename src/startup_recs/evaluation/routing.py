"""Routing choice: which retriever heads each segment's chain, chosen on the validation window.

What: :func:`choose_routing` scores every stage-1 retriever (fit before ``val_start``) except
popularity on the validation window ``[val_start, split_at)`` with the evaluation protocol
(:mod:`startup_recs.evaluation.protocol`: full ranking, seen candidates excluded), per segment
(cold < 5, warm 5-19, hot 20+ fit-window events), and puts the best by :data:`CHOICE_METRIC`
(NDCG@10) at the head of that segment's chain. Returns a
:class:`~startup_recs.serving.router.Routing` (``routing.json``) and the validation metrics
(``metrics.json["validation"]``).

Why on validation: the test window is scored once, after every choice is made; the ranker's
trainer calls the same function with the same stage-1 models, so it learns on the very pools
serving will re-rank.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from startup_recs.core.errors import DataError
from startup_recs.data.snapshot import load_snapshot
from startup_recs.evaluation.protocol import retriever_top, score_models, summarize_target, target_window
from startup_recs.serving.data import ServingData
from startup_recs.serving.retrievers import load_retrievers
from startup_recs.serving.router import Routing

log = logging.getLogger(__name__)

CHOICE_METRIC = "ndcg@10"
MIN_SEGMENT_ENTITIES = 10  # fewer validation entities in a segment: keep its default chain head


def choose_routing(events: pd.DataFrame, snap: Any, use_case: str, split: Any, val_models: str,
                   ks: Sequence[int], batch: int = 256) -> tuple[Routing, dict[str, Any]]:
    """Pick each segment's retriever on the validation window with the stage-1 models.

    ``events``: ``snap.events(use_case)``; ``snap``: the :class:`~startup_recs.data.snapshot.Snapshot`
    (or its URI); ``split``: the :class:`~startup_recs.data.split.TimeSplit`; ``val_models``: the
    stage-1 models folder (fit before ``split.val_start``).

    For every segment (cold, warm, hot) the retriever with the best validation NDCG@10 on that
    segment's validation entities heads its chain; candidates are every loaded retriever except
    popularity (two-tower, ALS, item2item, content). A segment with fewer than
    :data:`MIN_SEGMENT_ENTITIES` validation entities keeps its default head. (The legacy routing
    fixed content for cold and two-tower for hot; on data where, say, content beats the
    collaborative models for warm entities, the validation choice follows the data. The
    test window is never consulted.) Returns the routing and the validation metrics of every
    model (for ``metrics["validation"]``).
    """
    if isinstance(snap, str):
        snap = load_snapshot(snap)
    data = ServingData.from_snapshot(snap, use_case, split.val_start, events=events)
    t = target_window(events, data, split.val_start, split.split_at, imported=snap.source == "events")
    if not t.entity_ids:
        raise DataError(f"empty validation set: no positive event in [{split.val_start.isoformat()}, "
                        f"{split.split_at.isoformat()}) for a candidate not seen before")
    retrievers = load_retrievers(val_models, data)
    candidates = [n for n in retrievers if n != "popularity"]
    per_model = {n: summarize_target(retriever_top(retrievers[n], data, t.entity_ids, max(ks), batch), t,
                                     data.n_candidates, ks) for n in candidates}
    by_segment: dict[str, dict[str, float]] = {}
    chosen: dict[str, str | None] = {}
    for seg in ("cold", "warm", "hot"):
        n_seg = int((t.segments == seg).sum())
        by_segment[seg] = {n: float(per_model[n].get(seg, {}).get(CHOICE_METRIC, 0.0)) for n in candidates}
        if n_seg < MIN_SEGMENT_ENTITIES or not candidates:
            chosen[seg] = None
            continue
        # ties go to the legacy preference: two-tower, then ALS, then the rest
        pref = {"two_tower": 2, "als": 1}
        chosen[seg] = max(candidates, key=lambda n, s=seg: (by_segment[s][n], pref.get(n, 0)))
    warm_default = next((n for n in ("two_tower", "als") if n in retrievers), "two_tower")
    routing = Routing(warm=chosen["warm"] or warm_default,
                      chosen_on="validation" if any(chosen.values()) else "default",
                      val_ndcg=by_segment["warm"], cold=chosen["cold"], hot=chosen["hot"])
    routing.val_by_segment = by_segment
    models, _, routes = score_models(data, retrievers, t, ks, routing=routing, batch=batch)
    validation = {"val_start": split.val_start.isoformat(), "split_at": split.split_at.isoformat(),
                  "chosen": {k: v for k, v in chosen.items()}, "val_ndcg@10_by_segment": by_segment,
                  "segment_entities": {seg: int((t.segments == seg).sum()) for seg in ("cold", "warm", "hot")},
                  "models": models, "routes": routes}
    log.info("routes chosen on validation (%s): cold=%s warm=%s hot=%s", CHOICE_METRIC, routing.chain("cold")[0],
             routing.chain("warm")[0], routing.chain("hot")[0])
    return routing, validation
