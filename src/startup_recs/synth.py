"""Synthetic marketplace with planted ground truth (``recs synth``).

The generator draws startups and users (developers ~80 %, investors ~20 %) with skewed
(Zipf-like) sectors, stages, locations and skills, then simulates ~180 days of behaviour:

* **Affinity** of an entity ``e`` for a candidate ``c`` (the planted truth, no noise)::

      affinity(e, c) = A * z(feature_match(e, c)) + B * <taste_e, taste_c> + C * quality_c

  ``feature_match`` is learnable from features (developer skills vs the startup's
  ``skills_needed``, location, experience vs stage; investor sectors/stages vs the startup's
  sector/stage, check size vs funding); ``taste`` are hidden 8-d latent vectors only learnable
  from interactions (collaborative signal); ``quality_c`` is the candidate's log-popularity.
  ``z`` standardises the feature part over random pairs so A, B and C are comparable.
* **Sessions** (``recommendation_sessions`` + ``impressions``): a logging policy (noisy
  affinity + popularity over a popularity-sampled pool) shows ~10 candidates at positions 0..9.
  A candidate is examined with probability ``1 / (1 + pos) ** 0.8``; view, click and
  contact/save/apply then follow ``sigmoid(affinity + noise + bias)`` as a cascade.
* **Organic events** outside sessions (search: a candidate picked by a softmax over the
  affinity of a random pool), developers' applications (``apply`` forward, mirrored as
  ``apply_received`` on the startup side), all without ``session_id``.
* Activity per startup/user is Pareto-distributed and startups keep arriving during the
  window, so cold (< 5), warm (5-19) and hot (20+) startups exist for both reverse use cases.

The true affinity's top candidates per entity are returned as the ``oracle`` table
(``use_case, entity_id, candidate_id, affinity, rank``; rank 1 = best) and written as Parquet
beside the database, so evaluation can report a ceiling. Everything is vectorised NumPy and
deterministic for a given seed.

Storage in the app database: list columns (``skills_needed``, ``skills``, ``sectors``,
``stages``) are JSON text (``'["python", "ml"]'``) so SQLite and PostgreSQL hold the same
thing; timestamps are UTC (``timestamptz`` on PostgreSQL, naive UTC text on SQLite).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from startup_recs import schema, storage
from startup_recs.config import segment_of
from startup_recs.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

# --- vocabularies (ordered by frequency rank: Zipf weights follow this order) ------------------
SECTORS = ("fintech", "ai", "saas", "healthtech", "ecommerce", "climate", "edtech", "devtools",
           "cybersecurity", "biotech", "logistics", "gaming", "proptech", "agritech", "mobility",
           "spacetech")
STAGES = ("pre_seed", "seed", "series_a", "series_b", "series_c", "growth")
STAGE_P = np.array([0.26, 0.34, 0.2, 0.1, 0.06, 0.04])
FUNDING_MEDIAN = np.array([0.3e6, 1.5e6, 8e6, 25e6, 60e6, 150e6])  # USD raised, by stage
CHECK_MEDIAN = FUNDING_MEDIAN / 8.0  # a typical investor check is ~1/8 of the round
LOCATIONS = ("san_francisco", "new_york", "london", "berlin", "remote", "bangalore", "paris",
             "toronto", "singapore", "austin", "tel_aviv", "amsterdam", "stockholm", "sao_paulo")
SKILLS = ("python", "javascript", "react", "sql", "aws", "typescript", "docker", "kubernetes",
          "java", "go", "machine_learning", "node", "product_management", "data_engineering",
          "postgres", "figma", "rust", "kotlin", "swift", "c++", "pytorch", "sales",
          "marketing", "devops", "security", "terraform", "spark", "ios", "android", "flutter",
          "solidity", "embedded", "computer_vision", "nlp", "finance", "design", "growth",
          "recruiting", "blockchain", "robotics")
NAME_A = ("Blue", "Bright", "Quantum", "Nova", "Swift", "Clear", "Deep", "Open", "Green", "Iron",
          "Silver", "Hyper", "True", "Pixel", "Orbit", "Solar", "Atlas", "Echo", "Lumen", "Vector")
NAME_B = ("Labs", "AI", "Works", "Health", "Pay", "Cloud", "Stack", "Logic", "Bio", "Grid",
          "Ship", "Mind", "Forge", "Flow", "Base", "Byte", "Path", "Loop", "Scale", "Hub")

DAY_US = 86_400 * 1_000_000
T0_US = int(np.datetime64("2026-01-01T00:00:00", "us").astype(np.int64))  # window start (UTC)
WINDOW_DAYS = 180
TASTE_DIM = 8
# Affinity weights: feature match (content), latent taste (collaborative), candidate quality.
A_FEAT, B_TASTE, C_QUAL = 1.0, 0.9, 0.45
EXAM_POWER = 0.8  # examination probability 1 / (1 + pos) ** EXAM_POWER
SLATE = 10  # candidates shown per session
MODEL_VERSION = "logging-policy-v1"
REVERSE = ("startup_developer", "startup_investor")
FORWARD = ("developer_startup", "investor_startup")


@dataclass(frozen=True)
class SizeSpec:
    """How big a marketplace is and how active (rates are per entity over the whole window)."""

    n_startups: int
    n_users: int
    rev_sessions: tuple[float, float]  # mean sessions per startup: (developer, investor) search
    fwd_sessions: float  # mean sessions per user
    rev_organic: float  # mean organic profile views per startup
    fwd_organic: float  # mean organic startup views per user
    applies: float  # mean organic applications per developer
    oracle_k: tuple[int, int]  # top-K per entity in the oracle: (reverse, forward; 0 = skip)
    pool: int = 40  # logging policy's candidate pool per session


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(200, 1_000, (6.0, 4.0), 1.5, 5.0, 1.0, 0.5, (200, 200)),
    "small": SizeSpec(2_000, 10_000, (6.0, 4.0), 1.5, 5.0, 1.0, 0.5, (200, 100)),
    "demo": SizeSpec(5_000, 50_000, (6.0, 4.0), 1.5, 5.0, 1.0, 0.5, (200, 50)),
    "bench": SizeSpec(50_000, 500_000, (12.0, 8.0), 3.0, 10.0, 2.0, 1.0, (100, 0)),
}


# --- entities ------------------------------------------------------------------------------------
@dataclass
class Startups:
    """Startup features as arrays (index = row), plus hidden taste/quality."""

    ids: np.ndarray  # (n,) object str
    sector: np.ndarray  # (n,) int
    stage: np.ndarray  # (n,) int
    loc: np.ndarray  # (n,) int
    skills: np.ndarray  # (n,) uint64 bit mask over SKILLS
    funding: np.ndarray  # (n,) float USD
    created: np.ndarray  # (n,) int64 us since epoch
    taste: np.ndarray  # (n, TASTE_DIM) float32
    quality: np.ndarray  # (n,) float32, log-popularity ~ N(0, 1)
    activity: np.ndarray  # (n,) float, Pareto activity (mean ~1)


@dataclass
class Users:
    ids: np.ndarray
    is_dev: np.ndarray  # (n,) bool
    skills: np.ndarray  # uint64 mask (developers)
    sectors: np.ndarray  # uint64 mask (investors)
    stages: np.ndarray  # uint64 mask (investors)
    loc: np.ndarray
    experience: np.ndarray  # years (developers; NaN for investors)
    check: np.ndarray  # USD (investors; NaN for developers)
    created: np.ndarray
    taste: np.ndarray
    quality: np.ndarray
    activity: np.ndarray


def _zipf(n: int, s: float = 1.0) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def _pick_masks(rng: np.random.Generator, weights: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Draw ``k[i]`` distinct items per row from per-row ``weights`` (n, m) -> uint64 bit masks.

    Gumbel-top-k: the ``k`` largest ``log w + Gumbel`` keys are a weighted sample without
    replacement.
    """
    n, m = weights.shape
    keys = np.log(weights) + rng.gumbel(size=(n, m))
    order = np.argsort(-keys, axis=1)
    take = np.arange(m)[None, :] < k[:, None]
    bits = np.left_shift(np.uint64(1), order.astype(np.uint64))
    return np.bitwise_or.reduce(np.where(take, bits, np.uint64(0)), axis=1)


