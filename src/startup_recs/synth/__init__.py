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
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from startup_recs.core import storage
from startup_recs.core.config import segment_of
from startup_recs.core.errors import ConfigError, StorageError
from startup_recs.data import schema
from startup_recs.data.appdb import db_url, mask_url, sqlite_path, write_db

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
POLICY_TEMP = 1.2  # how sharply the logging policy's retriever prefers high-affinity candidates
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
    rev_organic: float  # mean organic profile views per startup (both roles together)
    fwd_organic: float  # mean organic startup views per user
    applies: float  # mean organic applications per developer
    oracle_k: tuple[int, int]  # top-K per entity written to the oracle: (reverse, forward; 0 = none)
    shortlist_k: int = 200  # top-K by true affinity per entity that behaviour draws from
    scan: float = 1.0  # share of candidates scanned for the top-K (< 1: approximate, bench only)
    pool: int = 40  # logging policy's candidate pool per session


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(200, 1_000, (4.5, 3.0), 1.5, 4.0, 1.0, 0.5, (200, 200)),
    "small": SizeSpec(2_000, 10_000, (4.5, 3.0), 1.5, 4.0, 1.0, 0.5, (200, 100)),
    # 10 users per startup (tiny/small: 5) and sharper shortlists (more candidates to choose
    # from) convert more per session: lower rates keep events per startup comparable
    "demo": SizeSpec(5_000, 50_000, (3.2, 2.1), 0.55, 2.8, 0.35, 0.18, (200, 50)),
    "bench": SizeSpec(50_000, 500_000, (6.0, 4.0), 1.05, 5.2, 0.65, 0.33, (100, 0),
                      shortlist_k=100, scan=0.25),
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
LOG_GRID = np.arange(3.5, 8.51, 0.2)  # log10 USD grid of the check-size / round-size bumps


def _onehot(idx: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(idx), n), dtype=np.float32)
    out[np.arange(len(idx)), idx] = 1.0
    return out


def _bits(masks: np.ndarray, n: int) -> np.ndarray:
    return ((masks[:, None] >> np.arange(n, dtype=np.uint64)[None, :]) & np.uint64(1)).astype(np.float32)


def _bumps(usd: np.ndarray) -> np.ndarray:
    """Unit-norm Gaussian bumps over log10(USD): ``<bumps(x), bumps(y)>`` is ~1 for x == y and
    decays smoothly with |log x - log y| (e^-0.5 at a factor ~2.6). NaN -> zeros."""
    x = np.log10(np.where(np.isfinite(usd) & (usd > 0), usd, 1.0))
    phi = np.exp(-0.5 * ((x[:, None] - LOG_GRID[None, :]) / 0.3) ** 2)
    phi /= np.linalg.norm(phi, axis=1, keepdims=True)
    phi[~np.isfinite(usd)] = 0.0
    return phi.astype(np.float32)


def _match_factors(role: str, S: Startups, U: Users) -> tuple[np.ndarray, np.ndarray]:
    """Feature match as a bilinear form: ``match(s, u) = <P[s], Q[u]>``.

    developer: share of the startup's needed skills the developer has + 0.35 same location
    + 0.3 (stage / later stages) x (experience / 15 years).
    investor: sector in the investor's sectors + 0.7 stage in their stages + 0.6 check size
    close to 1/8 of the round (bump kernel) + 0.2 same location.
    """
    loc_s, loc_u = _onehot(S.loc, len(LOCATIONS)), _onehot(U.loc, len(LOCATIONS))
    if role == "developer":
        need = _bits(S.skills, len(SKILLS))
        need /= np.maximum(need.sum(axis=1, keepdims=True), 1.0)
        stage = (S.stage / (len(STAGES) - 1)).astype(np.float32)[:, None]
        exp = np.nan_to_num(np.minimum(U.experience, 15.0) / 15.0).astype(np.float32)[:, None]
        P = np.hstack([need, 0.35 * loc_s, 0.3 * stage])
        Q = np.hstack([_bits(U.skills, len(SKILLS)), loc_u, exp])
    else:
        P = np.hstack([_onehot(S.sector, len(SECTORS)), 0.7 * _onehot(S.stage, len(STAGES)),
                       0.6 * _bumps(S.funding / 8.0), 0.2 * loc_s])
        Q = np.hstack([_bits(U.sectors, len(SECTORS)), _bits(U.stages, len(STAGES)),
                       _bumps(U.check), loc_u])
    return P.astype(np.float32), Q.astype(np.float32)


