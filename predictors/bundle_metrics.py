"""``recs_bundle_fallback``: 1 while a model serves an older bundle than ``latest`` names.

Why a collector read at scrape time and not a gauge set on swap: the state changes without a
swap (``latest`` moves to a bundle that fails to verify while the old one keeps serving), and
the slot (:class:`startup_recs.serving.reload.BundleSlot`) already knows it. An alert on this
metric tells an operator that a publish is broken although every pod still answers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from startup_recs.serving.reload import BundleSlot

NAME = "recs_bundle_fallback"


class FallbackCollector(Collector):
    """One sample per served slot: ``model`` (KServe model name), ``arm`` (control | treatment)."""

    def __init__(self, slots: Sequence[tuple[str, str, BundleSlot]]) -> None:
        self.slots = list(slots)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(NAME, "1 while the bundle served is not the one 'latest' names (it did not "
                              "verify; an older version that verifies answers instead)", labels=["model", "arm"])
        for model, arm, slot in self.slots:
            g.add_metric([model, arm], 1.0 if slot.fallback else 0.0)
        yield g

    def describe(self) -> list:
        return []  # no collect() at registration time


_registered: FallbackCollector | None = None


def register(slots: Sequence[tuple[str, str, BundleSlot]]) -> FallbackCollector:
    """Expose the slots' fallback state on the default registry (kserve's ``/metrics``); a second
    call (tests serving twice in one process) replaces the first."""
    global _registered
    if _registered is not None:
        REGISTRY.unregister(_registered)
    _registered = FallbackCollector(slots)
    REGISTRY.register(_registered)
    return _registered
