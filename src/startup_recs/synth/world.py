"""The marketplace's people: vocabularies, sizes, and the startup / user profiles.

What: the value vocabularies (sectors, stages, locations, skills; ordered by frequency rank, so a
Zipf weight follows the order), the time window (``T0_US``: 2026-01-01 UTC, ``WINDOW_DAYS`` =
180; times are int64 microseconds since the epoch), the planted-affinity weights, the
:class:`SizeSpec` of each ``--size`` and the column-wise profiles :class:`Startups` /
:class:`Users` (one NumPy array per field, index = row).

Shapes and units: ``n`` rows per array; multi-valued fields (skills, sectors, stages) are
``uint64`` bit masks over their vocabulary; money is USD (float); ``created`` is microseconds;
``taste`` is ``float32 [n, TASTE_DIM]`` (the hidden collaborative signal), ``quality`` a
``float32`` log-popularity ~ N(0, 1), ``activity`` a Pareto multiplier with mean ~1.

Why: skewed (Zipf-like) values and heavy-tailed activity give the cold / warm / hot mix of a
real marketplace; bit masks keep bench size (500k users) vectorised and small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    """User profiles as arrays (index = row): developers and investors side by side, each
    field filled for its role only (0 / NaN for the other), plus hidden taste/quality."""

    ids: np.ndarray  # (n,) object str
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


def _created_at(rng: np.random.Generator, n: int, before_frac: float) -> np.ndarray:
    """Creation times: ``before_frac`` in the 2 years before the window, the rest during it."""
    before = rng.random(n) < before_frac
    days = np.where(before, -rng.uniform(0, 730, n), rng.uniform(0, WINDOW_DAYS * 0.97, n))
    return T0_US + (days * DAY_US).astype(np.int64)


def _pareto(rng: np.random.Generator, n: int, alpha: float) -> np.ndarray:
    """Pareto(alpha) activity with mean 1 (heavy tail: a few very active entities)."""
    xm = (alpha - 1.0) / alpha
    return xm * (1.0 + rng.pareto(alpha, n))


def make_startups(rng: np.random.Generator, n: int, sector_skill: np.ndarray) -> Startups:
    """``n`` startups: Zipf sectors and locations, 2-5 needed skills drawn from the sector's
    skill weights, funding ~ lognormal around the stage's median, 45 % created before the window."""
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


def make_users(rng: np.random.Generator, n: int, sector_skill: np.ndarray) -> Users:
    """``n`` users, 80 % developers (3-6 skills from a background sector, gamma experience in
    years) and 20 % investors (1-3 sectors, a band of 1-3 adjacent stages, a check size around
    1/8 of the central stage's round)."""
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


def sector_skill_weights(rng: np.random.Generator) -> np.ndarray:
    """(n_sectors, n_skills): global Zipf skill weights boosted on 5 sector-specific skills."""
    base = _zipf(len(SKILLS), 0.8)
    w = np.tile(base, (len(SECTORS), 1))
    for k in range(len(SECTORS)):
        w[k, rng.choice(len(SKILLS), 5, replace=False)] *= 6.0
    return w / w.sum(axis=1, keepdims=True)

