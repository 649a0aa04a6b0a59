"""Hand-built tiny two-tower datasets in the ``recs dataset two-tower`` format, with a planted signal.

Startups and developers belong to one of ``n_clusters`` clusters; a startup's skills_needed and
sector, and a developer's skills, are drawn from its cluster. Startups contact mostly developers of
their own cluster (``purity``), picked by a skewed popularity, so a model that learns the clusters
beats popularity on the future (test) pairs. Hard negatives are developers of other clusters.
Pair timestamps are uniform over 100 days: train < day 70 <= val < day 85 <= test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def make_dataset(out_dir: Path, *, n_clusters: int = 4, n_startups: int = 48, n_devs: int = 160,
                 pos_per_startup: int = 14, purity: float = 0.85, hard_per_startup: int = 6,
                 features: bool = True, use_case: str = "startup_developer", seed: int = 0,
                 name: str = "tt") -> Path:
    """Write ``<out_dir>/<name>.parquet`` and its sidecars; return the pairs path."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    s_cluster = np.arange(n_startups) % n_clusters
    d_cluster = np.arange(n_devs) % n_clusters
    sid = np.array([f"s{i:03d}" for i in range(n_startups)])
    did = np.array([f"d{i:03d}" for i in range(n_devs)])
    pool = [[f"skill{c}_{j}" for j in range(5)] for c in range(n_clusters)]
    pop = rng.pareto(1.2, n_devs) + 1.0  # skewed popularity, unrelated to the clusters

    rows = []
    for s in range(n_startups):
        chosen: set[int] = set()
        while len(chosen) < pos_per_startup:
            same = rng.random() < purity
            cand = np.flatnonzero(d_cluster == s_cluster[s]) if same else np.arange(n_devs)
            p = pop[cand] / pop[cand].sum()
            chosen.add(int(rng.choice(cand, p=p)))
        for d in chosen:
            rows.append((sid[s], did[d], 1, float(rng.integers(1, 6)), "pos", rng.uniform(0, 100)))
        others = np.flatnonzero(d_cluster != s_cluster[s])
        for d in rng.choice(others, hard_per_startup, replace=False):
            if d not in chosen:
                rows.append((sid[s], did[d], 0, 1.0, "hard", rng.uniform(0, 100)))
    df = pd.DataFrame(rows, columns=["entity_id", "candidate_id", "label", "weight", "neg_type", "day"])
    df["ts"] = T0 + pd.to_timedelta(df["day"], unit="D")
    df["split"] = np.where(df["day"] < 70, "train", np.where(df["day"] < 85, "val", "test"))
    df = df.drop(columns="day")
    df["label"] = df["label"].astype(np.int8)
    df["weight"] = df["weight"].astype(np.float32)
    path = out_dir / f"{name}.parquet"
    df.to_parquet(path, index=False)

    if features:
        ents = pd.DataFrame({
            "entity_id": sid,
            "sector": [f"sector{c}" for c in s_cluster],
            "stage": rng.choice(["seed", "a", "b"], n_startups),
            "location": rng.choice(["berlin", "paris", "nyc"], n_startups),
            "skills_needed": [list(rng.choice(pool[c], 3, replace=False)) for c in s_cluster],
            "funding_usd": rng.lognormal(14, 1, n_startups),
        })
        cands = pd.DataFrame({
            "candidate_id": did,
            "location": rng.choice(["berlin", "paris", "nyc"], n_devs),
            "skills": [list(rng.choice(pool[c], 3, replace=False)) for c in d_cluster],
            "experience_years": rng.uniform(0, 15, n_devs),
        })
    else:
        ents, cands = pd.DataFrame({"entity_id": sid}), pd.DataFrame({"candidate_id": did})
    ents.to_parquet(out_dir / f"{name}_entities.parquet", index=False)
    cands.to_parquet(out_dir / f"{name}_candidates.parquet", index=False)
    meta = {"use_case": use_case, "counts": {k: int(v) for k, v in df["split"].value_counts().items()}}
    (out_dir / f"{name}_meta.json").write_text(json.dumps(meta))
    return path
