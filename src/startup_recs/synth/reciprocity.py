"""Planted reciprocity: the side that was approached answers by its *own* affinity.

What: :func:`add_replies` takes a simulated window (:func:`startup_recs.synth.sessions.simulate`)
and adds the answers to every first move:

- a startup ``contact``\\ s a developer or investor (``startup_interactions``) -> the user replies
  (``user_interactions``, event ``reply``) with probability
  ``sigmoid(forward affinity(user -> startup) + noise + REPLY_BIAS)``: the forward planted truth
  (:meth:`~startup_recs.synth.affinity.World.affinity` of ``developer_startup`` /
  ``investor_startup``) decides, not the startup's own interest;
- a developer ``apply``\\ s or an investor ``contact``\\ s a startup (``user_interactions``) -> the
  startup replies (``startup_interactions``, event ``reply``) with probability
  ``sigmoid(reverse affinity(startup -> user) + noise + REPLY_BIAS)``.

One answer per pair (to its first first-move), ``REPLY_HOURS`` later (log-uniform, 1 h to 5
days), and only when that is still inside the window; replies carry no session id.

The planted *mutual* ceiling (:func:`mutual_scores`): ``sum_i log sigmoid(a_rev + b_i) + log
sigmoid(a_fwd + REPLY_BIAS)`` over the reverse cascade's steps ``b_i``
(:data:`~startup_recs.synth.sessions.REV_STEPS`: view, click, contact), the noise-free
log-probability that a startup shown a candidate contacts them and is answered (examination and
the logging policy's exposure left out); the oracle ranks each startup's shortlist by it.

Why: a startup wants candidates who answer. Mutual evaluation (a test pair counts when both
sides acted) and the reciprocal scorer (reverse x forward scores) need that in the data.

Reverse planted data stays as it was: the replies are new rows on top, drawn from a generator of
their own (``default_rng([seed, REPLY_STREAM])``), so every other draw of the world is unchanged.
Shapes: the arrays of :func:`simulate` (1-d, aligned; indices into startups / users; int64 us).
"""

from __future__ import annotations

import numpy as np

from startup_recs.core.usecases import twin_of
from startup_recs.synth.affinity import World
from startup_recs.synth.sessions import REV_STEPS
from startup_recs.synth.world import DAY_US, T0_US, WINDOW_DAYS

REPLY_STREAM = 0x5E9  # the replies' own random stream (with the seed)
REPLY_BIAS = -3.8  # about half of the first moves get an answer (first moves already favour good pairs)
REPLY_HOURS = (1.0, 120.0)  # delay of an answer, log-uniform
REPLY_EVENT = "reply"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _first_moves(side: dict[str, np.ndarray], events: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(s, u, ts)`` of the earliest of ``events`` per (startup, user) pair (``side`` is ts-sorted)."""
    mask = np.isin(side["event"], events)
    s, u, ts = side["s"][mask], side["u"][mask], side["ts"][mask]
    if not len(s):
        return s, u, ts
    key = s.astype(np.int64) * (int(u.max()) + 1) + u.astype(np.int64)
    _, first = np.unique(key, return_index=True)  # ts-sorted input: the first index is the earliest
    first = np.sort(first)
    return s[first], u[first], ts[first]


def _answer(rng: np.random.Generator, affinity: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which first moves get an answer, and when (``bool [n]``, int64 us [n])."""
    p = _sigmoid(affinity + rng.normal(0.0, 0.5, len(affinity)) + REPLY_BIAS)
    yes = rng.random(len(affinity)) < p
    lo, hi = np.log(REPLY_HOURS[0]), np.log(REPLY_HOURS[1])
    delay = (np.exp(rng.uniform(lo, hi, len(affinity))) * 3_600_000_000).astype(np.int64)
    when = ts + delay
    return yes & (when < T0_US + WINDOW_DAYS * DAY_US), when


def _append(side: dict[str, np.ndarray], s: np.ndarray, u: np.ndarray, ts: np.ndarray) -> dict[str, np.ndarray]:
    """``side`` plus ``reply`` rows (no session), re-sorted by time (stable: old rows keep their order)."""
    out = {
        "s": np.concatenate([side["s"], s.astype(side["s"].dtype, copy=False)]),
        "u": np.concatenate([side["u"], u.astype(side["u"].dtype, copy=False)]),
        "event": np.concatenate([side["event"], np.full(len(s), REPLY_EVENT, dtype=object)]),
        "ts": np.concatenate([side["ts"], ts.astype(np.int64)]),
        "session": np.concatenate([side["session"], np.full(len(s), -1, np.int64)]),
    }
    order = np.argsort(out["ts"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def _affinity(w: World, is_dev: np.ndarray, direction: str, s: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Planted affinity of each pair (``direction`` reverse: startup -> user; forward: user ->
    startup), developers and investors each with their own use case."""
    out = np.zeros(len(s), np.float32)
    for dev, rev, fwd in ((True, "startup_developer", "developer_startup"),
                          (False, "startup_investor", "investor_startup")):
        m = is_dev == dev
        if m.any():
            out[m] = w.affinity(rev if direction == "reverse" else fwd, s[m], u[m])
    return out


def add_replies(w: World, sim: dict[str, dict[str, np.ndarray]], seed: int) -> dict[str, dict[str, np.ndarray]]:
    """``sim`` with the answers to every first move added (see the module docstring). Returns a
    new dict; ``sim["rev"]`` / ``sim["fwd"]`` gain ``reply`` rows, nothing else changes."""
    rng = np.random.default_rng([int(seed), REPLY_STREAM])
    out = dict(sim)
    # startups' contacts -> the users answer by their forward affinity
    s, u, ts = _first_moves(sim["rev"], ("contact",))
    yes, when = _answer(rng, _affinity(w, w.U.is_dev[u], "forward", s, u), ts)
    out["fwd"] = _append(sim["fwd"], s[yes], u[yes], when[yes])
    # developers' applications and investors' contacts -> the startups answer by their own affinity
    s, u, ts = _first_moves(sim["fwd"], ("apply", "contact"))
    yes, when = _answer(rng, _affinity(w, w.U.is_dev[u], "reverse", s, u), ts)
    out["rev"] = _append(sim["rev"], s[yes], u[yes], when[yes])
    return out


def mutual_scores(w: World, use_case: str, rows: np.ndarray, cand: np.ndarray, block: int = 2_000) -> np.ndarray:
    """Planted mutual score ``float32 [n, k]`` of reverse use case ``use_case``'s startups ``rows``
    ``[n]`` with their candidates ``cand`` ``[n, k]`` (user indices): the log-probability that
    the startup, shown the candidate, goes through every step of the reverse cascade to the
    contact, and the candidate answers. Blocks of ``block`` rows.

    Why the whole cascade: a contact needs a view, a click and the contact, each
    ``sigmoid(a_rev + b_i)``, so the startup's side weighs about three times in the log; one
    contact step alone would over-weigh the answer against the contact it answers."""
    twin = twin_of(use_case)
    out = np.empty(cand.shape, np.float32)
    for lo in range(0, len(rows), block):
        r = rows[lo:lo + block]
        c = cand[lo:lo + block]
        s = np.broadcast_to(r[:, None], c.shape)
        rev = w.affinity(use_case, s, c)
        fwd = w.affinity(twin, s, c)
        contact = sum(_log_sigmoid(rev + bias) for _, bias in REV_STEPS)
        out[lo:lo + block] = contact + _log_sigmoid(fwd + REPLY_BIAS)
    return out
