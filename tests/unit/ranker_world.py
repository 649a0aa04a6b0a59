"""A tiny id-only world with a planted ranking signal, shared by the ranker tests.

Entities and candidates carry hidden vectors ``u`` [n_e, 8], ``v`` [n_c, 8]; true affinity is
``u @ v.T`` plus a popularity boost. Two real :class:`EmbeddingRetriever` s see *halves* of the
truth: ``two_tower`` the first 4 dimensions, ``als`` the last 4. So ordering by either one alone
is mediocre, and a ranker that learns to add them (and the popularity prior) wins.

Train-window events (``ts < VAL_START``) feed :class:`ServingData`; the ranker rows are
validation-window "sessions": 12 shown candidates, label 1 for the best 2 by true affinity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from startup_recs.serving.data import ServingData
from startup_recs.serving.retrievers import EmbeddingRetriever, PopularityRetriever

VAL_START = pd.Timestamp("2026-03-01", tz="UTC")
USE_CASE = "startup_developer"


def make_world(seed: int = 0, n_e: int = 120, n_c: int = 80, shown: int = 12):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n_e, 8)).astype(np.float32)
    v = rng.normal(size=(n_c, 8)).astype(np.float32)
    boost = np.linspace(1.5, 0.0, n_c).astype(np.float32)  # candidate 0 most popular
    ents = [f"s{i}" for i in range(n_e)]
    cands = [f"d{j}" for j in range(n_c)]

    # train-window events: popularity follows `boost`
    ev_e, ev_c, ev_t = [], [], []
    for i in range(n_e):
        p = np.exp(boost) / np.exp(boost).sum()
        for j in rng.choice(n_c, size=3, replace=False, p=p):
            ev_e.append(ents[i])
            ev_c.append(cands[j])
            ev_t.append(VAL_START - pd.Timedelta(days=float(rng.uniform(1, 30))))
    events = pd.DataFrame({"entity_id": ev_e, "candidate_id": ev_c, "ts": ev_t, "weight": 1.0,
                           "event": "view"})
    data = ServingData.from_events(events, USE_CASE, until=VAL_START,
                                   candidate_features=pd.DataFrame(index=pd.Index(cands)))
    data.candidate_features = None  # id-only: the table above only fixes the candidate order
    order = data.candidate_positions(cands)
    v_al = np.zeros_like(v)
    v_al[order] = v
    half = np.zeros((n_e, 8), np.float32)
    tt_u, als_u = half.copy(), half.copy()
    tt_u[:, :4], als_u[:, 4:] = u[:, :4], u[:, 4:]
    retrievers = {
        "two_tower": EmbeddingRetriever("two_tower", data, ents, tt_u, v_al),
        "als": EmbeddingRetriever("als", data, ents, als_u, v_al),
        "popularity": PopularityRetriever(data),
    }

    true = u @ v.T + boost[None, :]
    rows = []
    for i in range(n_e):
        shown_c = rng.choice(n_c, size=shown, replace=False)
        best = set(shown_c[np.argsort(-true[i, shown_c])[:2]].tolist())
        for pos, j in enumerate(shown_c):
            rows.append({
                "session_id": f"q{i}", "entity_id": ents[i], "candidate_id": cands[j], "position": pos,
                "label": int(j in best), "propensity": 1.0 / (1 + pos),
                "weight": float(1 + pos) if j in best else 1.0,
                "ts": VAL_START + pd.Timedelta(days=float(rng.uniform(0, 10))), "split": "val",
            })
    return data, retrievers, pd.DataFrame(rows)
