"""The hybrid candidate pool: what the ranker re-ranks, in serving and in evaluation alike.

One entity's pool is the deduplicated union of several retrievers' top-N lists (``PoolSpec``:
``{"content": 200, "two_tower": 100, ...}``), not only the routed retriever's top 200: on the
demo data the routed (content) top 200 holds 34 % of the test positives, the union of content
200 + two-tower 100 + ALS 100 holds 40 %, and the ranker cannot rank what is not in its pool.
Routing still decides two things: which retriever's list leads the union (ties and pool order),
and the answer when no ranker is loaded (then the routed list alone is served, as before).

Every caller builds pools with :func:`build_pools`: ``Recommender.recommend`` (one entity),
``Recommender.top_routed`` (evaluation, entity batches) and the ranker's trainer (validation
lists). So the pool an entity gets offline is, candidate for candidate, the one it gets online
(tested in ``tests/unit/test_pool.py``).

A retriever that does not ``know`` the entity contributes nothing (its zeros are not a list);
``popularity`` contributes only if the spec names it. Excluded candidates (already contacted,
``ServingData.exclusions``) and the entity itself are never in a pool. Each :class:`Pool` also carries every named retriever's score of each pool
candidate and its position in that retriever's own list (the ranker's features), so nothing is
scored twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from startup_recs.core.errors import ConfigError
from startup_recs.serving.data import ServingData
from startup_recs.serving.retrievers import Retriever

# Default union (retriever -> top-N). Content leads: on the demo data it is the strongest
# single list for every segment; the learned retrievers add what the feature match misses.
DEFAULT_SIZES: dict[str, int] = {"content": 200, "two_tower": 100, "als": 100, "item2item": 50}
# Position given to a pool candidate that is not in a retriever's own top-N list.
NOT_LISTED = -1


@dataclass(frozen=True)
class PoolSpec:
    """Which retrievers' top-N lists make the pool: ``sizes`` = ((name, N), ...) in priority order.

    ``lead`` (default True): the entity's routed retriever's list comes first in the union (only
    the order of the candidates changes, not the set).
    """

    sizes: tuple[tuple[str, int], ...] = tuple(DEFAULT_SIZES.items())
    lead: bool = True

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for name, n in self.sizes:
            if int(n) < 0:
                raise ConfigError(f"pool size of {name!r} must be >= 0, got {n}")
            if name in seen:
                raise ConfigError(f"pool names {name!r} twice")
            seen.add(name)

    @classmethod
    def of(cls, sizes: Mapping[str, int] | PoolSpec | None) -> PoolSpec:
        """From a ``{name: N}`` mapping (order kept), a spec, or ``None`` (the defaults)."""
        if isinstance(sizes, PoolSpec):
            return sizes
        if sizes is None:
            return cls()
        return cls(tuple((str(k), int(v)) for k, v in sizes.items()))

    @property
    def names(self) -> list[str]:
        return [n for n, k in self.sizes if k > 0]

    @property
    def max_size(self) -> int:
        return int(sum(k for _, k in self.sizes))

    def to_dict(self) -> dict[str, Any]:
        """``{"sizes": [[name, N], ...], "lead": bool}``: a list, so JSON keeps the priority order."""
        return {"sizes": [[n, int(k)] for n, k in self.sizes], "lead": self.lead}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PoolSpec:
        """Inverse of :meth:`to_dict` (a ``{name: N}`` mapping is accepted too); empty = defaults."""
        if not d:
            return cls()
        sizes = d.get("sizes") or {}
        items = sizes.items() if isinstance(sizes, Mapping) else [tuple(x) for x in sizes]
        return cls(tuple((str(k), int(v)) for k, v in items), bool(d.get("lead", True)))


@dataclass
class Pool:
    """One entity's pool.

    ``cand`` int64 [m]: candidate indices (union order, no duplicates); ``listed`` name -> int32 [m]:
    position of each candidate in that retriever's own top-N (0 = its best, :data:`NOT_LISTED`
    when absent); ``scores`` name -> float32 [m]: that retriever's score of each candidate (only
    for retrievers that know the entity). ``route``: the retriever that led the union.
    """

    entity_id: str
    cand: np.ndarray
    listed: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    route: str | None = None

    def __len__(self) -> int:
        return int(len(self.cand))


def _order(spec: PoolSpec, route: str | None) -> list[tuple[str, int]]:
    items = [(n, int(k)) for n, k in spec.sizes if int(k) > 0]
    if spec.lead and route is not None:
        items.sort(key=lambda nk: nk[0] != route)  # stable: the routed list first, the rest as given
    return items


def _union(lists: Sequence[np.ndarray]) -> np.ndarray:
    """Deduplicated concatenation, first occurrence kept, in order: ``int64 [m]``."""
    if not lists:
        return np.zeros(0, np.int64)
    allc = np.concatenate(lists).astype(np.int64)
    _, first = np.unique(allc, return_index=True)
    return allc[np.sort(first)]


def _positions(row: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Position of each of ``cand`` in the ranked list ``row`` (-1 pads it), :data:`NOT_LISTED`
    where absent: ``int32 [len(cand)]`` by one sort and a binary search (no Python loop)."""
    valid = row[row >= 0]
    out = np.full(len(cand), NOT_LISTED, np.int32)
    if not len(valid) or not len(cand):
        return out
    order = np.argsort(valid, kind="stable")
    sv = valid[order]
    at = np.minimum(np.searchsorted(sv, cand), len(sv) - 1)
    hit = sv[at] == cand
    out[hit] = order[at[hit]]
    return out