def _mask_to_lists(masks: np.ndarray, vocab: tuple[str, ...]) -> pa.Array:
    """uint64 bit masks -> Arrow list<string> (items in vocabulary order)."""
    n = len(masks)
    m = len(vocab)
    bits = ((masks[:, None] >> np.arange(m, dtype=np.uint64)[None, :]) & np.uint64(1)).astype(bool)
    rows, cols = np.nonzero(bits)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    values = pa.array(np.asarray(vocab, dtype=object)[cols], type=pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _created_at(rng: np.random.Generator, n: int, before_frac: float) -> np.ndarray:
    """Creation times: ``before_frac`` in the 2 years before the window, the rest during it."""
    before = rng.random(n) < before_frac
    days = np.where(before, -rng.uniform(0, 730, n), rng.uniform(0, WINDOW_DAYS * 0.97, n))
    return T0_US + (days * DAY_US).astype(np.int64)


def _pareto(rng: np.random.Generator, n: int, alpha: float) -> np.ndarray:
    """Pareto(alpha) activity with mean 1 (heavy tail: a few very active entities)."""
    xm = (alpha - 1.0) / alpha
    return xm * (1.0 + rng.pareto(alpha, n))


def _make_startups(rng: np.random.Generator, n: int, sector_skill: np.ndarray) -> Startups:
    sector = rng.choice(len(SECTORS), n, p=_zipf(len(SECTORS), 0.9))
    stage = rng.choice(len(STAGES), n, p=STAGE_P)
    loc = rng.choice(len(LOCATIONS), n, p=_zipf(len(LOCATIONS), 1.0))
    k = rng.integers(2, 6, n)
    skills = _pick_masks(rng, sector_skill[sector], k)
    funding = FUNDING_MEDIAN[stage] * rng.lognormal(0.0, 0.6, n)
    created = _created_at(rng, n, 0.45)
    taste = (rng.standard_normal((n, TASTE_DIM)) / TASTE_DIM ** 0.25).astype(np.float32)
    quality = rng.standard_normal(n).astype(np.float32)
    activity = _pareto(rng, n, 1.6) * np.exp(0.25 * quality)
    ids = np.array([f"s{i:06d}" for i in range(n)], dtype=object)
    return Startups(ids, sector, stage, loc, skills, funding, created, taste, quality, activity)


def _make_users(rng: np.random.Generator, n: int, sector_skill: np.ndarray) -> Users:
    is_dev = rng.random(n) < 0.8
    loc = rng.choice(len(LOCATIONS), n, p=_zipf(len(LOCATIONS), 1.0))
    background = rng.choice(len(SECTORS), n, p=_zipf(len(SECTORS), 0.9))
    skills = _pick_masks(rng, sector_skill[background], rng.integers(3, 7, n))
    skills = np.where(is_dev, skills, np.uint64(0))
    sec_w = np.broadcast_to(_zipf(len(SECTORS), 0.9), (n, len(SECTORS)))
    sectors = np.where(~is_dev, _pick_masks(rng, sec_w, rng.integers(1, 4, n)), np.uint64(0))
    center = rng.choice(len(STAGES), n, p=[0.3, 0.3, 0.2, 0.1, 0.06, 0.04])
    width = rng.integers(0, 2, n)
    lo, hi = np.maximum(center - width, 0), np.minimum(center + width, len(STAGES) - 1)
    stage_idx = np.arange(len(STAGES))[None, :]
    stage_bits = (stage_idx >= lo[:, None]) & (stage_idx <= hi[:, None])
    stages = (stage_bits * (np.uint64(1) << stage_idx.astype(np.uint64))).sum(axis=1).astype(np.uint64)
    stages = np.where(~is_dev, stages, np.uint64(0))
    experience = np.where(is_dev, np.clip(rng.gamma(2.0, 3.0, n), 0, 35).round(1), np.nan)
    check = np.where(~is_dev, CHECK_MEDIAN[center] * rng.lognormal(0.0, 0.5, n), np.nan)
    created = _created_at(rng, n, 0.6)
    taste = (rng.standard_normal((n, TASTE_DIM)) / TASTE_DIM ** 0.25).astype(np.float32)
    quality = rng.standard_normal(n).astype(np.float32)
    activity = _pareto(rng, n, 1.8)
    ids = np.array([f"u{i:07d}" for i in range(n)], dtype=object)
    return Users(ids, is_dev, skills, sectors, stages, loc, experience, check, created, taste,
                 quality, activity)


# --- affinity ------------------------------------------------------------------------------------
def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x).astype(np.float32)


