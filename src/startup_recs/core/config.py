"""Tunable constants that are configuration, not code: event weights and routing thresholds.

Event weights can be overridden with the ``RECS_EVENT_WEIGHTS`` environment variable holding a
JSON object (e.g. ``{"view": 0.5}``), or a path to such a JSON file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from startup_recs.core.errors import ConfigError

# Strength of each implicit-feedback event (view < click < save < contact/apply).
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "save": 3.0,
    "contact": 5.0,
    "apply": 5.0,
    "apply_received": 5.0,
    "reply": 3.0,  # an answer to the other side's first move (contact or application)
    "interaction": 1.0,  # an imported log without an event column
}

# Routing segments by the entity's training interaction count: cold < 5 <= warm < 20 <= hot.
COLD_MAX = 5
HOT_MIN = 20


def thread_count(text: str | None) -> int | None:
    """A thread-count setting such as ``OMP_NUM_THREADS`` as a positive int; ``None`` when unset,
    empty, not a number or 0 (the libraries' own default then applies)."""
    text = (text or "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def segment_of(count: int) -> str:
    """``"cold"`` (< 5 interactions), ``"warm"`` (5-19) or ``"hot"`` (20+)."""
    if count < COLD_MAX:
        return "cold"
    return "warm" if count < HOT_MIN else "hot"


def event_weights(override: dict[str, float] | str | None = None) -> dict[str, float]:
    """The active event weights: defaults, then ``RECS_EVENT_WEIGHTS``, then ``override``."""
    weights = dict(DEFAULT_EVENT_WEIGHTS)
    for source in (os.environ.get("RECS_EVENT_WEIGHTS"), override):
        if not source:
            continue
        if isinstance(source, str):
            text = Path(source).read_text() if Path(source).is_file() else source
            try:
                source = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"event weights are not valid JSON: {exc}") from None
        if not isinstance(source, dict) or not all(
            isinstance(v, int | float) and v >= 0 for v in source.values()
        ):
            raise ConfigError("event weights must be a JSON object of non-negative numbers")
        weights.update({str(k): float(v) for k, v in source.items()})
    return weights
