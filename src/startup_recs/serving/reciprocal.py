"""Reciprocal scoring: a reverse answer ordered by both sides' interest.

What: for a startup ``s`` and its reverse pool (the routed, re-ranked top :data:`POOL` candidates
``u_1..u_m`` with reverse scores ``r_i``), the forward twin's bundle says how much each ``u_i``
wants ``s``; the two are turned into probabilities and fused:

- reverse feature ``x_r`` = the z-score of ``r_i`` within the pool (scale-free, whatever
  retriever or ranker produced it); ``p_i = sigmoid(a_r * x_r + b_r)`` ~ P(the startup acts);
- forward feature ``x_f`` = ``logit`` of ``s``'s percentile among all startups in ``u_i``'s row of
  the forward bundle's routed retriever (``u_i``'s own segment and route; 1 = ``s`` is ``u_i``'s
  favourite); ``q_i = sigmoid(a_f * x_f + b_f)`` ~ P(the candidate acts). A startup the
  forward bundle does not know gets the forward prior ``q = prior``;
- fusion (:data:`METHODS`): ``harmonic`` ``2pq / (p + q)``, ``product`` ``p q``, or ``learned``
  ``sigmoid(w0 + w1 logit p + w2 logit q)``; per entity segment (cold / warm / hot) the
  validation may instead keep the one-sided order (:data:`REVERSE_ONLY`, ``p`` alone): a cold
  startup is new to the forward bundle too, whose percentiles then only add noise.

The calibrations (``a``, ``b``), the learned weights, the method and each segment's choice
(``by_segment``) are fitted on the validation
window with the stage-1 models of both directions (:mod:`startup_recs.evaluation.reciprocal_fit`)
and saved as ``reciprocal.json`` in the reverse models folder (:data:`FILE`); without one the
defaults below apply (identity calibration, harmonic mean) and the answer says ``fitted: false``.

Shapes and cost: ``m`` pool candidates -> one ``[m, d] x [d, n_s]`` product of the forward
retriever (grouped by the candidates' forward routes) and an ``O(m * n_s)`` comparison for the
percentiles: ~5 ms for 200 candidates and 5k startups.

Why: a startup wants candidates who answer; the mutual metrics
(:mod:`startup_recs.evaluation.mutual`) measure it, the ``reciprocal`` model row scores this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from startup_recs.core import storage
from startup_recs.core.errors import DataError

FILE = "reciprocal.json"
FORMAT = 1
METHODS = ("harmonic", "product", "learned")
REVERSE_ONLY = "reverse_only"  # a segment's choice that keeps the one-sided (reverse) order
POOL = 200  # the reverse pool fused (the routed top N_RETRIEVE, re-ranked)
EPS = 1e-4  # percentiles and probabilities are clipped to [EPS, 1 - EPS] before a logit


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Calibration:
    """``P = sigmoid(a * x + b)`` (Platt scaling); ``prior``: P when there is no feature."""

    a: float = 1.0
    b: float = 0.0
    prior: float = 0.5

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        out = _sigmoid(self.a * np.nan_to_num(x) + self.b)
        return np.where(np.isfinite(x), out, self.prior)


def fuse(method: str, p: np.ndarray, q: np.ndarray, weights: Sequence[float] = (0.0, 1.0, 1.0)) -> np.ndarray:
    """Fused score ``float64 [m]`` of calibrated ``p`` (reverse) and ``q`` (forward);
    :data:`REVERSE_ONLY` is ``p`` itself."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if method == REVERSE_ONLY:
        return p
    if method == "harmonic":
        return 2.0 * p * q / np.maximum(p + q, 1e-12)
    if method == "product":
        return p * q
    if method == "learned":
        w0, w1, w2 = (float(w) for w in weights)
        return _sigmoid(w0 + w1 * logit(p) + w2 * logit(q))
    raise DataError(f"unknown reciprocal fusion {method!r}; expected one of: {', '.join((*METHODS, REVERSE_ONLY))}")


