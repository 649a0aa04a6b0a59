"""Mutual relevance: a test pair counts when *both* sides acted.

What: for a reverse use case (a startup looking for developers or investors), a pair
``(startup, candidate)`` of a window ``[start, end)`` is *mutually relevant* when the startup acted
on the candidate (one of :attr:`UseCase.acts <startup_recs.core.usecases.UseCase.acts>`:
``contact``, or ``reply`` to the candidate's application / contact) **and** the candidate acted on
the startup (one of its forward twin's ``acts``: ``apply``, ``contact``, or ``reply`` to the
startup's contact), both inside the window. As in the one-sided protocol
(:func:`startup_recs.evaluation.protocol.target_window`), candidates the startup had interacted
with before ``start`` are not new and do not count; relevant candidates outside the candidate
space stay in the denominator.

:func:`mutual_target` gives the :class:`~startup_recs.evaluation.protocol.Target` (``None`` for a
forward use case or an imported log, which has no other side); the protocol scores every model's
ranking against it too and writes ``mutual_ndcg@K``, ``mutual_recall@K``, ... beside the one-sided
metrics (:func:`prefixed`).

Why: a contact nobody answers is worth little to a startup; the mutual metrics measure what the
reciprocal scorer (:mod:`startup_recs.serving.reciprocal`) is for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from startup_recs.core.config import segment_of
from startup_recs.core.usecases import get_use_case, twin_of
from startup_recs.serving.data import ServingData

PREFIX = "mutual_"


def _window(events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp | None, names: tuple[str, ...]) -> pd.DataFrame:
    ts = pd.to_datetime(events["ts"], utc=True)
    mask = (ts >= start) if end is None else (ts >= start) & (ts < end)
    return events.loc[mask & events["event"].astype(str).isin(names)]


def mutual_pairs(snapshot: Any, use_case: str, start: pd.Timestamp, end: pd.Timestamp | None = None) -> pd.DataFrame | None:
    """Distinct ``entity_id, candidate_id`` (startup, user) pairs where both sides acted in
    ``[start, end)``; ``None`` when the use case has no other side in this snapshot."""
    uc = get_use_case(use_case)
    if uc.direction != "reverse" or getattr(snapshot, "source", "db") != "db":
        return None
    twin = get_use_case(twin_of(uc.name))
    mine = _window(snapshot.events(uc.name), start, end, uc.acts)[["entity_id", "candidate_id"]]
    theirs = _window(snapshot.events(twin.name), start, end, twin.acts)
    theirs = pd.DataFrame({"entity_id": theirs["candidate_id"].to_numpy(), "candidate_id": theirs["entity_id"].to_numpy()})
    both = mine.astype(str).drop_duplicates().merge(theirs.astype(str).drop_duplicates(), on=["entity_id", "candidate_id"])
    return both.sort_values(["entity_id", "candidate_id"]).reset_index(drop=True)


def target_of_pairs(pairs: pd.DataFrame, data: ServingData) -> Any:
    """The :class:`~startup_recs.evaluation.protocol.Target` of relevant ``pairs`` (candidates
    already contacted before ``data.until`` dropped, as in ``protocol.target_window``; unknown
    ones counted in ``n_relevant``)."""
    from startup_recs.evaluation.protocol import Target

    ids, rel, n_rel, segs = [], [], [], []
    index = pd.Index(data.candidate_ids)
    for e, g in pairs.groupby("entity_id", sort=True)["candidate_id"]:
        cidx = index.get_indexer(g.to_numpy())
        new_known = np.setdiff1d(cidx[cidx >= 0], data.excluded_of(str(e)))
        n_new = len(new_known) + int((cidx < 0).sum())
        if n_new == 0:
            continue
        ids.append(str(e))
        rel.append(new_known.astype(np.int64))
        n_rel.append(n_new)
        segs.append(segment_of(data.interaction_count(str(e))))
    return Target(ids, rel, np.asarray(n_rel, np.int64), np.asarray(segs, dtype=object))


def mutual_target(snapshot: Any, data: ServingData, start: pd.Timestamp, end: pd.Timestamp | None = None) -> Any | None:
    """The mutual :class:`~startup_recs.evaluation.protocol.Target` of ``data``'s use case in
    ``[start, end)`` (``data`` fitted until ``start``); ``None`` without another side or pairs."""
    pairs = mutual_pairs(snapshot, data.use_case, start, end)
    if pairs is None or not len(pairs):
        return None
    t = target_of_pairs(pairs, data)
    return t if t.entity_ids else None


def prefixed(summary: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``{segment: {metric: v}}`` -> ``{segment: {"mutual_" + metric: v}}`` (``users`` too)."""
    return {seg: {PREFIX + k: v for k, v in vals.items()} for seg, vals in summary.items()}
