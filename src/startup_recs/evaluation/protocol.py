"""Honest offline evaluation: temporal protocol, full ranking, every model and the routed system.

Protocol. Fit window: events before ``split_at`` (what the final models and
:class:`ServingData` saw). Test entities: those with a *positive* event at or after ``split_at``
(the event names of :func:`startup_recs.data.snapshot.positive_events`, the ranker's label
definition too). Relevant items: the candidates an entity acted on positively after the split
and had not already contacted before it (``ServingData.excluded``: the use case's
``exclude_events``, :func:`startup_recs.data.snapshot.exclusion_events`; a candidate it only
viewed can still be a hit). Each test entity gets a full ranking over every known candidate
(``ServingData.candidate_ids``) minus those it already contacted (and itself): the rule the
answers follow online, so offline and online agree.
Relevant candidates outside the candidate space stay in the denominator: no model could find them.

Metrics at each K (:mod:`startup_recs.evaluation.metrics`): ``recall@K``, ``ndcg@K``, ``map@K``,
``hitrate@K``, ``coverage@K``, over all test entities and per segment by training interaction
count (cold < 5, warm 5-19, hot 20+).

Models scored: ``popularity``, ``als``, ``two_tower``, ``content`` (+ any other registered
retriever present, e.g. ``item2item``), ``routed`` (production routing), ``routed_ranked`` (the
ranker re-ranks the routed top 200) and ``oracle`` (planted true affinity, synthetic data only).

Each segment's retriever is chosen on the *validation* window with the stage-1 models
(``--val-models``: fitted before ``val_start``; :mod:`startup_recs.evaluation.routing`), written to
``routing.json``; the test window is never used for a choice. Validation numbers go to
``metrics.json["validation"]``, apart from the test numbers.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from startup_recs.core import artifacts, storage
from startup_recs.core.config import segment_of
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.core.usecases import get_use_case
from startup_recs.data.snapshot import load_snapshot, positive_events
from startup_recs.evaluation.metrics import summarize
from startup_recs.serving.data import ServingData
from startup_recs.serving.index import top_k
from startup_recs.serving.recommender import N_RETRIEVE, Recommender, load_reranker
from startup_recs.serving.retrievers import Retriever, load_retrievers
from startup_recs.serving.router import ROUTING_FILE, Routing

log = logging.getLogger(__name__)

BASE_MODELS = ("popularity", "als", "two_tower", "content")
NON_COLLABORATIVE = ("content", "popularity")
DEFAULT_K = (10, 20, 50)


# --- protocol ----------------------------------------------------------------------------------
@dataclass
class Target:
    """Entities to evaluate in one window and their relevant candidate indices."""

    entity_ids: list[str]
    relevant: list[np.ndarray]  # candidate indices (unreachable relevant items are counted in n_relevant)
    n_relevant: np.ndarray  # int [n]
    segments: np.ndarray  # object [n]


def target_events(events: pd.DataFrame, use_case: str, imported: bool | None = None) -> list[str]:
    """The event names that make a candidate relevant: :func:`startup_recs.data.snapshot.positive_events`
    over the names present in ``events`` (the whole log, as the ranker dataset reads it).

    ``imported``: whether the log is an imported one (``Snapshot.source == "events"``). ``None``
    (source unknown) reads a log without any of the use case's positive events like an imported
    one; on a log that has them the flag changes nothing.
    """
    present = events["event"].astype(str).unique() if "event" in events else []
    return positive_events(use_case, present, True if imported is None else imported)


def target_window(events: pd.DataFrame, data: ServingData, start: pd.Timestamp, end: pd.Timestamp | None, *,
                  imported: bool | None = None) -> Target:
    """Entities with a positive event (:func:`target_events`) in ``[start, end)`` and their new
    relevant candidates.

    ``data`` must be fitted with ``until == start`` (its ``seen`` are the pre-window interactions).
    Pass ``imported=snapshot.source == "events"`` (see :func:`target_events`).
    """
    if data.until is None or data.until != start:
        raise ConfigError(f"serving data ends at {data.until}, the evaluation window starts at {start}")
    ts = pd.to_datetime(events["ts"], utc=True)
    mask = (ts >= start) if end is None else (ts >= start) & (ts < end)
    pos = target_events(events, data.use_case, imported)
    win = events.loc[mask & events["event"].astype(str).isin(pos), ["entity_id", "candidate_id"]].astype(str)
    win = win.drop_duplicates()
    ids, rel, n_rel, segs = [], [], [], []
    index = pd.Index(data.candidate_ids)
    for e, g in win.groupby("entity_id", sort=True)["candidate_id"]:
        cidx = index.get_indexer(g.to_numpy())
        done = data.excluded_of(str(e))  # already contacted: never recommended, so never a new hit
        new_known = np.setdiff1d(cidx[cidx >= 0], done)
        n_new = len(new_known) + int((cidx < 0).sum())
        if n_new == 0:
            continue
        ids.append(str(e))
        rel.append(new_known.astype(np.int64))
        n_rel.append(n_new)
        segs.append(segment_of(data.interaction_count(str(e))))
    return Target(ids, rel, np.asarray(n_rel, np.int64), np.asarray(segs, dtype=object))


def summarize_target(top: np.ndarray, t: Target, n_candidates: int, ks: Sequence[int]) -> dict[str, dict[str, float]]:
    """:func:`~startup_recs.evaluation.metrics.summarize` of a ranking ``top`` (``int [n, >= K]``
    candidate indices, ``-1`` pads) against target ``t``."""
    return summarize(top, t.relevant, n_candidates, ks, t.segments, t.n_relevant)


def _batched(ids: Sequence[str], fn: Callable[[list[str]], tuple[np.ndarray, np.ndarray]], n: int,
             batch: int) -> np.ndarray:
    out = np.full((len(ids), n), -1, np.int64)
    for lo in range(0, len(ids), batch):
        chunk = list(ids[lo: lo + batch])
        idx, sc = fn(chunk)
        idx = np.where(np.isfinite(sc), idx, -1)
        out[lo: lo + len(chunk), : idx.shape[1]] = idx
    return out


def retriever_top(r: Retriever, data: ServingData, ids: Sequence[str], n: int, batch: int = 256) -> np.ndarray:
    """Top-``n`` candidate indices per entity (``-1`` pads), seen candidates and self excluded;
    scored in entity batches (one ``[b, d] x [d, n_c]`` product each)."""
    return _batched(ids, lambda c: top_k(r.score(c), n, data.exclusion_lists(c)), n, batch)


def oracle_top(oracle: pd.DataFrame, data: ServingData, ids: Sequence[str], n: int, rank: str = "rank") -> np.ndarray:
    """The planted-affinity ranking (``rank`` order; ``mutual_rank``: the mutual ceiling), seen
    candidates excluded."""
    out = np.full((len(ids), n), -1, np.int64)
    o = oracle.dropna(subset=[rank]).sort_values(["entity_id", rank])
    groups = {str(e): g for e, g in o.groupby("entity_id", sort=False)["candidate_id"]}
    for i, e in enumerate(ids):
        g = groups.get(e)
        if g is None:
            continue
        c = data.candidate_positions(g.astype(str).tolist())
        c = c[(c >= 0) & ~np.isin(c, data.exclusions(e))][:n]
        out[i, : len(c)] = c
    return out


def read_oracle(uri: str, use_case: str) -> pd.DataFrame:
    if not storage.exists(uri):
        raise DataError(f"{uri}: no such oracle file")
    df = storage.read_table(uri).to_pandas()
    missing = {"entity_id", "candidate_id", "rank"} - set(df.columns)
    if missing:
        raise DataError(f"{uri}: oracle lacks column(s) {sorted(missing)}")
    if "use_case" in df.columns:
        df = df[df["use_case"] == use_case]
    return df


def score_models(data: ServingData, retrievers: dict[str, Retriever], t: Target, ks: Sequence[int], *,
                 routing: Routing, reranker: Any | None = None, oracle: pd.DataFrame | None = None,
                 batch: int = 256, mutual: Target | None = None,
                 extra: Mapping[str, Callable[[list[str], int], np.ndarray]] | None = None,
                 info: dict[str, Any] | None = None,
                 ) -> tuple[dict[str, dict], dict[str, float], dict[str, int]]:
    """Metrics of every model on target ``t``: ``(models, seconds per model, route counts)``.

    ``mutual`` (:func:`startup_recs.evaluation.mutual.mutual_target`): each model is also scored
    on it, as ``mutual_<metric>`` keys beside the one-sided ones (one ranking per entity of
    either target). ``extra``: more models, ``name -> f(entity_ids, n) -> top int [b, n]``
    (``-1`` pads), e.g. the reciprocal scorer.

    With a ranker, ``routed_ranked`` re-ranks the hybrid pools (:meth:`Recommender.top_ranked`,
    the serving code). With an oracle, ``oracle@pool`` re-ranks those same pools (the routed
    lists without a ranker) by planted affinity: the ranker's ceiling
    (:mod:`startup_recs.evaluation.ceiling`). ``info`` (optional) receives the pool sizes."""
    from startup_recs.evaluation.mutual import prefixed

    kmax = max(ks)
    models: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    ids = list(t.entity_ids)
    where = {e: i for i, e in enumerate(ids)}
    for e in mutual.entity_ids if mutual is not None else ():
        if e not in where:
            where[e] = len(ids)
            ids.append(e)
    rows_t = np.arange(len(t.entity_ids))
    rows_m = np.array([where[e] for e in mutual.entity_ids], np.int64) if mutual is not None else None

    def score(name: str, top: np.ndarray) -> None:
        models[name] = summarize_target(top[rows_t], t, data.n_candidates, ks)
        if mutual is not None:
            for seg, vals in prefixed(summarize_target(top[rows_m], mutual, data.n_candidates, ks)).items():
                models[name].setdefault(seg, {}).update(vals)

    names = [n for n in BASE_MODELS if n in retrievers] + [n for n in retrievers if n not in BASE_MODELS]
    for name in names:
        t0 = time.perf_counter()
        score(name, retriever_top(retrievers[name], data, ids, kmax, batch))
        seconds[name] = time.perf_counter() - t0
    rec = Recommender(data, retrievers, routing, reranker)
    t0 = time.perf_counter()
    top, _, methods = rec.top_routed(ids, kmax)
    score("routed", top)
    seconds["routed"] = time.perf_counter() - t0
    methods = methods[: len(t.entity_ids)]
    routes = pd.Series(methods, dtype=object).value_counts().to_dict() if methods else {}
    pools = [top[i][top[i] >= 0] for i in range(len(top))]  # without a ranker: the routed lists
    if reranker is not None:
        t0 = time.perf_counter()
        top, _, _, got = rec.top_ranked(ids, kmax)
        pools = [p.cand for p in got]
        score("routed_ranked", top)
        seconds["routed_ranked"] = time.perf_counter() - t0
    for name, fn in (extra or {}).items():
        t0 = time.perf_counter()
        score(name, fn(ids, kmax))
        seconds[name] = time.perf_counter() - t0
    if oracle is not None and len(oracle):
        score("oracle", oracle_top(oracle, data, ids, kmax))
        if "mutual_rank" in oracle.columns and oracle["mutual_rank"].notna().any():
            score("oracle_mutual", oracle_top(oracle, data, ids, kmax, rank="mutual_rank"))
        from startup_recs.evaluation import ceiling

        score("oracle@pool", ceiling.rerank_by_affinity(pools, ids, ceiling.oracle_affinity(oracle, data), kmax))
    if info is not None:
        mine = [pools[i] for i in rows_t]
        info["pool"] = {"mean_size": float(np.mean([len(p) for p in mine])) if mine else 0.0,
                        "spec": (reranker.pool_spec.to_dict() if reranker is not None
                                 else {"routed_top": N_RETRIEVE})}
    return models, seconds, {str(k): int(v) for k, v in routes.items()}


def evaluate(snapshot: str, models: str, use_case: str, out: str, *, val_models: str | None = None,
             k: Sequence[int] = DEFAULT_K, split_at: Any = None, test_days: float = 14.0,
             val_days: float = 14.0, oracle: str | None = None, batch: int = 256,
             save_serving: bool = True, forward_models: str | None = None,
             forward_val_models: str | None = None) -> dict[str, Any]:
    """Run the protocol; write ``metrics.json``, ``report.md``, ``routing.json`` and PNG plots
    into ``out``, and ``serving/`` + ``routing.json`` into ``models`` (the publishable folder).

    ``forward_models`` (a reverse use case; the forward twin's final models folder, with
    ``forward_val_models`` its stage-1 one): the reciprocal scorer is fitted on validation
    (:mod:`startup_recs.evaluation.reciprocal_fit`), saved as ``reciprocal.json`` into ``models``
    and scored on test as the ``reciprocal`` model."""
    from startup_recs.data.split import TimeSplit
    from startup_recs.evaluation.routing import choose_routing

    t_start = time.perf_counter()
    uc = get_use_case(use_case)
    ks = sorted({int(x) for x in k})
    if not ks or ks[0] < 1:
        raise ConfigError(f"--k must be positive integers (got {k})")
    snap = load_snapshot(snapshot)
    events = snap.events(uc.name)
    split = TimeSplit.resolve(events["ts"], split_at, test_days, val_days)
    data = ServingData.from_snapshot(snap, uc.name, split.split_at, events=events)
    # load (and so check use case / dimensions of) every model before writing anything beside them
    retrievers = load_retrievers(models, data)
    reranker = load_reranker(models, uc.name)
    if not any(n not in NON_COLLABORATIVE for n in retrievers):
        log.warning("%s holds no learned retriever for %s: only content and popularity are scored", models, uc.name)
    oracle_df = read_oracle(oracle, uc.name) if oracle else None
    if save_serving:
        data.save(storage.join(models, artifacts.SERVING_DIR))

    validation: dict[str, Any] | None = None
    if val_models:
        routing, validation = choose_routing(events, snap, uc.name, split, val_models, ks, batch)
    else:
        routing = Routing.load(models)
        if routing.chosen_on == "default":
            log.warning("no --val-models: the warm route is the default (%s), not chosen on validation", routing.warm)
    routing.save(models)
    routing.save(out)

    t = target_window(events, data, split.split_at, None, imported=snap.source == "events")
    if not t.entity_ids:
        raise DataError(f"empty test set: no positive event at or after {split.split_at.isoformat()}")
    from startup_recs.evaluation.mutual import mutual_target

    mt = mutual_target(snap, data, split.split_at, None)  # reverse use cases of app data: both sides acted
    extra, scorer = _reciprocal(snap, uc.name, split, data, retrievers, routing, reranker, models, ks,
                                val_models, forward_models, forward_val_models)
    pool_info: dict[str, Any] = {}
    scored, seconds, routes = score_models(data, retrievers, t, ks, routing=routing, reranker=reranker,
                                           oracle=oracle_df, batch=batch, mutual=mt, extra=extra, info=pool_info)
    metrics: dict[str, Any] = {
        "use_case": uc.name,
        "k": ks,
        "split_at": split.split_at.isoformat(),
        "val_start": split.val_start.isoformat(),
        "n_candidates": data.n_candidates,
        "n_test_entities": len(t.entity_ids),
        "protocol": "temporal; relevant = positive events after split_at on candidates not already contacted "
                    "before it; full ranking over all known candidates minus already contacted",
        "exclude_events": None if data.exclude_events is None else list(data.exclude_events),
        **({"n_mutual_entities": len(mt.entity_ids),
            "mutual_protocol": "mutual_* metrics: relevant = pairs where the startup acted (contact, reply) and "
                               "the candidate acted (apply, contact, reply) after split_at"} if mt is not None else {}),
        "routing": routing.to_dict(),
        "routes": routes,
        "models": scored,
        "pool": pool_info.get("pool", {}),
        "seconds": {**seconds, "total": time.perf_counter() - t_start},
    }
    if "oracle@pool" in scored:
        from startup_recs.evaluation.ceiling import ranking_efficiency

        ranked = "routed_ranked" if "routed_ranked" in scored else "routed"
        metrics["ranking_efficiency"] = {"ranked": ranked, "ceiling": "oracle@pool", "metric": "ndcg@10",
                                         **ranking_efficiency(scored, ranked=ranked)}
    from startup_recs.evaluation import ann_check

    # exact vs approximate retrieval of each learned retriever: ann_recall@200 and the NDCG change
    metrics["ann"] = ann_check.compare(data, retrievers, t.entity_ids,
                                       lambda top: summarize_target(top, t, data.n_candidates, ks), ks)
    if validation is not None:
        metrics["validation"] = validation
    if scorer is not None:
        metrics["reciprocal"] = scorer.to_dict()
    storage.write_json(storage.join(out, artifacts.METRICS), metrics)
    from startup_recs.evaluation import report as evaluate_report

    evaluate_report.write_report(metrics, out, models_dir=models)
    log.info("evaluation of %s: %d test entities, %d candidates, %.1fs", uc.name, len(t.entity_ids),
             data.n_candidates, metrics["seconds"]["total"])
    return metrics


def _reciprocal(snap: Any, use_case: str, split: Any, data: ServingData, retrievers: dict[str, Retriever],
                routing: Routing, reranker: Any, models: str, ks: Sequence[int], val_models: str | None,
                forward_models: str | None, forward_val_models: str | None) -> tuple[dict[str, Callable], Any]:
    """``({"reciprocal": ranking}, scorer)`` for a reverse use case given its forward twin's
    models (fitted on validation when both stage-1 folders are given), else ``({}, None)``."""
    from startup_recs.core.usecases import twin_of

    uc = get_use_case(use_case)
    if not forward_models or uc.direction != "reverse":
        return {}, None
    from startup_recs.evaluation import reciprocal_fit
    from startup_recs.serving.reciprocal import ReciprocalScorer

    twin = twin_of(uc.name)
    forward = Recommender.load(forward_models, twin)
    if val_models and forward_val_models:
        scorer = reciprocal_fit.fit(snap, uc.name, split, reciprocal_fit.stage1(snap, uc.name, split, val_models, routing),
                                    Recommender.load(forward_val_models, twin), ks)
    else:
        log.warning("reciprocal %s: no stage-1 models of both directions; the defaults (harmonic) are scored", uc.name)
        scorer = ReciprocalScorer(forward_use_case=twin)
    scorer.save(models)
    final = Recommender(data, retrievers, routing, reranker)
    return {"reciprocal": lambda ids, n: reciprocal_fit.ranking(final, forward, scorer, ids, n)}, scorer


def cli_evaluate(args: argparse.Namespace) -> int:
    """``recs evaluate``: metrics.json, report.md and plots in ``--out``."""
    try:
        ks = [int(x) for x in str(args.k).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--k must be comma-separated integers (got {args.k!r})") from None
    if not storage.is_s3(args.out):
        Path(storage.local(args.out)).mkdir(parents=True, exist_ok=True)
    m = evaluate(args.snapshot, args.models, args.use_case, args.out, val_models=getattr(args, "val_models", None),
                 k=ks, split_at=args.split_at, test_days=args.test_days, val_days=args.val_days,
                 oracle=args.oracle, forward_models=getattr(args, "forward_models", None),
                 forward_val_models=getattr(args, "forward_val_models", None))
    from startup_recs.evaluation.report import headline_table

    print(headline_table(m))
    print(f"-> {storage.join(args.out, artifacts.METRICS)}, {storage.join(args.out, artifacts.REPORT)}")
    return 0


__all__ = ["DEFAULT_K", "ROUTING_FILE", "Target", "evaluate", "retriever_top", "score_models", "summarize_target",
           "target_events", "target_window"]