def role_of(use_case: str) -> str:
    return "developer" if use_case in ("startup_developer", "developer_startup") else "investor"


@dataclass
class World:
    """Entities plus the planted affinity, as bilinear factors per role.

    ``affinity(s, u) = <F[s], G[u]> + const + C * quality(candidate)`` where ``F`` holds the
    startup's standardised match factors and taste (scaled by A and B) and ``G`` the user's.
    """

    spec: SizeSpec
    S: Startups
    U: Users
    dev: np.ndarray  # global user indices of developers
    inv: np.ndarray  # global user indices of investors
    F: dict[str, np.ndarray]  # role -> (n_startups, d) float32
    G: dict[str, np.ndarray]  # role -> (n_users, d) float32 (zeros for the other role)
    const: dict[str, float]  # role -> -A * mean / std of the raw match

    def users_of(self, role: str) -> np.ndarray:
        return self.dev if role == "developer" else self.inv

    def affinity(self, use_case: str, s: np.ndarray, u: np.ndarray) -> np.ndarray:
        """True affinity of startup indices ``s`` and user indices ``u`` (same shape, pairwise)."""
        role = role_of(use_case)
        core = np.einsum("...d,...d->...", self.F[role][s], self.G[role][u])
        qual = self.U.quality[u] if use_case in REVERSE else self.S.quality[s]
        return (core + self.const[role] + C_QUAL * qual).astype(np.float32)

    def affinity_slates(self, use_case: str, ent: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """(m, p) affinities of entity ``ent[i]`` with each of its candidates ``cands[i, :]``."""
        role = role_of(use_case)
        if use_case in REVERSE:
            core = np.einsum("md,mpd->mp", self.F[role][ent], self.G[role][cands])
            qual = self.U.quality[cands]
        else:
            core = np.einsum("md,mpd->mp", self.G[role][ent], self.F[role][cands])
            qual = self.S.quality[cands]
        return (core + self.const[role] + C_QUAL * qual).astype(np.float32)

    def affinity_block(self, use_case: str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(len(rows), len(cols)) affinities: rows are the use case's entities, cols its candidates."""
        role = role_of(use_case)
        if use_case in REVERSE:
            core = self.F[role][rows] @ self.G[role][cols].T
            qual = self.U.quality[cols]
        else:
            core = self.G[role][rows] @ self.F[role][cols].T
            qual = self.S.quality[cols]
        core += self.const[role]
        core += C_QUAL * qual[None, :]
        return core


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
    F, G, const = {}, {}, {}
    for role, pool in (("developer", dev), ("investor", inv)):
        P, Q = _match_factors(role, S, U)
        s = rng.integers(0, spec.n_startups, 20_000)
        u = pool[rng.integers(0, len(pool), 20_000)]
        raw = np.einsum("ij,ij->i", P[s], Q[u])
        mean, std = float(raw.mean()), float(raw.std() + 1e-6)
        F[role] = np.hstack([(A_FEAT / std) * P, B_TASTE * S.taste]).astype(np.float32)
        Gr = np.hstack([Q, U.taste]).astype(np.float32)
        other = inv if role == "developer" else dev
        Gr[other] = 0.0
        G[role] = Gr
        const[role] = -A_FEAT * mean / std
    return World(spec, S, U, dev, inv, F, G, const), rng


def _topk_rows(aff: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of each row's ``k`` largest entries, best first."""
    if aff.shape[1] >= 20_000 and aff.size > 2_000_000:  # wide rows: torch's partial sort wins
        import torch

        vals, idx = torch.topk(torch.from_numpy(aff), k, dim=1, sorted=True)
        return idx.numpy(), vals.numpy()
    if k < aff.shape[1]:
        idx = np.argpartition(-aff, k - 1, axis=1)[:, :k]
    else:
        idx = np.tile(np.arange(aff.shape[1]), (aff.shape[0], 1))
    vals = np.take_along_axis(aff, idx, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(vals, order, axis=1)


@dataclass
class Shortlist:
    """Each entity's top-k candidates by true affinity: what it would ideally interact with."""

    rows: np.ndarray  # (n,) entity indices (startups, or users of the role)
    cand: np.ndarray  # (n, k) candidate indices (global), best first
    aff: np.ndarray  # (n, k) float32 affinities
    exact: bool  # False when only a sample of the candidates was scanned (bench)


def shortlist(w: World, use_case: str, k: int, rng: np.random.Generator,
              block_pairs: int = 8_000_000) -> Shortlist:
    """Top-``k`` candidates per entity in blocks of ~``block_pairs`` affinities (bounded memory).

    With ``spec.scan < 1`` each block scans a fresh random ``scan`` share of the candidates
    (approximate top-k, for bench size where the exact scan would take too long).
    """
    role = role_of(use_case)
    if use_case in REVERSE:
        rows, cols = np.arange(w.spec.n_startups), w.users_of(role)
    else:
        rows, cols = w.users_of(role), np.arange(w.spec.n_startups)
    k = min(k, len(cols))
    n_scan = max(k, int(round(len(cols) * w.spec.scan)))
    block = max(1, block_pairs // n_scan)
    cand = np.empty((len(rows), k), dtype=np.int32)  # indices < 2**31; halves bench memory
    aff = np.empty((len(rows), k), dtype=np.float32)
    for lo in range(0, len(rows), block):
        r = rows[lo:lo + block]
        c = cols if n_scan >= len(cols) else np.sort(rng.choice(cols, n_scan, replace=False))
        idx, vals = _topk_rows(w.affinity_block(use_case, r, c), k)
        cand[lo:lo + len(r)] = c[idx]
        aff[lo:lo + len(r)] = vals
    return Shortlist(rows, cand, aff, n_scan >= len(cols))


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
        self.event.append(np.full(n, event, dtype=object))
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


REV_STEPS = (("view", 0.0), ("click", -2.8), ("contact", -3.6))
FWD_STEPS = {"developer": (("view", 0.0), ("click", -2.6), ("save", -2.4), ("apply", -2.2)),
             "investor": (("view", 0.0), ("click", -2.6), ("save", -2.4), ("contact", -2.2))}
STEP_SECONDS = {"view": 5, "click": 30, "save": 90, "contact": 300, "apply": 600}


def _candidates(w: World, use_case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidate indices, their quality, their created_at) for ``use_case``."""
    if use_case in REVERSE:
        c = w.users_of(role_of(use_case))
        return c, w.U.quality[c], w.U.created[c]
    c = np.arange(w.spec.n_startups)
    return c, w.S.quality, w.S.created


def _emit(rng: np.random.Generator, use_case: str, e: np.ndarray, c: np.ndarray, aff: np.ndarray,
          exam: np.ndarray, t: np.ndarray, sess: np.ndarray, pos: np.ndarray | None,
          ev_rev: Events, ev_fwd: Events) -> None:
    """Run the cascade on aligned 1-d arrays and record the events."""
    steps = REV_STEPS if use_case in REVERSE else FWD_STEPS[role_of(use_case)]
    offset = np.zeros(len(e), np.int64) if pos is None else pos.astype(np.int64) * 5
    for event, mask in _cascade(rng, aff, exam, steps):
        r = np.flatnonzero(mask)
        when = t[r] + (offset[r] + STEP_SECONDS[event]) * 1_000_000 + rng.integers(0, 1_000_000, len(r))
        if use_case in REVERSE:
            ev_rev.add(e[r], c[r], event, when, sess[r])
        else:
            ev_fwd.add(c[r], e[r], event, when, sess[r])
            if event == "apply":  # the startup receives the application
                ev_rev.add(c[r], e[r], "apply_received", when, -1)


def _sessions(rng: np.random.Generator, w: World, use_case: str, sl: Shortlist, row: np.ndarray,
              ent: np.ndarray, ts: np.ndarray, first_sid: int, ev_rev: Events,
              ev_fwd: Events) -> dict[str, np.ndarray]:
    """Simulate sessions of ``use_case`` for entities ``ent`` (shortlist rows ``row``) at ``ts``.

    Logging policy: a pool of candidates from the entity's shortlist (what a decent production
    retriever finds) plus popularity-sampled ones; shown = top ``SLATE`` by noisy affinity +
    popularity. Returns impressions (session index, candidate index, position).
    """
    cands, qual, created = _candidates(w, use_case)
    p_pop = np.exp(0.8 * qual.astype(np.float64))
    p_pop /= p_pop.sum()
    qual_of = w.U.quality if use_case in REVERSE else w.S.quality
    created_of = w.U.created if use_case in REVERSE else w.S.created
    n_short = (w.spec.pool * 3) // 5
    out: dict[str, list[np.ndarray]] = {"session": [], "cand": [], "pos": []}
    exam = (1.0 / (1.0 + np.arange(SLATE)) ** EXAM_POWER)[None, :]
    chunk = 10_000  # (chunk, pool, d) float32 gathers stay ~100 MB
    for lo in range(0, len(ent), chunk):
        e, t, rr = ent[lo:lo + chunk], ts[lo:lo + chunk], row[lo:lo + chunk]
        sid = first_sid + lo + np.arange(len(e))
        m = len(e)
        k = sl.cand.shape[1]
        # shortlist part: n_short without replacement, weighted by exp(POLICY_TEMP * affinity)
        keys = POLICY_TEMP * sl.aff[rr] + rng.gumbel(size=(m, k))
        pick = np.argpartition(-keys, n_short - 1, axis=1)[:, :n_short] if n_short < k else \
            np.tile(np.arange(k), (m, 1))
        pool = np.hstack([sl.cand[rr[:, None], pick],
                          cands[rng.choice(len(cands), size=(m, w.spec.pool - n_short), p=p_pop)]])
        aff = w.affinity_slates(use_case, e, pool)
        score = 0.6 * aff + 0.5 * qual_of[pool] + rng.normal(0.0, 1.0, aff.shape)
        score[created_of[pool] > t[:, None]] = -np.inf  # not yet on the platform
        srt_idx = np.argsort(pool, axis=1, kind="stable")
        srt = np.take_along_axis(pool, srt_idx, axis=1)
        dup_sorted = np.zeros(srt.shape, dtype=bool)
        dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
        dup = np.zeros_like(dup_sorted)
        np.put_along_axis(dup, srt_idx, dup_sorted, axis=1)
        score[dup] = -np.inf  # one slot per candidate
        top = np.argsort(-score, axis=1, kind="stable")[:, :SLATE]
        shown = np.isfinite(np.take_along_axis(score, top, axis=1))
        r, p = np.nonzero(shown)
        c_sel = np.take_along_axis(pool, top, axis=1)[r, p]
        a_sel = np.take_along_axis(aff, top, axis=1)[r, p]
        out["session"].append(sid[r])
        out["cand"].append(c_sel)
        out["pos"].append(p)
        _emit(rng, use_case, e[r], c_sel, a_sel, exam[0, p], t[r], sid[r], p, ev_rev, ev_fwd)
    return {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in out.items()}


def _organic(rng: np.random.Generator, w: World, use_case: str, sl: Shortlist, row: np.ndarray,
             ent: np.ndarray, ts: np.ndarray, ev_rev: Events, ev_fwd: Events,
             steps: tuple[tuple[str, float], ...] | None = None, explore: float = 0.2,
             temperature: float = 1.5) -> None:
    """Organic (search/browse) events outside sessions, no ``session_id``: with probability
    ``1 - explore`` a shortlist candidate drawn by softmax(temperature x affinity), otherwise a
    uniformly random candidate; then the event cascade (``steps``, default the use case's)."""
    cands, _, created = _candidates(w, use_case)
    created_of = w.U.created if use_case in REVERSE else w.S.created
    chunk = 50_000
    for lo in range(0, len(ent), chunk):
        e, t, rr = ent[lo:lo + chunk], ts[lo:lo + chunk], row[lo:lo + chunk]
        key = temperature * sl.aff[rr] + rng.gumbel(size=(len(e), sl.aff.shape[1]))
        best = np.argmax(key, axis=1)
        c = sl.cand[rr, best]
        rand = rng.random(len(e)) < explore
        c[rand] = cands[rng.integers(0, len(cands), int(rand.sum()))]
        ok = created_of[c] <= t
        e, t, c = e[ok], t[ok], c[ok]
        aff = w.affinity(use_case, e, c) if use_case in REVERSE else w.affinity(use_case, c, e)
        st = steps or (REV_STEPS if use_case in REVERSE else FWD_STEPS[role_of(use_case)])
        if steps is None:
            _emit(rng, use_case, e, c, aff, np.ones(len(e)), t, np.full(len(e), -1), None, ev_rev, ev_fwd)
            continue
        for event, mask in _cascade(rng, aff, np.ones(len(e)), st):
            r = np.flatnonzero(mask)
            when = t[r] + STEP_SECONDS[event] * 1_000_000 + rng.integers(0, 1_000_000, len(r))
            if use_case in REVERSE:
                ev_rev.add(e[r], c[r], event, when, -1)
            else:
                ev_fwd.add(c[r], e[r], event, when, -1)
                if event == "apply":
                    ev_rev.add(c[r], e[r], "apply_received", when, -1)


def _simulate(w: World, rng: np.random.Generator,
              lists: dict[str, Shortlist]) -> dict[str, dict[str, np.ndarray]]:
    spec, S, U = w.spec, w.S, w.U
    ev_rev, ev_fwd = Events.new(), Events.new()
    sess: dict[str, list[np.ndarray]] = {"ent": [], "uc": [], "ts": []}
    imps: dict[str, list[np.ndarray]] = {"session": [], "cand": [], "pos": []}
    n_sess = 0
    # shortlist row of each entity: startups are their own row; users their index within the role
    user_row = np.zeros(len(U.ids), dtype=np.int64)
    user_row[w.dev] = np.arange(len(w.dev))
    user_row[w.inv] = np.arange(len(w.inv))

    def row_of(use_case: str, ent: np.ndarray) -> np.ndarray:
        return ent if use_case in REVERSE else user_row[ent]

    def run_sessions(use_case: str, ent: np.ndarray, ts: np.ndarray) -> None:
        nonlocal n_sess
        order = np.argsort(ts, kind="stable")
        ent, ts = ent[order], ts[order]
        out = _sessions(rng, w, use_case, lists[use_case], row_of(use_case, ent), ent, ts, n_sess,
                        ev_rev, ev_fwd)
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
    for use_case in FORWARD:
        pool = w.users_of(role_of(use_case))
        counts, start = _alive_counts(rng, U.created[pool], U.activity[pool], spec.fwd_sessions)
        run_sessions(use_case, np.repeat(pool, counts), _times_after(rng, np.repeat(start, counts)))
    # organic reverse: startups looking at profiles outside recommendations
    for use_case in REVERSE:
        counts, start = _alive_counts(rng, S.created, S.activity, spec.rev_organic / 2)
        ent = np.repeat(np.arange(len(S.ids)), counts)
        _organic(rng, w, use_case, lists[use_case], ent, ent,
                 _times_after(rng, np.repeat(start, counts)), ev_rev, ev_fwd)
    # organic forward: browsing (no applications), then developers applying on their own
    for use_case in FORWARD:
        pool = w.users_of(role_of(use_case))
        counts, start = _alive_counts(rng, U.created[pool], U.activity[pool], spec.fwd_organic)
        ent = np.repeat(pool, counts)
        _organic(rng, w, use_case, lists[use_case], row_of(use_case, ent), ent,
                 _times_after(rng, np.repeat(start, counts)), ev_rev, ev_fwd,
                 steps=FWD_STEPS[role_of(use_case)][:3])
    counts, start = _alive_counts(rng, U.created[w.dev], U.activity[w.dev], spec.applies)
    ent = np.repeat(w.dev, counts)
    _organic(rng, w, "developer_startup", lists["developer_startup"], row_of("developer_startup", ent),
             ent, _times_after(rng, np.repeat(start, counts)), ev_rev, ev_fwd,
             steps=(("apply", 3.0),), explore=0.1, temperature=2.0)

    sessions = {k: np.concatenate(v) for k, v in sess.items()}
    impressions = {k: np.concatenate(v) for k, v in imps.items()}
    return {"rev": ev_rev.cat(), "fwd": ev_fwd.cat(), "sessions": sessions, "impressions": impressions}

# --- tables --------------------------------------------------------------------------------------
def _take(ids: np.ndarray, idx: np.ndarray) -> pa.Array:
    """``ids[idx]`` as an Arrow string array (vectorised take instead of Python objects)."""
    return pa.array(ids, pa.string()).take(pa.array(np.asarray(idx, dtype=np.int64).ravel()))


def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=pa.int64()).cast(schema.TS)


def _session_ids(idx: np.ndarray) -> pa.Array:
    """Session index -> id string ("sess00000001"); -1 -> null."""
    idx = np.asarray(idx, dtype=np.int64)
    digits = pc.utf8_lpad(pa.array(np.maximum(idx, 0)).cast(pa.string()), width=8, padding="0")
    ids = pc.binary_join_element_wise("sess", digits, "")
    return pc.if_else(pa.array(idx < 0), pa.nulls(len(idx), pa.string()), ids)


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
        "startup_id": _take(S.ids, rev["s"]),
        "user_id": _take(U.ids, rev["u"]),
        "event": pa.array(rev["event"], pa.string()),
        "ts": _ts(rev["ts"]),
        "session_id": _session_ids(rev["session"]),
    })
    user_interactions = pa.table({
        "user_id": _take(U.ids, fwd["u"]),
        "startup_id": _take(S.ids, fwd["s"]),
        "event": pa.array(fwd["event"], pa.string()),
        "ts": _ts(fwd["ts"]),
        "session_id": _session_ids(fwd["session"]),
    })
    ss = sim["sessions"]
    is_rev = np.isin(ss["uc"], REVERSE)
    order = np.argsort(ss["ts"], kind="stable")
    ent_ids = pc.if_else(pa.array(is_rev[order]), _take(S.ids, np.where(is_rev, ss["ent"], 0)[order]),
                         _take(U.ids, np.where(is_rev, 0, ss["ent"])[order]))
    sessions = pa.table({
        "session_id": _session_ids(np.arange(len(ss["ts"]))[order]),
        "entity_id": ent_ids,
        "use_case": pa.array(ss["uc"][order], pa.string()),
        "ts": _ts(ss["ts"][order]),
    })
    im = sim["impressions"]
    s_uc = ss["uc"][im["session"]]
    im_rev = np.isin(s_uc, REVERSE)
    cand_ids = pc.if_else(pa.array(im_rev), _take(U.ids, np.where(im_rev, im["cand"], 0)),
                          _take(S.ids, np.where(im_rev, 0, im["cand"])))
    impressions = pa.table({
        "session_id": _session_ids(im["session"]),
        "candidate_id": cand_ids,
        "position": pa.array(im["pos"].astype(np.int32)),
        "model_version": pa.array(np.full(len(cand_ids), MODEL_VERSION, dtype=object), pa.string()),
    })
    raw = {"startups": startups, "users": users, "startup_interactions": startup_interactions,
           "user_interactions": user_interactions, "recommendation_sessions": sessions,
           "impressions": impressions}
    return {name: schema.validate(raw[name], name) for name in schema.APP_TABLES}


def oracle_table(w: World, lists: dict[str, Shortlist]) -> pa.Table:
    """The oracle: each entity's top-K candidates by true affinity (rank 1 = best), from the
    shortlists; K per direction is ``spec.oracle_k`` (0 = not written)."""
    parts = []
    k_rev, k_fwd = w.spec.oracle_k
    for use_case in (*REVERSE, *FORWARD):
        k = k_rev if use_case in REVERSE else k_fwd
        sl = lists[use_case]
        k = min(k, sl.cand.shape[1])
        if k <= 0:
            continue
        ent_ids, cand_ids = (w.S.ids, w.U.ids) if use_case in REVERSE else (w.U.ids, w.S.ids)
        n = len(sl.rows)
        parts.append(pa.table({
            "use_case": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n * k, np.int32)),
                                                       pa.array([use_case])).cast(pa.string()),
            "entity_id": _take(ent_ids, np.repeat(sl.rows, k)),
            "candidate_id": _take(cand_ids, sl.cand[:, :k]),
            "affinity": pa.array(sl.aff[:, :k].ravel().astype(np.float32)),
            "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), n)),
        }))
    return pa.concat_tables(parts) if parts else ORACLE_SCHEMA.empty_table()


ORACLE_SCHEMA = pa.schema([("use_case", pa.string()), ("entity_id", pa.string()),
                           ("candidate_id", pa.string()), ("affinity", pa.float32()),
                           ("rank", pa.int32())])


def generate(size: str = "tiny", seed: int = 0) -> dict[str, pa.Table]:
    """Generate a marketplace: the six app tables (validated) plus ``"oracle"``."""
    w, rng = build_world(size, seed)
    k_short = w.spec.shortlist_k
    lists = {uc: shortlist(w, uc, k_short, rng) for uc in (*REVERSE, *FORWARD)}
    tables = _tables(w, _simulate(w, rng, lists))
    tables["oracle"] = oracle_table(w, lists)
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
    print(f"synthetic marketplace size={args.size} seed={args.seed} -> {mask_url(url)}")
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
