"""Full-ranking Recall@K / NDCG@K for the two-tower trainer: :func:`validate` (early stopping on
the val split) and :func:`evaluate_saved` (``recs train two-tower --evaluate``: a saved model on
the test split, beside popularity).

Protocol (the same as the offline evaluation): the queries are entities with positives in the
evaluated window; relevant = those candidates, minus any the entity already had in the fit
window; every candidate of the ``_candidates`` sidecar is ranked, except the entity's
fit-window positives. The metric arithmetic is :func:`startup_recs.evaluation.metrics.metrics_from_hits`
(Recall@K = hits / |relevant|; NDCG@K with the ideal DCG over min(|relevant|, K); MAP, HitRate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from startup_recs.core import storage
from startup_recs.core.errors import ConfigError, DataError, ModelMismatchError
from startup_recs.evaluation.metrics import metrics_from_hits
from startup_recs.models.two_tower import TwoTowerModel, embed_all, load_encoder
from startup_recs.train.two_tower_data import TwoTowerData, load_dataset
from startup_recs.train.two_tower_dist import resolve_device


@dataclass
class Queries:
    """Evaluation queries: entity rows [q]; (query index, candidate row) pairs to exclude/find."""

    entity_rows: np.ndarray
    exclude: tuple[np.ndarray, np.ndarray]
    relevant: tuple[np.ndarray, np.ndarray]

    def __len__(self) -> int:
        return len(self.entity_rows)


def build_queries(ent: np.ndarray, cand: np.ndarray, label: np.ndarray, split: np.ndarray,
                  fit_splits: Sequence[str], eval_split: str) -> Queries:
    """Pure: pair arrays (entity row, candidate row, label, split) -> :class:`Queries`."""
    pos = label > 0
    fit = pos & np.isin(split, list(fit_splits))
    ev = pos & (split == eval_split)
    n_c = int(cand.max()) + 1 if len(cand) else 1
    fit_keys = np.unique(ent[fit].astype(np.int64) * n_c + cand[fit])
    ev_keys = np.unique(ent[ev].astype(np.int64) * n_c + cand[ev])
    ev_keys = ev_keys[~np.isin(ev_keys, fit_keys)]
    q_ent, rel_c = ev_keys // n_c, ev_keys % n_c
    rows, rel_q = np.unique(q_ent, return_inverse=True)
    fit_e, fit_c = fit_keys // n_c, fit_keys % n_c
    keep = np.isin(fit_e, rows)
    ex_q = np.searchsorted(rows, fit_e[keep])
    return Queries(rows, (ex_q, fit_c[keep]), (rel_q, rel_c))


def rank_metrics(score: Callable[[np.ndarray], torch.Tensor], queries: Queries, n_candidates: int,
                 ks: Sequence[int] = (10, 20), chunk: int = 1024) -> dict[str, float]:
    """``score(query_indices) -> [m, n_candidates]`` over chunks of queries -> mean metrics."""
    if not len(queries):
        raise DataError("no evaluation queries: the evaluated split has no new positive pairs")
    kmax = min(max(ks), n_candidates)
    ex_q, ex_c = queries.exclude
    rel_q, rel_c = queries.relevant
    n_rel = np.bincount(rel_q, minlength=len(queries)).astype(np.float64)
    sums: dict[str, float] = {}
    for start in range(0, len(queries), chunk):
        q = np.arange(start, min(start + chunk, len(queries)))
        s = score(q).float().cpu().clone()
        m = (ex_q >= q[0]) & (ex_q <= q[-1])
        s[torch.from_numpy(ex_q[m] - start), torch.from_numpy(ex_c[m])] = float("-inf")
        top = torch.topk(s, kmax, dim=1).indices.numpy()
        rel = np.zeros((len(q), n_candidates), dtype=bool)
        m = (rel_q >= q[0]) & (rel_q <= q[-1])
        rel[rel_q[m] - start, rel_c[m]] = True
        per_query = metrics_from_hits(np.take_along_axis(rel, top, axis=1), n_rel[q], ks)
        for name, values in per_query.items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
    out = {k: v / len(queries) for k, v in sums.items()}
    out["users"] = float(len(queries))
    return out


def embedding_scorer(entity_vecs: torch.Tensor, candidate_vecs: torch.Tensor,
                     queries: Queries) -> Callable[[np.ndarray], torch.Tensor]:
    """Scores = entity_vecs[query's entity row] @ candidate_vecs.T."""
    rows = torch.from_numpy(queries.entity_rows)

    def score(q: np.ndarray) -> torch.Tensor:
        return entity_vecs[rows[torch.from_numpy(q)]] @ candidate_vecs.T

    return score


def popularity_scorer(popularity: torch.Tensor) -> Callable[[np.ndarray], torch.Tensor]:
    """The baseline: every query gets the fit-window positive counts [n_c]."""

    def score(q: np.ndarray) -> torch.Tensor:
        return popularity.float()[None, :].expand(len(q), -1)

    return score


def validate(model: TwoTowerModel, data: TwoTowerData, device: torch.device | str = "cpu",
             split: str = "val", ks: Sequence[int] = (20,)) -> dict[str, float]:
    """Full-ranking metrics of ``model`` on ``split`` (exclude the entity's earlier positives)."""
    p = data.pairs
    before = {"val": ("train",), "test": ("train", "val")}[split]
    queries = build_queries(p["entity_row"].to_numpy(), p["candidate_row"].to_numpy(), p["label"].to_numpy(),
                            p["split"].to_numpy(), before, split)
    if not len(queries):
        raise DataError(f"the {split} split has no new positive pairs to evaluate on")
    ent = torch.from_numpy(embed_all(model, "entity", data.entities.take(torch.from_numpy(queries.entity_rows)),
                                     device=device))
    cand = torch.from_numpy(embed_all(model, "candidate", data.candidates, device=device))
    local = type(queries)(np.arange(len(queries)), queries.exclude, queries.relevant)
    return rank_metrics(embedding_scorer(ent, cand, local), queries, len(data.candidate_ids), ks)


# ------------------------------------------------------------------------------- saved models
def evaluate_saved(model_uri: str, config_uri: str, data_uri: str, ks: tuple[int, ...] = (10, 20, 50),
                   device: str = "cpu") -> dict[str, dict[str, float]]:
    """Recall@K / NDCG@K of a saved model on the test split, beside popularity."""
    if not storage.exists(config_uri):
        raise ConfigError(f"--config not found: {config_uri}")
    if not storage.exists(model_uri):
        raise ConfigError(f"--model not found: {model_uri}")
    config = storage.read_json(config_uri)
    if config.get("kind", "two_tower") != "two_tower" or "model" not in config:
        raise ModelMismatchError(f"{config_uri} is not a two-tower config")
    enc_uri = storage.join(config_uri.rsplit("/", 1)[0] if "/" in config_uri else ".", config["files"]["encoder"])
    encoder = load_encoder(storage.read_json(enc_uri))
    data = load_dataset(data_uri, "trainval", encoder=encoder, use_case=config["use_case"])
    if data.use_case != config["use_case"]:
        raise ModelMismatchError(f"model {config['name']} is for {config['use_case']}, the data {data_uri} for {data.use_case}")
    model = TwoTowerModel.from_config(config)
    for side, spec in (("entity", data.entity_spec), ("candidate", data.candidate_spec)):
        want = model.entity_tower.spec if side == "entity" else model.candidate_tower.spec
        if spec != want:
            raise ModelMismatchError(f"feature dimension mismatch: the {side} features of {data_uri} do not match the model")
    model.load_weights(storage.read_bytes(model_uri))
    dev = resolve_device(device)
    model.to(dev)
    result = {"two_tower": validate(model, data, dev, "test", ks)}
    p = data.pairs
    fit = p[(p["label"] > 0) & p["split"].isin(("train", "val"))]
    pop = torch.from_numpy(np.bincount(fit["candidate_row"].to_numpy(), minlength=len(data.candidate_ids)).astype(np.float32))
    queries = build_queries(p["entity_row"].to_numpy(), p["candidate_row"].to_numpy(), p["label"].to_numpy(),
                            p["split"].to_numpy(), ("train", "val"), "test")
    result["popularity"] = rank_metrics(popularity_scorer(pop), queries, len(data.candidate_ids), ks)
    return result


def format_table(result: dict[str, dict[str, float]]) -> str:
    keys = [k for k in next(iter(result.values())) if k != "users"]
    lines = ["| model | " + " | ".join(keys) + " | users |", "|---" * (len(keys) + 2) + "|"]
    for name, m in result.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + f" | {int(m['users'])} |")
    return "\n".join(lines)