def _feature_match(role: str, S: Startups, U: Users, s: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Raw feature match of startups ``s`` and users ``u`` (broadcastable index arrays)."""
    loc = (S.loc[s] == U.loc[u]).astype(np.float32)
    if role == "developer":
        need = S.skills[s]
        overlap = _popcount(need & U.skills[u]) / np.maximum(_popcount(need), 1.0)
        seniority = (S.stage[s] / (len(STAGES) - 1)) * np.minimum(U.experience[u], 15.0) / 15.0
        return overlap + 0.35 * loc + 0.3 * seniority.astype(np.float32)
    one = np.uint64(1)
    sector_in = ((U.sectors[u] >> S.sector[s].astype(np.uint64)) & one).astype(np.float32)
    stage_in = ((U.stages[u] >> S.stage[s].astype(np.uint64)) & one).astype(np.float32)
    gap = (np.log(U.check[u]) - np.log(S.funding[s] / 8.0)) / 0.8
    check = np.exp(-0.5 * gap * gap).astype(np.float32)
    return sector_in + 0.7 * stage_in + 0.6 * check + 0.2 * loc


@dataclass
class World:
    """Everything the simulation and the oracle need."""

    spec: SizeSpec
    S: Startups
    U: Users
    dev: np.ndarray  # user indices of developers
    inv: np.ndarray  # user indices of investors
    norm: dict[str, tuple[float, float]]  # role -> (mean, std) of the raw feature match

    def affinity(self, use_case: str, s: np.ndarray, u: np.ndarray) -> np.ndarray:
        """True affinity for startup indices ``s`` and user indices ``u`` (broadcastable).

        Reverse use cases add the *user's* quality (the candidate), forward ones the
        startup's; the feature and taste parts are symmetric.
        """
        role = "developer" if use_case in ("startup_developer", "developer_startup") else "investor"
        mean, std = self.norm[role]
        fm = (_feature_match(role, self.S, self.U, s, u) - mean) / std
        taste = np.einsum("...d,...d->...", self.S.taste[s], self.U.taste[u])
        qual = self.U.quality[u] if use_case in REVERSE else self.S.quality[s]
        return (A_FEAT * fm + B_TASTE * taste + C_QUAL * qual).astype(np.float32)


def _sector_skill_weights(rng: np.random.Generator) -> np.ndarray:
    """(n_sectors, n_skills): global Zipf skill weights boosted on 5 sector-specific skills."""
    base = _zipf(len(SKILLS), 0.8)
    w = np.tile(base, (len(SECTORS), 1))
    for k in range(len(SECTORS)):
        w[k, rng.choice(len(SKILLS), 5, replace=False)] *= 6.0
    return w / w.sum(axis=1, keepdims=True)


def build_world(size: str, seed: int) -> tuple[World, np.random.Generator]:
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; expected one of: {', '.join(SIZES)}")
    spec = SIZES[size]
    rng = np.random.default_rng(seed)
    sector_skill = _sector_skill_weights(rng)
    S = _make_startups(rng, spec.n_startups, sector_skill)
    U = _make_users(rng, spec.n_users, sector_skill)
    dev, inv = np.flatnonzero(U.is_dev), np.flatnonzero(~U.is_dev)
    norm = {}
    for role, pool in (("developer", dev), ("investor", inv)):
        s = rng.integers(0, spec.n_startups, 20_000)
        u = pool[rng.integers(0, len(pool), 20_000)]
        raw = _feature_match(role, S, U, s, u)
        norm[role] = (float(raw.mean()), float(raw.std() + 1e-6))
    return World(spec, S, U, dev, inv, norm), rng


# --- behaviour -----------------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _alive_counts(rng: np.random.Generator, created: np.ndarray, activity: np.ndarray,
                  mean: float) -> tuple[np.ndarray, np.ndarray]:
    """Poisson counts per entity, scaled by activity and the part of the window it exists."""
    start = np.maximum(created, T0_US)
    alive = (T0_US + WINDOW_DAYS * DAY_US - start) / (WINDOW_DAYS * DAY_US)
    counts = rng.poisson(mean * activity * alive)
    return counts, start


def _times_after(rng: np.random.Generator, start: np.ndarray) -> np.ndarray:
    end = T0_US + WINDOW_DAYS * DAY_US
    return start + (rng.random(len(start)) * (end - start)).astype(np.int64)


@dataclass
class Events:
    """Columns of an interaction table under construction (index arrays, not ids)."""

    s: list[np.ndarray]
    u: list[np.ndarray]
    event: list[np.ndarray]
    ts: list[np.ndarray]
    session: list[np.ndarray]  # session index or -1

    @classmethod
    def new(cls) -> Events:
        return cls([], [], [], [], [])

    def add(self, s, u, event, ts, session) -> None:
        n = len(s)
        self.s.append(np.asarray(s))
        self.u.append(np.asarray(u))
        self.event.append(np.broadcast_to(np.asarray(event, dtype=object), (n,)).copy())
        self.ts.append(np.asarray(ts, dtype=np.int64))
        self.session.append(np.broadcast_to(np.asarray(session, dtype=np.int64), (n,)).copy())

    def cat(self) -> dict[str, np.ndarray]:
        if not self.s:
            return {"s": np.zeros(0, int), "u": np.zeros(0, int), "event": np.zeros(0, object),
                    "ts": np.zeros(0, np.int64), "session": np.zeros(0, np.int64)}
        out = {k: np.concatenate(getattr(self, k)) for k in ("s", "u", "event", "ts", "session")}
        order = np.argsort(out["ts"], kind="stable")
        return {k: v[order] for k, v in out.items()}


def _cascade(rng: np.random.Generator, aff: np.ndarray, exam: np.ndarray,
             steps: tuple[tuple[str, float], ...]) -> list[tuple[str, np.ndarray]]:
    """Event cascade per impression: examined & viewed, then each next step given the previous.

    ``steps`` = ((event, bias), ...); P(step i | step i-1) = sigmoid(noisy affinity + bias_i),
    the first step also multiplied by ``exam``. Returns (event, bool mask) per step.
    """
    noisy = aff + rng.normal(0.0, 0.5, aff.shape)
    out = []
    alive = rng.random(aff.shape) < exam
    for event, bias in steps:
        alive = alive & (rng.random(aff.shape) < _sigmoid(noisy + bias))
        out.append((event, alive))
    return out


REV_STEPS = (("view", 0.0), ("click", -2.2), ("contact", -2.6))
FWD_STEPS = {"developer": (("view", 0.0), ("click", -1.8), ("save", -2.0), ("apply", -2.0)),
             "investor": (("view", 0.0), ("click", -1.8), ("save", -2.0), ("contact", -2.0))}
STEP_SECONDS = {"view": 5, "click": 30, "save": 90, "contact": 300, "apply": 600}


def _sessions(rng: np.random.Generator, w: World, use_case: str, ent: np.ndarray, ts: np.ndarray,
              first_sid: int, ev_rev: Events, ev_fwd: Events) -> dict[str, np.ndarray]:
    """Simulate sessions of ``use_case`` for entity indices ``ent`` at times ``ts``.

    Returns the impressions (session index, candidate index, position); events go to
    ``ev_rev`` (startup_interactions) or ``ev_fwd`` (user_interactions).
    """
    n = len(ent)
    role = "developer" if use_case in ("startup_developer", "developer_startup") else "investor"
    if use_case in REVERSE:
        cands = w.dev if role == "developer" else w.inv
        qual, created = w.U.quality[cands], w.U.created[cands]
    else:
        cands = np.arange(w.spec.n_startups)
        qual, created = w.S.quality, w.S.created
    sid = first_sid + np.arange(n)
    out_sid, out_c, out_pos = [], [], []
    p_pool = np.exp(0.8 * qual.astype(np.float64))
    p_pool /= p_pool.sum()
    chunk = 50_000
    for lo in range(0, n, chunk):
        e, t, ss = ent[lo:lo + chunk], ts[lo:lo + chunk], sid[lo:lo + chunk]
        m = len(e)
        pool = rng.choice(len(cands), size=(m, w.spec.pool), p=p_pool)
        cidx = cands[pool]
        s_idx, u_idx = (e[:, None], cidx) if use_case in REVERSE else (cidx, e[:, None])
        aff = w.affinity(use_case, s_idx, u_idx)
        score = 0.6 * aff + 0.5 * qual[pool] + rng.normal(0.0, 1.0, aff.shape)
        # no candidate before it exists; no duplicate in one slate
        score[created[pool] > t[:, None]] = -np.inf
        srt = np.sort(pool, axis=1)
        dup_sorted = np.zeros_like(srt, dtype=bool)
        dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
        order_c = np.argsort(pool, axis=1, kind="stable")
        dup = np.zeros_like(dup_sorted)
        np.put_along_axis(dup, order_c, dup_sorted, axis=1)
        score[dup] = -np.inf
        top = np.argsort(-score, axis=1, kind="stable")[:, :SLATE]
        shown = np.isfinite(np.take_along_axis(score, top, axis=1))
        pos = np.broadcast_to(np.arange(SLATE), top.shape)
        c_sel = np.take_along_axis(cidx, top, axis=1)
        a_sel = np.take_along_axis(aff, top, axis=1)
        rows, cols = np.nonzero(shown)
        out_sid.append(ss[rows])
        out_c.append(c_sel[rows, cols])
        out_pos.append(pos[rows, cols])
        exam = 1.0 / (1.0 + np.arange(SLATE)) ** EXAM_POWER
        steps = REV_STEPS if use_case in REVERSE else FWD_STEPS[role]
        for event, mask in _cascade(rng, a_sel, exam[None, :], steps):
            mask = mask & shown
            r, c = np.nonzero(mask)
            when = t[r] + (c * 5 + STEP_SECONDS[event]) * 1_000_000 + rng.integers(0, 1_000_000, len(r))
            if use_case in REVERSE:
                ev_rev.add(e[r], c_sel[r, c], event, when, ss[r])
            else:
                ev_fwd.add(c_sel[r, c], e[r], event, when, ss[r])
                if event == "apply":  # the startup sees the application
                    ev_rev.add(c_sel[r, c], e[r], "apply_received", when, -1)
    return {"session": np.concatenate(out_sid) if out_sid else np.zeros(0, np.int64),
            "cand": np.concatenate(out_c) if out_c else np.zeros(0, np.int64),
            "pos": np.concatenate(out_pos) if out_pos else np.zeros(0, np.int64)}


def _organic(rng: np.random.Generator, w: World, use_case: str, ent: np.ndarray, ts: np.ndarray,
             steps: tuple[tuple[str, float], ...], ev_rev: Events, ev_fwd: Events,
             pool_size: int = 100, temperature: float = 2.0) -> None:
    """Organic (search) events: pick one candidate per event by softmax(temperature * affinity)
    over a uniform pool of existing candidates (Gumbel-max), then run the event cascade."""
    role = "developer" if use_case in ("startup_developer", "developer_startup") else "investor"
    cands = (w.dev if role == "developer" else w.inv) if use_case in REVERSE else np.arange(w.spec.n_startups)
    created = w.U.created[cands] if use_case in REVERSE else w.S.created
    chunk = 20_000
    for lo in range(0, len(ent), chunk):
        e, t = ent[lo:lo + chunk], ts[lo:lo + chunk]
        pool = rng.integers(0, len(cands), size=(len(e), pool_size))
        cidx = cands[pool]
        s_idx, u_idx = (e[:, None], cidx) if use_case in REVERSE else (cidx, e[:, None])
        aff = w.affinity(use_case, s_idx, u_idx)
        key = temperature * aff + rng.gumbel(size=aff.shape)
        key[created[pool] > t[:, None]] = -np.inf
        best = np.argmax(key, axis=1)
        ok = np.isfinite(key[np.arange(len(e)), best])
        e, t, c, a = e[ok], t[ok], cidx[ok, best[ok]], aff[ok, best[ok]]
        for event, mask in _cascade(rng, a, np.ones_like(a), steps):
            r = np.flatnonzero(mask)
            when = t[r] + STEP_SECONDS[event] * 1_000_000 + rng.integers(0, 1_000_000, len(r))
            if use_case in REVERSE:
                ev_rev.add(e[r], c[r], event, when, -1)
            else:
                ev_fwd.add(c[r], e[r], event, when, -1)
                if event == "apply":
                    ev_rev.add(c[r], e[r], "apply_received", when, -1)


def _simulate(w: World, rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    spec, S, U = w.spec, w.S, w.U
    ev_rev, ev_fwd = Events.new(), Events.new()
    sess = {"ent": [], "uc": [], "ts": []}
    imps = {"session": [], "cand": [], "pos": []}
    n_sess = 0

    def run_sessions(use_case: str, ent: np.ndarray, ts: np.ndarray) -> None:
        nonlocal n_sess
        order = np.argsort(ts, kind="stable")
        ent, ts = ent[order], ts[order]
        out = _sessions(rng, w, use_case, ent, ts, n_sess, ev_rev, ev_fwd)
        for k in imps:
            imps[k].append(out[k])
        sess["ent"].append(ent)
        sess["uc"].append(np.full(len(ent), use_case, dtype=object))
        sess["ts"].append(ts)
        n_sess += len(ent)

    # reverse sessions: each startup searches developers and investors; early stages seek money
    inv_bias = np.array([1.6, 1.3, 1.0, 0.7, 0.5, 0.4])[S.stage]
    for k, (use_case, mult) in enumerate(zip(REVERSE, (np.ones(len(S.ids)), inv_bias), strict=True)):
        act = S.activity * mult * rng.lognormal(0.0, 0.3, len(S.ids))
        counts, start = _alive_counts(rng, S.created, act, spec.rev_sessions[k])
        ent = np.repeat(np.arange(len(S.ids)), counts)
        run_sessions(use_case, ent, _times_after(rng, np.repeat(start, counts)))
    # forward sessions: developers and investors browsing startups
    for use_case, pool in zip(FORWARD, (w.dev, w.inv), strict=True):
        counts, start = _alive_counts(rng, U.created[pool], U.activity[pool], spec.fwd_sessions)
        run_sessions(use_case, np.repeat(pool, counts), _times_after(rng, np.repeat(start, counts)))
    # organic reverse: startups looking at profiles outside recommendations
    for use_case in REVERSE:
        counts, start = _alive_counts(rng, S.created, S.activity, spec.rev_organic / 2)
        ent = np.repeat(np.arange(len(S.ids)), counts)
        _organic(rng, w, use_case, ent, _times_after(rng, np.repeat(start, counts)),
                 REV_STEPS, ev_rev, ev_fwd)
    # organic forward: browsing, and developers applying (mirrored as apply_received)
    for use_case, pool in zip(FORWARD, (w.dev, w.inv), strict=True):
        role = "developer" if use_case == "developer_startup" else "investor"
        counts, start = _alive_counts(rng, U.created[pool], U.activity[pool], spec.fwd_organic)
        ent = np.repeat(pool, counts)
        _organic(rng, w, use_case, ent, _times_after(rng, np.repeat(start, counts)),
                 FWD_STEPS[role][:3], ev_rev, ev_fwd)
    counts, start = _alive_counts(rng, U.created[w.dev], U.activity[w.dev], spec.applies)
    ent = np.repeat(w.dev, counts)
    _organic(rng, w, "developer_startup", ent, _times_after(rng, np.repeat(start, counts)),
             (("apply", 5.0),), ev_rev, ev_fwd, temperature=2.5)

    sessions = {k: np.concatenate(v) for k, v in sess.items()}
    impressions = {k: np.concatenate(v) for k, v in imps.items()}
    return {"rev": ev_rev.cat(), "fwd": ev_fwd.cat(), "sessions": sessions, "impressions": impressions}


# --- tables --------------------------------------------------------------------------------------
def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=pa.int64()).cast(schema.TS)


def _session_ids(idx: np.ndarray) -> pa.Array:
    """Session index -> id string ("sess00000001"); -1 -> null."""
    idx = np.asarray(idx)
    strs = np.array([f"sess{i:08d}" for i in idx], dtype=object)
    return pa.array(strs, type=pa.string(), mask=idx < 0)


def _tables(w: World, sim: dict[str, dict[str, np.ndarray]]) -> dict[str, pa.Table]:
    S, U = w.S, w.U
    n_s = len(S.ids)
    names = [f"{NAME_A[a]}{NAME_B[b]} {i}" for i, (a, b) in enumerate(zip(
        np.arange(n_s) * 7 % len(NAME_A), np.arange(n_s) * 13 % len(NAME_B), strict=True))]
    startups = pa.table({
        "startup_id": pa.array(S.ids, pa.string()),
        "name": pa.array(names, pa.string()),
        "sector": pa.array(np.asarray(SECTORS, dtype=object)[S.sector], pa.string()),
        "stage": pa.array(np.asarray(STAGES, dtype=object)[S.stage], pa.string()),
        "location": pa.array(np.asarray(LOCATIONS, dtype=object)[S.loc], pa.string()),
        "skills_needed": _mask_to_lists(S.skills, SKILLS),
        "funding_usd": pa.array(S.funding.round(-3)),
        "created_at": _ts(S.created),
    })
    users = pa.table({
        "user_id": pa.array(U.ids, pa.string()),
        "role": pa.array(np.where(U.is_dev, "developer", "investor").astype(object), pa.string()),
        "skills": _mask_to_lists(U.skills, SKILLS),
        "sectors": _mask_to_lists(U.sectors, SECTORS),
        "stages": _mask_to_lists(U.stages, STAGES),
        "location": pa.array(np.asarray(LOCATIONS, dtype=object)[U.loc], pa.string()),
        "experience_years": pa.array(U.experience, mask=np.isnan(U.experience)),
        "check_size_usd": pa.array(np.round(U.check, -3), mask=np.isnan(U.check)),
        "created_at": _ts(U.created),
    })
    rev, fwd = sim["rev"], sim["fwd"]
    startup_interactions = pa.table({
        "startup_id": pa.array(S.ids[rev["s"]], pa.string()),
        "user_id": pa.array(U.ids[rev["u"]], pa.string()),
        "event": pa.array(rev["event"], pa.string()),
        "ts": _ts(rev["ts"]),
        "session_id": _session_ids(rev["session"]),
    })
    user_interactions = pa.table({
        "user_id": pa.array(U.ids[fwd["u"]], pa.string()),
        "startup_id": pa.array(S.ids[fwd["s"]], pa.string()),
        "event": pa.array(fwd["event"], pa.string()),
        "ts": _ts(fwd["ts"]),
        "session_id": _session_ids(fwd["session"]),
    })
    ss = sim["sessions"]
    is_rev = np.isin(ss["uc"], REVERSE)
    ent_ids = np.where(is_rev, S.ids[np.where(is_rev, ss["ent"], 0)], U.ids[np.where(is_rev, 0, ss["ent"])])
    order = np.argsort(ss["ts"], kind="stable")
    sessions = pa.table({
        "session_id": _session_ids(np.arange(len(ss["ts"]))[order]),
        "entity_id": pa.array(ent_ids[order], pa.string()),
        "use_case": pa.array(ss["uc"][order], pa.string()),
        "ts": _ts(ss["ts"][order]),
    })
    im = sim["impressions"]
    s_uc = ss["uc"][im["session"]]
    im_rev = np.isin(s_uc, REVERSE)
    cand_ids = np.where(im_rev, U.ids[np.where(im_rev, im["cand"], 0)], S.ids[np.where(im_rev, 0, im["cand"])])
    impressions = pa.table({
        "session_id": _session_ids(im["session"]),
        "candidate_id": pa.array(cand_ids, pa.string()),
        "position": pa.array(im["pos"].astype(np.int32)),
        "model_version": pa.array(np.full(len(cand_ids), MODEL_VERSION, dtype=object), pa.string()),
    })
    raw = {"startups": startups, "users": users, "startup_interactions": startup_interactions,
           "user_interactions": user_interactions, "recommendation_sessions": sessions,
           "impressions": impressions}
    return {name: schema.validate(raw[name], name) for name in schema.APP_TABLES}


def oracle(w: World, block_pairs: int = 4_000_000) -> pa.Table:
    """Top-K candidates by true affinity per entity and use case (rank 1 = best).

    Computed in blocks of entities (about ``block_pairs`` pairs at a time) so memory stays
    bounded at bench size.
    """
    parts = []
    k_rev, k_fwd = w.spec.oracle_k
    plan = [(uc, k_rev) for uc in REVERSE] + [(uc, k_fwd) for uc in FORWARD]
    for use_case, k in plan:
        if k <= 0:
            continue
        role = "developer" if use_case in ("startup_developer", "developer_startup") else "investor"
        users = w.dev if role == "developer" else w.inv
        if use_case in REVERSE:
            ents, cands, ent_ids, cand_ids = np.arange(len(w.S.ids)), users, w.S.ids, w.U.ids[users]
        else:
            ents, cands, ent_ids, cand_ids = users, np.arange(len(w.S.ids)), w.U.ids[users], w.S.ids
        k = min(k, len(cands))
        block = max(1, block_pairs // max(len(cands), 1))
        for lo in range(0, len(ents), block):
            e = ents[lo:lo + block]
            if use_case in REVERSE:
                aff = w.affinity(use_case, e[:, None], cands[None, :])
            else:
                aff = w.affinity(use_case, cands[None, :], e[:, None])
            top = np.argpartition(-aff, k - 1, axis=1)[:, :k] if k < len(cands) else np.tile(np.arange(len(cands)), (len(e), 1))
            top_aff = np.take_along_axis(aff, top, axis=1)
            order = np.argsort(-top_aff, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            top_aff = np.take_along_axis(top_aff, order, axis=1)
            rows = len(e) * k
            eid = ent_ids[lo:lo + block] if use_case in REVERSE else ent_ids[lo:lo + block]
            parts.append(pa.table({
                "use_case": pa.array(np.full(rows, use_case, dtype=object), pa.string()),
                "entity_id": pa.array(np.repeat(eid, k), pa.string()),
                "candidate_id": pa.array(cand_ids[top.ravel()], pa.string()),
                "affinity": pa.array(top_aff.ravel().astype(np.float32)),
                "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), len(e))),
            }))
    return pa.concat_tables(parts) if parts else pa.table({
        "use_case": pa.array([], pa.string()), "entity_id": pa.array([], pa.string()),
        "candidate_id": pa.array([], pa.string()), "affinity": pa.array([], pa.float32()),
        "rank": pa.array([], pa.int32())})


def generate(size: str = "tiny", seed: int = 0) -> dict[str, pa.Table]:
    """Generate a marketplace: the six app tables (validated) plus ``"oracle"``."""
    w, rng = build_world(size, seed)
    tables = _tables(w, _simulate(w, rng))
    tables["oracle"] = oracle(w)
    return tables


# --- summaries -----------------------------------------------------------------------------------
def segment_counts(tables: dict[str, pa.Table]) -> dict[str, dict[str, int]]:
    """Startups per segment (cold < 5, warm 5-19, hot 20+ events over the whole log) for each
    reverse use case; startups without any event of that use case count as cold."""
    users, events = tables["users"], tables["startup_interactions"]
    role = dict(zip(users.column("user_id").to_pylist(), users.column("role").to_pylist(), strict=True))
    ev_role = np.array([role.get(u) for u in events.column("user_id").to_pylist()], dtype=object)
    sids = np.asarray(events.column("startup_id").to_pylist(), dtype=object)
    all_startups = tables["startups"].column("startup_id").to_pylist()
    out = {}
    for use_case, r in (("startup_developer", "developer"), ("startup_investor", "investor")):
        uniq, cnt = np.unique(sids[ev_role == r], return_counts=True)
        counts = dict(zip(uniq.tolist(), cnt.tolist(), strict=True))
        seg = {"cold": 0, "warm": 0, "hot": 0}
        for s in all_startups:
            seg[segment_of(counts.get(s, 0))] += 1
        out[use_case] = seg
    return out


# --- database ------------------------------------------------------------------------------------
def db_url(url_or_path: str) -> str:
    """A SQLAlchemy URL; a bare path (no ``://``) means a SQLite file."""
    if "://" in url_or_path:
        return url_or_path
    return f"sqlite:///{url_or_path}"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///file`` URL, or None (in-memory or not SQLite)."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"bad database URL {url!r}: {exc}") from None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def metadata():
    """SQLAlchemy tables of the app database (list columns as JSON text, timestamps UTC)."""
    import sqlalchemy as sa

    md = sa.MetaData()
    ts = sa.DateTime(timezone=True)
    sa.Table("startups", md,
             sa.Column("startup_id", sa.String(32), primary_key=True),
             sa.Column("name", sa.String(128)), sa.Column("sector", sa.String(64)),
             sa.Column("stage", sa.String(32)), sa.Column("location", sa.String(64)),
             sa.Column("skills_needed", sa.Text), sa.Column("funding_usd", sa.Float),
             sa.Column("created_at", ts))
    sa.Table("users", md,
             sa.Column("user_id", sa.String(32), primary_key=True),
             sa.Column("role", sa.String(16), nullable=False), sa.Column("skills", sa.Text),
             sa.Column("sectors", sa.Text), sa.Column("stages", sa.Text),
             sa.Column("location", sa.String(64)), sa.Column("experience_years", sa.Float),
             sa.Column("check_size_usd", sa.Float), sa.Column("created_at", ts))
    for name, first, second in (("startup_interactions", "startup_id", "user_id"),
                                ("user_interactions", "user_id", "startup_id")):
        sa.Table(name, md,
                 sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                           autoincrement=True),
                 sa.Column(first, sa.String(32), nullable=False),
                 sa.Column(second, sa.String(32), nullable=False),
                 sa.Column("event", sa.String(32), nullable=False),
                 sa.Column("ts", ts, nullable=False, index=True),
                 sa.Column("session_id", sa.String(32)))
    sa.Table("recommendation_sessions", md,
             sa.Column("session_id", sa.String(32), primary_key=True),
             sa.Column("entity_id", sa.String(32), nullable=False),
             sa.Column("use_case", sa.String(32), nullable=False),
             sa.Column("ts", ts, nullable=False, index=True))
    sa.Table("impressions", md,
             sa.Column("session_id", sa.String(32), primary_key=True),
             sa.Column("position", sa.Integer, primary_key=True),
             sa.Column("candidate_id", sa.String(32), nullable=False),
             sa.Column("model_version", sa.String(64)))
    return md


LIST_COLUMNS = {"startups": ("skills_needed",), "users": ("skills", "sectors", "stages")}


def _rows(table: pa.Table, name: str, chunk: int) -> Iterator[list[dict]]:
    """Chunks of row dicts ready for executemany (lists -> JSON text, timestamps -> datetime)."""
    import json

    lists = LIST_COLUMNS.get(name, ())
    for batch in table.to_batches(max_chunksize=chunk):
        cols = {}
        for field, col in zip(batch.schema, batch.columns, strict=True):
            if field.name in lists:
                cols[field.name] = [None if v is None else json.dumps(v) for v in col.to_pylist()]
            elif pa.types.is_timestamp(field.type):
                cols[field.name] = col.to_pylist()
            else:
                cols[field.name] = col.to_pylist()
        keys = list(cols)
        yield [dict(zip(keys, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]


def write_db(tables: dict[str, pa.Table], url: str, replace: bool = False, chunk: int = 20_000) -> None:
    """Write the six app tables to the database at ``url`` (SQLAlchemy Core, chunked executemany).

    SQLite files are written to a temporary file that replaces the target only when complete;
    other databases get one transaction. Existing tables are an error unless ``replace``.
    """
    import sqlalchemy as sa

    url = db_url(url)
    path = sqlite_path(url)
    if path is not None:
        if path.exists() and not replace:
            raise ConfigError(f"{path} already exists; pass --force to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            engine = sa.create_engine(f"sqlite:///{tmp}")
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=OFF")
                conn.exec_driver_sql("PRAGMA synchronous=OFF")
            _write(engine, tables, chunk, drop=False)
            engine.dispose()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any connection problem is a bad URL for the user
        raise ConfigError(f"cannot connect to {_safe(url)}: {str(exc).splitlines()[0]}") from None
    existing = set(sa.inspect(engine).get_table_names()) & set(schema.APP_TABLES)
    if existing and not replace:
        raise ConfigError(f"tables already exist in {_safe(url)}: {', '.join(sorted(existing))}; "
                          "pass --force to replace them")
    _write(engine, tables, chunk, drop=True)
    engine.dispose()


def _safe(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<database URL>"


def _write(engine, tables: dict[str, pa.Table], chunk: int, drop: bool) -> None:
    md = metadata()
    with engine.begin() as conn:
        if drop:
            md.drop_all(conn, checkfirst=True)
        md.create_all(conn)
        for name in schema.APP_TABLES:
            for rows in _rows(tables[name], name, chunk):
                conn.execute(md.tables[name].insert(), rows)


def default_oracle_path(url: str) -> str:
    path = sqlite_path(db_url(url))
    return str(path.parent / "oracle.parquet") if path is not None else "data/oracle.parquet"


def cli_synth(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    tables = generate(args.size, args.seed)
    t_gen = time.perf_counter() - t0
    url = db_url(args.db)
    write_db({k: v for k, v in tables.items() if k != "oracle"}, url, replace=args.force)
    oracle_uri = args.oracle or default_oracle_path(url)
    try:
        storage.write_table(tables["oracle"], oracle_uri)
    except OSError as exc:
        raise StorageError(f"cannot write {oracle_uri}: {exc}") from None
    elapsed = time.perf_counter() - t0
    print(f"synthetic marketplace size={args.size} seed={args.seed} -> {_safe(url)}")
    for name in (*schema.APP_TABLES, "oracle"):
        print(f"  {name:<24} {tables[name].num_rows:>10,} rows")
    for use_case, seg in segment_counts(tables).items():
        print(f"  {use_case:<24} startups cold={seg['cold']} warm={seg['warm']} hot={seg['hot']}")
    print(f"  oracle -> {oracle_uri}")
    print(f"  time: generate {t_gen:.1f}s, total {elapsed:.1f}s")
    return 0


def event_counts(tables: dict[str, pa.Table]) -> dict[str, dict[str, int]]:
    """Rows per event type for both interaction tables (for summaries and tests)."""
    out = {}
    for name in ("startup_interactions", "user_interactions"):
        vc = pc.value_counts(tables[name].column("event")).to_pylist()
        out[name] = {d["values"]: d["counts"] for d in vc}
    return out