def pool_z(scores: np.ndarray) -> np.ndarray:
    """The reverse feature: z-scores within one pool (0 for a pool of one or of equal scores)."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) < 2:
        return np.zeros(len(s))
    sd = s.std()
    return (s - s.mean()) / sd if sd > 0 else np.zeros(len(s))


def forward_percentiles(forward: Any, users: Sequence[str], startups: Sequence[str], chunk: int = 256) -> np.ndarray:
    """``float64 [n]``: for each pair ``(users[i], startups[i])``, the share of the forward
    bundle's startups that ``users[i]``'s routed forward retriever scores below ``startups[i]``
    (ties count half); NaN where the forward bundle does not know the startup.

    ``forward``: the forward twin's :class:`~startup_recs.serving.recommender.Recommender`.
    Users are grouped by forward route and scored in chunks of ``chunk`` (one full row each)."""
    users = [str(u) for u in users]
    col = forward.data.candidate_positions([str(s) for s in startups])
    out = np.full(len(users), np.nan)
    uniq = list(dict.fromkeys(users))
    row_of = {u: i for i, u in enumerate(uniq)}
    pair_user = np.array([row_of[u] for u in users], np.int64)
    by_route: dict[str, list[int]] = {}
    for i, u in enumerate(uniq):
        by_route.setdefault(forward.router.route(u)[1], []).append(i)
    n_s = max(forward.data.n_candidates, 1)
    for route, rows in by_route.items():
        retriever = forward.retrievers[route]
        for lo in range(0, len(rows), chunk):
            part = np.asarray(rows[lo:lo + chunk], np.int64)
            full = np.asarray(retriever.score([uniq[i] for i in part]), dtype=np.float32)
            local = np.full(len(uniq), -1, np.int64)
            local[part] = np.arange(len(part))
            pairs = np.flatnonzero((local[pair_user] >= 0) & (col >= 0))
            if not len(pairs):
                continue
            r = local[pair_user[pairs]]
            v = full[r, col[pairs]]
            step = max(1, (1 << 24) // n_s)  # [step, n_s] comparisons at a time: ~16M cells
            for a in range(0, len(pairs), step):
                sl = slice(a, a + step)
                block = full[r[sl]]
                below = (block < v[sl, None]).sum(axis=1)
                ties = (block == v[sl, None]).sum(axis=1) - 1
                out[pairs[sl]] = (below + 0.5 * ties) / max(n_s - 1, 1)
    return np.clip(out, 0.0, 1.0)


@dataclass
class ReciprocalScorer:
    """Calibrations, fusion method and learned weights (``reciprocal.json``). ``by_segment``:
    ``{segment: method or REVERSE_ONLY}`` chosen on validation; a segment it lacks uses ``method``."""

    method: str = "harmonic"
    reverse: Calibration = field(default_factory=Calibration)
    forward: Calibration = field(default_factory=Calibration)
    weights: tuple[float, float, float] = (0.0, 1.0, 1.0)
    forward_use_case: str | None = None
    fitted: bool = False
    validation: dict[str, Any] = field(default_factory=dict)
    by_segment: dict[str, str] = field(default_factory=dict)

    def method_for(self, segment: str | None) -> str:
        """The fusion of an entity in ``segment`` (``None``: the overall ``method``)."""
        return self.by_segment.get(segment, self.method) if segment else self.method

    # --- files ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "method": self.method, "forward_use_case": self.forward_use_case,
                "calibration": {"reverse": {"feature": "pool_z", **self.reverse.__dict__},
                                "forward": {"feature": "logit_forward_percentile", **self.forward.__dict__}},
                "learned_weights": list(self.weights), "by_segment": dict(self.by_segment), "pool": POOL,
                "validation": self.validation}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReciprocalScorer:
        if d.get("format") != FORMAT or d.get("method") not in METHODS:
            raise DataError(f"{FILE}: unknown format {d.get('format')!r} or method {d.get('method')!r}")
        cal = d.get("calibration") or {}

        def one(name: str) -> Calibration:
            c = cal.get(name) or {}
            return Calibration(float(c.get("a", 1.0)), float(c.get("b", 0.0)), float(c.get("prior", 0.5)))

        w = d.get("learned_weights") or (0.0, 1.0, 1.0)
        by_segment = {str(k): str(v) for k, v in (d.get("by_segment") or {}).items()}
        if bad := sorted(v for v in by_segment.values() if v not in (*METHODS, REVERSE_ONLY)):
            raise DataError(f"{FILE}: unknown segment fusion {bad[0]!r}")
        return cls(d["method"], one("reverse"), one("forward"), (float(w[0]), float(w[1]), float(w[2])),
                   d.get("forward_use_case"), True, d.get("validation") or {}, by_segment)

    def save(self, models_dir: str) -> None:
        storage.write_json(storage.join(models_dir, FILE), self.to_dict())

    @classmethod
    def load(cls, models_dir: str) -> ReciprocalScorer | None:
        uri = storage.join(models_dir, FILE)
        return cls.from_dict(storage.read_json(uri)) if storage.exists(uri) else None

    # --- scoring --------------------------------------------------------------------------------
    def probabilities(self, forward: Any, entity_id: str, cand_ids: Sequence[str],
                      scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(p, q)`` ``float64 [m]`` of one startup's pool: reverse and forward probabilities."""
        p = self.reverse(pool_z(scores))
        pct = forward_percentiles(forward, cand_ids, [entity_id] * len(cand_ids))
        q = self.forward(np.where(np.isnan(pct), np.nan, logit(pct)))
        return p, q

    def rank(self, forward: Any, entity_id: str, cand_ids: Sequence[str], scores: np.ndarray,
             segment: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(order, fused, p, q)`` of a pool: ``order`` (int [m], best first) sorts it by the fused
        score of the entity's ``segment`` (:meth:`method_for`)."""
        p, q = self.probabilities(forward, entity_id, cand_ids, scores)
        fused = fuse(self.method_for(segment), p, q, self.weights)
        order = np.argsort(-fused, kind="stable")
        return order, fused, p, q
