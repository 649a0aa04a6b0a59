"""Routing: which retriever answers an entity, by its training interaction count.

Segments (``startup_recs.core.config.segment_of``): cold < 5, warm 5-19, hot 20+. Each segment has a
preference chain; the first retriever that is loaded and ``knows`` the entity answers:

- cold: content (feature match; popularity when there are no features);
- warm: the retriever chosen on *validation* (``routing.json``), then the other of two-tower/ALS,
  then content;
- hot: two-tower, then ALS, then content.

``popularity`` ends every chain, so an answer always exists. ``routing.json`` may also name a
``cold`` or ``hot`` retriever (evaluation chooses one per segment on validation); absent keys keep
the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from startup_recs.core import artifacts, storage
from startup_recs.core.config import segment_of
from startup_recs.core.errors import ConfigError
from startup_recs.serving.data import ServingData
from startup_recs.serving.retrievers import Retriever

ROUTING_FILE = artifacts.ROUTING
SEGMENTS = ("cold", "warm", "hot")
COLLABORATIVE = ("two_tower", "als")  # the learned retrievers the warm/hot chains fall back over
DEFAULT_CHAINS: dict[str, tuple[str, ...]] = {
    "cold": ("content", "popularity"),
    "warm": ("two_tower", "als", "content", "popularity"),
    "hot": ("two_tower", "als", "content", "popularity"),
}


@dataclass
class Routing:
    """What ``routing.json`` holds: ``{"warm": name, "chosen_on": "validation"|"default",
    "val_ndcg@10": {name: x}}`` (+ optional ``cold`` / ``hot``)."""

    warm: str = "two_tower"
    chosen_on: str = "default"
    val_ndcg: dict[str, float] = field(default_factory=dict)
    cold: str | None = None
    hot: str | None = None
    val_by_segment: dict[str, dict[str, float]] = field(default_factory=dict)

    def chain(self, segment: str) -> list[str]:
        """Retriever names to try for ``segment``, best first (no duplicates)."""
        if segment not in DEFAULT_CHAINS:
            raise ConfigError(f"unknown segment {segment!r}")
        first = {"cold": self.cold, "warm": self.warm, "hot": self.hot}[segment]
        out = [first] if first else []
        out += [r for r in DEFAULT_CHAINS[segment] if r not in out]
        return out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"warm": self.warm, "chosen_on": self.chosen_on, "val_ndcg@10": self.val_ndcg}
        for seg in ("cold", "hot"):
            if getattr(self, seg):
                d[seg] = getattr(self, seg)
        if self.val_by_segment:
            d["val_ndcg@10_by_segment"] = self.val_by_segment
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Routing:
        if not isinstance(d, Mapping) or not isinstance(d.get("warm", "two_tower"), str):
            raise ConfigError("routing.json: expected an object with a string 'warm'")
        return cls(warm=d.get("warm", "two_tower"), chosen_on=d.get("chosen_on", "default"),
                   val_ndcg=dict(d.get("val_ndcg@10", {})), cold=d.get("cold"), hot=d.get("hot"),
                   val_by_segment=dict(d.get("val_ndcg@10_by_segment", {})))

    @classmethod
    def load(cls, models_dir: str) -> Routing:
        """``routing.json`` of a models folder or bundle, or the defaults when it is absent."""
        uri = storage.join(models_dir, ROUTING_FILE)
        return cls.from_dict(storage.read_json(uri)) if storage.exists(uri) else cls()

    def save(self, models_dir: str) -> None:
        storage.write_json(storage.join(models_dir, ROUTING_FILE), self.to_dict())


class Router:
    """Picks ``(segment, retriever name)`` for an entity from the loaded retrievers."""

    def __init__(self, retrievers: Mapping[str, Retriever], data: ServingData, routing: Routing | None = None) -> None:
        self.retrievers = retrievers
        self.data = data
        self.routing = routing or Routing()

    def segment(self, entity_id: str) -> str:
        return segment_of(self.data.interaction_count(entity_id))

    def route(self, entity_id: str) -> tuple[str, str]:
        """``(segment, retriever)``: the first retriever of the segment's chain that knows it."""
        seg = self.segment(entity_id)
        for name in self.routing.chain(seg):
            r = self.retrievers.get(name)
            if r is not None and r.knows(entity_id):
                return seg, name
        raise ConfigError("no retriever loaded (popularity is missing from the registry)")
