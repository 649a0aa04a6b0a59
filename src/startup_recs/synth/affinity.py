"""The planted affinity: what each entity truly prefers, and its top candidates.

What: ``affinity(e, c) = A * z(feature_match(e, c)) + B * <taste_e, taste_c> + C * quality_c``.
``feature_match`` is learnable from profiles (developer skills vs the startup's
``skills_needed``, location, experience vs stage; investor sectors / stages vs the startup's
sector / stage, check size vs funding); ``taste`` is the hidden 8-d vector only interactions
reveal; ``quality_c`` is the candidate's log-popularity. ``z`` standardises the feature part over
20,000 random pairs, so A, B and C (``A_FEAT``, ``B_TASTE``, ``C_QUAL``) are comparable.

Shapes: the affinity is stored as bilinear factors per user role, :attr:`World.F` ``float32
[n_startups, d]`` and :attr:`World.G` ``float32 [n_users, d]`` (zeros for users of the other
role), so a block of ``rows x cols`` affinities is one matrix product. :class:`Shortlist` holds
each entity's top-``k`` candidates (``int32 [n, k]`` candidate indices, ``float32 [n, k]``
affinities, best first).

Why: behaviour (sessions, organic events) draws from the shortlists, and the oracle table is
their head: the evaluation can then report how close a model comes to the noise-free truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from startup_recs.core.errors import ConfigError
from startup_recs.synth.world import (
    A_FEAT,
    B_TASTE,
    C_QUAL,
    LOCATIONS,
    REVERSE,
    SECTORS,
    SIZES,
    SKILLS,
    STAGES,
    SizeSpec,
    Startups,
    Users,
    make_startups,
    make_users,
    sector_skill_weights,
)

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


def match_factors(role: str, S: Startups, U: Users) -> tuple[np.ndarray, np.ndarray]:
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
    """The user role of a use case: ``developer`` or ``investor``."""
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


def build_world(size: str, seed: int) -> tuple[World, np.random.Generator]:
    """Profiles of ``size`` and their planted affinity, and the generator to keep drawing from.

    The match part is standardised over 20,000 random (startup, user of the role) pairs, so it
    has mean 0 and standard deviation ``A_FEAT`` before taste and quality are added.
    """
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; expected one of: {', '.join(SIZES)}")
    spec = SIZES[size]
    rng = np.random.default_rng(seed)
    sector_skill = sector_skill_weights(rng)
    S = make_startups(rng, spec.n_startups, sector_skill)
    U = make_users(rng, spec.n_users, sector_skill)
    dev, inv = np.flatnonzero(U.is_dev), np.flatnonzero(~U.is_dev)
    F, G, const = {}, {}, {}
    for role, pool in (("developer", dev), ("investor", inv)):
        P, Q = match_factors(role, S, U)
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