def build_pools(retrievers: Mapping[str, Retriever], data: ServingData, entity_ids: Sequence[str],
                spec: PoolSpec | Mapping[str, int] | None = None, *, routes: Sequence[str | None] | None = None,
                score_names: Sequence[str] = (), chunk: int = 256) -> list[Pool]:
    """Pools of ``entity_ids`` (one :class:`Pool` each, same order).

    ``routes[i]``: the routed retriever of entity ``i`` (its list leads the union; ``None`` = spec
    order). ``score_names``: retrievers whose scores of every pool candidate the caller needs (the
    ranker's), beside the pool's own. Cost per entity: one ``top`` per pool retriever (batched by
    ``chunk``) plus ``score_at`` of the union (``m`` <= :attr:`PoolSpec.max_size`) per scored
    retriever.
    """
    spec = PoolSpec.of(spec)
    ids = [str(e) for e in entity_ids]
    if routes is None:
        routes = [None] * len(ids)
    if len(routes) != len(ids):
        raise ConfigError("build_pools: one route per entity")
    pool_names = [n for n in spec.names if n in retrievers]
    want_scores = list(dict.fromkeys([*pool_names, *[n for n in score_names if n in retrievers]]))
    out: list[Pool] = []
    for lo in range(0, len(ids), chunk):
        batch = ids[lo:lo + chunk]
        tops: dict[str, np.ndarray] = {}
        for n in pool_names:
            k = dict(spec.sizes)[n]
            idx, sc = retrievers[n].top(batch, k)
            tops[n] = np.where(np.isfinite(sc), idx, -1)
        for j, e in enumerate(batch):
            knows = {n: retrievers[n].knows(e) for n in want_scores}
            lists = [tops[n][j][tops[n][j] >= 0] for n, _k in _order(spec, routes[lo + j]) if n in tops and knows[n]]
            cand = _union(lists)
            listed = {n: _positions(tops[n][j], cand) if knows[n] else np.full(len(cand), NOT_LISTED, np.int32)
                      for n in pool_names}
            scores = {n: np.asarray(retrievers[n].score_at(e, cand), np.float32)
                      for n in want_scores if knows[n] and len(cand)}
            out.append(Pool(e, cand, listed, scores, routes[lo + j]))
    return out


def build_pool(retrievers: Mapping[str, Retriever], data: ServingData, entity_id: str,
               spec: PoolSpec | Mapping[str, int] | None = None, *, route: str | None = None,
               score_names: Sequence[str] = ()) -> Pool:
    """:func:`build_pools` for one entity (the online path: the very same code)."""
    return build_pools(retrievers, data, [entity_id], spec, routes=[route], score_names=score_names)[0]
