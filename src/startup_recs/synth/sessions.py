"""Behaviour over the window: recommendation sessions, their event cascade, organic events.

What: :func:`simulate` turns a :class:`~startup_recs.synth.affinity.World` and its shortlists into
index arrays of events, sessions and impressions.

* Sessions (``recommendation_sessions`` + ``impressions``): a logging policy (noisy affinity +
  popularity over a pool drawn from the shortlist and by popularity) shows up to ``SLATE`` = 10
  candidates at positions 0..9. A candidate is examined with probability
  ``1 / (1 + pos) ** EXAM_POWER``; view, click and contact / save / apply then follow
  ``sigmoid(affinity + noise + bias)`` as a cascade (each step given the previous one).
* Organic events outside sessions (no ``session_id``): search (a shortlist candidate by softmax
  over affinity, or a random one), browsing, and developers' applications (``apply`` forward,
  mirrored as ``apply_received`` on the startup side).
* Counts per entity are Poisson, scaled by its Pareto activity and the share of the window it
  exists, so startups arriving late stay cold.

The same response model answers slates someone else chose: :func:`respond` runs the
examination curve (:func:`examination`) and the cascade on shown (entity, candidate, position)
triples, and :func:`session_activity` gives the per-entity session weights; ``recs
simulate-traffic`` (:mod:`startup_recs.synth.traffic`) drives a predictor with them.

Shapes and units: every array is 1-d and aligned; entities and candidates are row indices into
:class:`~startup_recs.synth.world.Startups` / :class:`~startup_recs.synth.world.Users`; times are
int64 microseconds since the epoch; a session index of -1 means "no session". Work is chunked
(10k sessions, 50k organic events) so memory stays bounded at bench size.

Why: position bias (the examination curve) and a logging policy that prefers good candidates are
what the ranker's inverse-propensity weights and the evaluation's honest protocol exist for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from startup_recs.synth.affinity import Shortlist, World, role_of
from startup_recs.synth.world import (
    DAY_US,
    EXAM_POWER,
    FORWARD,
    POLICY_TEMP,
    REVERSE,
    SLATE,
    T0_US,
    WINDOW_DAYS,
)


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

    def add(self, s: np.ndarray, u: np.ndarray, event: str, ts: np.ndarray,
            session: np.ndarray | int) -> None:
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


def examination(pos: np.ndarray) -> np.ndarray:
    """Probability that a slot at position ``pos`` (0 = top) is examined: ``1 / (1 + pos) ** EXAM_POWER``."""
    return 1.0 / (1.0 + np.asarray(pos, dtype=np.float64)) ** EXAM_POWER


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


def candidates(w: World, use_case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    cands, qual, created = candidates(w, use_case)
    p_pop = np.exp(0.8 * qual.astype(np.float64))
    p_pop /= p_pop.sum()
    qual_of = w.U.quality if use_case in REVERSE else w.S.quality
    created_of = w.U.created if use_case in REVERSE else w.S.created
    n_short = (w.spec.pool * 3) // 5
    out: dict[str, list[np.ndarray]] = {"session": [], "cand": [], "pos": []}
    exam = examination(np.arange(SLATE))[None, :]
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
    cands, _, created = candidates(w, use_case)
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


def respond(rng: np.random.Generator, w: World, use_case: str, ent: np.ndarray, cand: np.ndarray,
            pos: np.ndarray, t: np.ndarray, session: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """The planted world's response to shown slates, with the sessions' own model: each shown
    ``(ent[i], cand[i])`` at position ``pos[i]`` (0 = top) and time ``t[i]`` (us) is examined with
    :func:`examination` and runs the use case's event cascade on its true affinity.

    ``ent``/``cand`` are row indices of the use case's entity / candidate side (startups or
    users), ``session`` a session index per impression. Returns ``{"rev", "fwd"}`` like
    :func:`simulate` (columns ``s``, ``u``, ``event``, ``ts``, ``session``, sorted by ``ts``).
    """
    ent, cand = np.asarray(ent, dtype=np.int64), np.asarray(cand, dtype=np.int64)
    pos, t = np.asarray(pos, dtype=np.int64), np.asarray(t, dtype=np.int64)
    aff = w.affinity(use_case, ent, cand) if use_case in REVERSE else w.affinity(use_case, cand, ent)
    ev_rev, ev_fwd = Events.new(), Events.new()
    _emit(rng, use_case, ent, cand, aff, examination(pos), t, np.asarray(session, dtype=np.int64), pos,
          ev_rev, ev_fwd)
    return {"rev": ev_rev.cat(), "fwd": ev_fwd.cat()}


# reverse sessions: startups seeking money search investors more often in early stages
INVESTOR_SEARCH_BY_STAGE = np.array([1.6, 1.3, 1.0, 0.7, 0.5, 0.4])


def session_activity(w: World, use_case: str) -> tuple[np.ndarray, np.ndarray]:
    """``(entity row indices, relative session rate)`` of ``use_case``: startups' Pareto activity
    (x the stage's investor-search bias for ``startup_investor``), users' activity for the forward
    use cases. :func:`simulate` draws its session counts from it (times per-entity noise)."""
    if use_case in REVERSE:
        mult = INVESTOR_SEARCH_BY_STAGE[w.S.stage] if use_case == "startup_investor" else np.ones(len(w.S.ids))
        return np.arange(len(w.S.ids)), w.S.activity * mult
    pool = w.users_of(role_of(use_case))
    return pool, w.U.activity[pool]


def simulate(w: World, rng: np.random.Generator,
              lists: dict[str, Shortlist]) -> dict[str, dict[str, np.ndarray]]:
    """The whole window's behaviour: reverse and forward sessions, organic views, applications.

    Returns ``{"rev": startup-side events, "fwd": user-side events}`` (columns ``s``, ``u``,
    ``event``, ``ts``, ``session`` as aligned arrays, sorted by ``ts``), ``"sessions"`` (``ent``,
    ``uc``, ``ts`` per session index) and ``"impressions"`` (``session``, ``cand``, ``pos``).
    Draws from ``rng`` in a fixed order, so a seed gives the same marketplace.
    """
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
    for k, use_case in enumerate(REVERSE):
        _, rate = session_activity(w, use_case)
        act = rate * rng.lognormal(0.0, 0.3, len(S.ids))
        counts, start = _alive_counts(rng, S.created, act, spec.rev_sessions[k])
        ent = np.repeat(np.arange(len(S.ids)), counts)
        run_sessions(use_case, ent, _times_after(rng, np.repeat(start, counts)))
    # forward sessions: developers and investors browsing startups
    for use_case in FORWARD:
        pool, rate = session_activity(w, use_case)
        counts, start = _alive_counts(rng, U.created[pool], rate, spec.fwd_sessions)
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
