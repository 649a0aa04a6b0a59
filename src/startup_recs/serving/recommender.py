"""Recommender: route -> candidate pool -> re-rank -> answer. Shared by the predictor and evaluation.

With a ranker, the candidates it re-ranks are the hybrid pool of :mod:`startup_recs.serving.pool`
(the union of several retrievers' top-N lists, the spec the ranker was trained on), built by the
same :func:`~startup_recs.serving.pool.build_pools` for one request, a batch and evaluation.
Without a ranker the routed retriever's top ``N_RETRIEVE`` is served, as routing orders it.

``Recommender.load(dir)`` takes a models folder (with ``serving/`` data beside the models, as
``recs evaluate`` and the pipeline write it) or a published bundle (``manifest.json`` present: the
model version comes from it). Per request the cost is one ``[d] x [d, n_c]`` product (plus
``argpartition``) for the routed retriever and ``[m, d]`` products for the ranker's other
retriever scores: O(n_c * d), fine at 100k candidates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import DataError, RecsError
from startup_recs.core.usecases import get_use_case
from startup_recs.serving.candidate_match import match_table
from startup_recs.serving.data import ServingData
from startup_recs.serving.filters import CandidateFilter
from startup_recs.serving.index import top_k
from startup_recs.serving.pool import Pool, PoolSpec, build_pools
from startup_recs.serving.reciprocal import POOL as RECIPROCAL_POOL
from startup_recs.serving.reciprocal import ReciprocalScorer
from startup_recs.serving.retrievers import Retriever, load_retrievers
from startup_recs.serving.router import Router, Routing

log = logging.getLogger(__name__)

N_RETRIEVE = 200  # candidates retrieved before re-ranking
SERVING_DIR = artifacts.SERVING_DIR


class UnknownEntityError(RecsError):
    """The entity id is not known to this model (HTTP 404 online)."""


def load_reranker(models_dir: str, use_case: str) -> Any | None:
    """The :class:`~startup_recs.serving.rerank.Reranker` when its config is in the folder, else None."""
    if not storage.exists(storage.join(models_dir, artifacts.ranker_files(use_case).config)):
        return None
    from startup_recs.serving.rerank import Reranker

    return Reranker.load(models_dir, use_case)


class Recommender:
    """One use case's online model: data, retrievers, routing and an optional ranker."""

    def __init__(
        self,
        data: ServingData,
        retrievers: Mapping[str, Retriever],
        routing: Routing | None = None,
        reranker: Any | None = None,
        *,
        model_version: str = "unversioned",
        n_retrieve: int = N_RETRIEVE,
        reciprocal: ReciprocalScorer | None = None,
    ) -> None:
        self.data = data
        self.use_case = data.use_case
        self.retrievers = dict(retrievers)
        self.router = Router(self.retrievers, data, routing)
        self.reranker = reranker
        self.model_version = model_version
        self.n_retrieve = int(n_retrieve)
        # reverse use cases: fused with the forward twin's scores when a forward bundle is passed
        # (reciprocal.json fitted on validation, else the defaults: harmonic mean, fitted: false)
        self.reciprocal = reciprocal if reciprocal is not None else ReciprocalScorer()
        if reranker is not None:
            reranker.check(data)
        # per bundle, not per request: the candidates' match columns encoded once (reasons and the
        # ranker's match features) and the ids as Python strings (the answer's "id")
        self._match = match_table(data)
        self._ids = list(data.candidate_index)

    @property
    def routing(self) -> Routing:
        return self.router.routing

    @classmethod
    def load(cls, path: str, use_case: str | None = None, *, rerank: bool = True) -> Recommender:
        """From a models folder or bundle. Serving data: ``<path>/serving/``."""
        manifest_uri = storage.join(path, artifacts.MANIFEST)
        manifest = storage.read_json(manifest_uri) if storage.exists(manifest_uri) else None
        serving = storage.join(path, SERVING_DIR)
        data = ServingData.load(serving)
        if manifest is not None and manifest.get("use_case") not in (None, data.use_case):
            raise DataError(f"{path}: manifest use case {manifest.get('use_case')!r} != serving data {data.use_case!r}")
        if use_case is not None and use_case != data.use_case:
            raise DataError(f"{path}: serving data is for {data.use_case!r}, not {use_case!r}")
        version = "unversioned"
        if manifest is not None and manifest.get("version") is not None:
            v = manifest["version"]
            version = f"v{v}" if isinstance(v, int) or str(v).isdigit() else str(v)
        retrievers = load_retrievers(path, data)
        reranker = load_reranker(path, data.use_case) if rerank else None
        return cls(data, retrievers, Routing.load(path), reranker, model_version=version,
                   reciprocal=ReciprocalScorer.load(path))

    # --- one request ----------------------------------------------------------------------------
    def check_entity(self, entity_id: str) -> None:
        if self.data.knows_entity(entity_id):
            return
        if any(r.knows(entity_id) for n, r in self.retrievers.items() if n not in ("content", "popularity")):
            return
        raise UnknownEntityError(f"unknown {get_use_case(self.use_case).entity_kind} id {entity_id!r}")

    def retrieve(self, entity_id: str, route: str, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` (default :data:`N_RETRIEVE`) candidate indices and scores of the ``route``
        retriever, excluding already-seen candidates and the entity itself."""
        idx, sc = self.retrievers[route].top([entity_id], n or self.n_retrieve)
        keep = np.isfinite(sc[0])
        return idx[0][keep], sc[0][keep]

    def rerank(self, entity_id: str, cand_idx: np.ndarray) -> np.ndarray:
        """Ranker scores of an arbitrary candidate list ``cand_idx`` (``float32 [m]``; no list
        positions: every candidate counts as unlisted). Answers use :meth:`pools` instead."""
        from startup_recs.serving.ranking_features import gather_scores

        scores = gather_scores(self.retrievers, entity_id, cand_idx, self.reranker.retrievers)
        return np.asarray(self.reranker.score(entity_id, cand_idx, scores, self.data), dtype=np.float32)

    def pool_spec(self, route: str | None = None, limit: int = 0) -> PoolSpec:
        """The ranker's pool spec; the routed retriever lists at least ``limit`` candidates (so an
        answer is never shorter than the routed list alone would be)."""
        spec = self.reranker.pool_spec if self.reranker is not None else PoolSpec()
        sizes = dict(spec.sizes)
        if route is not None and sizes.get(route, 0) < limit:
            sizes[route] = int(limit)
        return PoolSpec(tuple(sizes.items()), spec.lead)

    def pools(self, entity_ids: Sequence[str], routes: Sequence[str], limit: int = 0) -> list[Pool]:
        """The hybrid pools the ranker re-ranks (one per entity; ``routes[i]`` leads pool ``i``)."""
        names = self.reranker.retrievers if self.reranker is not None else ()
        by_spec: dict[PoolSpec, list[int]] = {}
        for i, r in enumerate(routes):
            by_spec.setdefault(self.pool_spec(r, limit), []).append(i)
        out: list[Pool | None] = [None] * len(entity_ids)
        for spec, rows in by_spec.items():
            got = build_pools(self.retrievers, self.data, [entity_ids[i] for i in rows], spec,
                              routes=[routes[i] for i in rows], score_names=names)
            for i, p in zip(rows, got, strict=True):
                out[i] = p
        return out  # type: ignore[return-value]

    def rank_pool(self, pool: Pool) -> tuple[np.ndarray, np.ndarray]:
        """``(candidate indices, ranker scores)`` of a pool, best first (ties keep pool order)."""
        if not len(pool):
            return pool.cand, np.zeros(0, np.float32)
        rs = self.reranker.score_pool(pool, self.data)
        order = np.argsort(-rs, kind="stable")
        return pool.cand[order], rs[order]

    def recommend(self, entity_id: str, limit: int = 10, *, filters: CandidateFilter | None = None,
                  forward: Recommender | None = None) -> dict[str, Any]:
        """The answer object of the API (see ``docs/contracts.md``); raises
        :class:`UnknownEntityError` for an unknown id.

        ``filters`` (:mod:`startup_recs.serving.filters`) keep only the candidates that satisfy
        them: the routed pool (top :data:`N_RETRIEVE`) is filtered first; when fewer than
        ``limit`` remain, the route's retriever scores the whole catalogue and the best allowed
        candidates are taken instead (``filters.widened``). The answer then carries
        ``filters: {applied, matching, widened, short}``; ``short`` says that fewer than
        ``limit`` candidates satisfy the filters at all (``total`` < ``limit``).

        ``forward`` (reverse use cases: the forward twin's recommender) makes the answer
        reciprocal (:mod:`startup_recs.serving.reciprocal`): the re-ranked pool is ordered by the
        fused score, each candidate carries ``scores: {reverse, forward}`` (calibrated
        probabilities) and ``match_reasons_forward`` (what the candidate gets from the startup),
        and the answer ``reciprocal: {method, fitted, forward_model_version}``."""
        entity_id = str(entity_id)
        self.check_entity(entity_id)
        segment, route = self.router.route(entity_id)
        n = max(self.n_retrieve, int(limit))
        info = None
        if self.reranker is not None:
            pool = self.pools([entity_id], [route], int(limit))[0]
            if filters:
                pool, info = self._filtered_pool(entity_id, route, pool, filters, n, int(limit))
            cand, scores = self.rank_pool(pool)
            answer = self._answer(entity_id, segment, route, cand, scores, int(limit), forward, reranked=True)
        else:
            cand, scores = self.retrieve(entity_id, route, n)
            if filters:
                cand, scores, info = self._filtered(entity_id, route, cand, scores, filters, n, int(limit))
            answer = self._answer(entity_id, segment, route, cand, scores, int(limit), forward)
        if info is not None:
            answer["filters"] = {**info, "short": answer["total"] < int(limit)}
        return answer

    def _filtered(self, entity_id: str, route: str, cand: np.ndarray, scores: np.ndarray, filters: CandidateFilter,
                  n: int, limit: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The retrieved pool restricted to ``filters``; widened to the whole catalogue (one full
        score row of the route's retriever, ``O(n_c)``) when fewer than ``limit`` remain."""
        from startup_recs.serving.filters import allowed

        ok = allowed(self.data, filters)
        keep = ok[cand]
        cand, scores = cand[keep], scores[keep]
        widened = False
        if len(cand) < limit:
            row = np.array(self.retrievers[route].score([entity_id])[0], dtype=np.float32)
            row[~ok] = -np.inf
            idx, sc = top_k(row, n, [self.data.exclusions(entity_id)])
            keep = np.isfinite(sc[0])
            cand, scores, widened = idx[0][keep], sc[0][keep], True
        return cand, scores, {"applied": filters.to_dict(), "matching": int(ok.sum()), "widened": widened}

    def _filtered_pool(self, entity_id: str, route: str, pool: Pool, filters: CandidateFilter, n: int,
                       limit: int) -> tuple[Pool, dict[str, Any]]:
        """:meth:`_filtered` for the ranker's pool: its allowed candidates (scores and list positions
        kept); when fewer than ``limit`` remain, the route's best ``n`` allowed candidates of the
        whole catalogue instead (list positions of the route only, the others unlisted)."""
        from startup_recs.serving.filters import allowed
        from startup_recs.serving.ranking_features import gather_scores

        ok = allowed(self.data, filters)
        keep = ok[pool.cand]
        cand = pool.cand[keep]
        out = Pool(entity_id, cand, {k: v[keep] for k, v in pool.listed.items()},
                   {k: v[keep] for k, v in pool.scores.items()}, route)
        widened = False
        if len(cand) < limit:
            cand, _, meta = self._filtered(entity_id, route, cand, np.zeros(len(cand), np.float32), filters, n, limit)
            widened = meta["widened"]
            out = Pool(entity_id, cand, {route: np.arange(len(cand), dtype=np.int32)},
                       gather_scores(self.retrievers, entity_id, cand, self.reranker.retrievers), route)
        return out, {"applied": filters.to_dict(), "matching": int(ok.sum()), "widened": widened}

    def _answer(self, entity_id: str, segment: str, route: str, cand: np.ndarray, scores: np.ndarray,
                limit: int, forward: Recommender | None = None, *, reranked: bool = False) -> dict[str, Any]:
        """The answer object of ``cand`` / ``scores`` (best first; ``reranked``: the ranker ordered
        them), cut to ``limit`` (reciprocal with ``forward``, see :meth:`recommend`)."""
        two_sided = None
        if forward is not None and len(cand):
            # the pool the scorer was fitted on: the best POOL of the ranked list (as evaluation's pools)
            cand, scores = cand[:max(RECIPROCAL_POOL, limit)], scores[:max(RECIPROCAL_POOL, limit)]
            order, fused, p, q = self.reciprocal.rank(forward, entity_id, [self._ids[c] for c in cand.tolist()],
                                                      scores, segment)
            cand, scores = cand[order], fused[order].astype(np.float32)
            two_sided = (p[order][:limit], q[order][:limit])
        cand, scores = cand[:limit], scores[:limit]
        candidates = self._candidates(entity_id, cand, scores)
        extra: dict[str, Any] = {}
        if forward is not None:
            if two_sided is not None:
                self._two_sided(forward, entity_id, candidates, *two_sided)
            extra["reciprocal"] = {"method": self.reciprocal.method_for(segment), "fitted": self.reciprocal.fitted,
                                   "forward_model_version": forward.model_version}
        return {
            "entity_id": entity_id,
            "candidates": candidates,
            "method_used": f"{segment}:{route}",
            "segment": segment,
            "model_version": self.model_version,
            "reranked": reranked,
            "interaction_count": self.data.interaction_count(entity_id),
            "total": int(len(cand)),
            **extra,
        }

    @staticmethod
    def _two_sided(forward: Recommender, entity_id: str, candidates: list[dict[str, Any]], p: np.ndarray,
                   q: np.ndarray) -> None:
        """Both directions' probabilities and the forward match reasons (the candidate's view of
        the startup, from the forward bundle's match table) on each answer candidate, in place."""
        col = forward.data.candidate_positions([entity_id])
        for c, pi, qi in zip(candidates, p.tolist(), q.tolist(), strict=True):
            c["scores"] = {"reverse": pi, "forward": qi}
            reasons: list[str] = []
            if col[0] >= 0 and forward._match.knows(c["id"]):
                reasons = forward._match.reasons(c["id"], col)[0]
            c["match_reasons_forward"] = reasons

    def recommend_batch(self, entity_ids: Sequence[str], limit: int | Sequence[int] = 10) -> list[dict[str, Any]]:
        """:meth:`recommend` for many entities (one answer each, same order; ``limit`` one for all
        or one per entity). The entities of one route are retrieved together: one
        ``[b, d] x [d, n_c]`` product (or one ANN search) instead of ``b``. An unknown id raises
        :class:`UnknownEntityError` (the first one, as answering them in turn would).

        Answers equal :meth:`recommend`'s, except that an exact search of a batch runs one BLAS
        matrix product whose last float bits may differ from the single-row product's: a
        candidate tied with the 200th to ~1e-7 may then be swapped."""
        ids = [str(e) for e in entity_ids]
        limits = [int(limit)] * len(ids) if isinstance(limit, int | np.integer) else [int(x) for x in limit]
        if len(limits) != len(ids):
            raise DataError(f"recommend_batch: {len(limits)} limits for {len(ids)} entities")
        for e in ids:
            self.check_entity(e)
        routes = [self.router.route(e) for e in ids]
        by_route: dict[str, list[int]] = {}
        for i, (_, r) in enumerate(routes):
            by_route.setdefault(r, []).append(i)
        answers: list[dict[str, Any] | None] = [None] * len(ids)
        if self.reranker is not None:
            for route, rows in by_route.items():
                want = max(limits[i] for i in rows)
                pools = self.pools([ids[i] for i in rows], [route] * len(rows), want)
                for i, pool in zip(rows, pools, strict=True):
                    cand, scores = self.rank_pool(pool)
                    answers[i] = self._answer(ids[i], routes[i][0], route, cand, scores, limits[i], reranked=True)
            return answers  # type: ignore[return-value]
        for route, rows in by_route.items():
            want = [max(self.n_retrieve, limits[i]) for i in rows]
            idx, sc = self.retrievers[route].top([ids[i] for i in rows], max(want))
            for j, i in enumerate(rows):
                keep = np.isfinite(sc[j, : want[j]])
                cand, scores = idx[j, : want[j]][keep], sc[j, : want[j]][keep]
                answers[i] = self._answer(ids[i], routes[i][0], route, cand, scores, limits[i])
        return answers  # type: ignore[return-value]

    def _candidates(self, entity_id: str, cand: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        """The answer's candidate objects; reasons from the bundle's pre-encoded match table (the
        same strings as ``features.match.match_reasons_batch`` on the rows)."""
        reasons = self._match.reasons(entity_id, cand)
        ids = self._ids
        return [{"id": ids[c], "score": s, "rank": rank, "match_reasons": r}
                for rank, (c, s, r) in enumerate(zip(cand.tolist(), scores.tolist(), reasons, strict=True), start=1)]

    # --- batch scoring for evaluation -----------------------------------------------------------
    def routes(self, entity_ids: Sequence[str]) -> list[tuple[str, str]]:
        return [self.router.route(e) for e in entity_ids]

    def top_ranked(self, entity_ids: Sequence[str], n: int, *, limit: int | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, list[str], list[Pool]]:
        """Batch re-ranked top-``n`` for evaluation, over the pools :meth:`recommend` builds for
        a request of ``limit`` (default ``n``): ``(idx int64 [b, n], scores [b, n], method per
        entity, pools)``. ``n > limit`` reads further down the same ranked pool, which is what a
        reciprocal answer of ``limit`` re-orders."""
        if self.reranker is None:
            raise DataError("top_ranked needs a ranker")
        routes = self.routes(entity_ids)
        out_i = np.full((len(entity_ids), n), -1, np.int64)
        out_s = np.full((len(entity_ids), n), -np.inf, np.float32)
        pools = self.pools([str(e) for e in entity_ids], [r for _, r in routes], n if limit is None else limit)
        for i, pool in enumerate(pools):
            ci, cs = self.rank_pool(pool)
            m = min(n, len(ci))
            out_i[i, :m], out_s[i, :m] = ci[:m], cs[:m]
        return out_i, out_s, [f"{s}:{r}" for s, r in routes], pools

    def top_routed(self, entity_ids: Sequence[str], n: int, *, rerank: bool = False,
                   limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Batch routed (optionally re-ranked) top-``n`` for evaluation.

        Entities are grouped by route and each group scored with one matrix product. Returns
        ``(idx int64 [b, n], scores [b, n], method per entity)``; ``-1``/``-inf`` pad short rows.
        ``rerank=True`` (with a ranker): :meth:`top_ranked`, the hybrid pools of a request of
        ``limit`` re-ranked.
        """
        if rerank and self.reranker is not None:
            return self.top_ranked(entity_ids, n, limit=limit)[:3]
        routes = self.routes(entity_ids)
        out_i = np.full((len(entity_ids), n), -1, np.int64)
        out_s = np.full((len(entity_ids), n), -np.inf, np.float32)
        fetch = n
        by_route: dict[str, list[int]] = {}
        for i, (_, r) in enumerate(routes):
            by_route.setdefault(r, []).append(i)
        for r, rows in by_route.items():
            ids = [entity_ids[i] for i in rows]
            idx, sc = top_k(self.retrievers[r].score(ids), fetch, self.data.exclusion_lists(ids))
            for j, i in enumerate(rows):
                keep = np.isfinite(sc[j])
                ci, cs = idx[j][keep], sc[j][keep]
                m = min(n, len(ci))
                out_i[i, :m], out_s[i, :m] = ci[:m], cs[:m]
        return out_i, out_s, [f"{s}:{r}" for s, r in routes]
