"""Synthetic marketplace with planted ground truth (``recs synth``).

Startups and users (developers ~80 %, investors ~20 %) with skewed sectors, stages, locations
and skills, a planted affinity (feature match + latent taste + candidate quality), and ~180 days
of behaviour simulated from it: recommendation sessions with position bias and an event
cascade, plus organic events outside sessions. Activity is Pareto-distributed and startups keep
arriving, so cold (< 5 events), warm (5-19) and hot (20+) startups exist for both reverse use
cases. The true affinity's top candidates per entity are the oracle, so evaluation can report a
ceiling. Vectorised NumPy, deterministic for a given size and seed.

Modules:

- :mod:`~startup_recs.synth.world`: vocabularies, sizes (:data:`SIZES`), the profile arrays;
- :mod:`~startup_recs.synth.affinity`: the planted affinity (:class:`World`,
  :func:`build_world`) and each entity's top candidates (:func:`shortlist`);
- :mod:`~startup_recs.synth.sessions`: sessions, the event cascade, organic events
  (:func:`simulate`);
- :mod:`~startup_recs.synth.tables`: the app tables and the oracle (:func:`generate`,
  :func:`oracle_table`), summaries (:func:`segment_counts`, :func:`event_counts`);
- :mod:`~startup_recs.synth.meta`: the ``synth_meta`` row naming the world of a database
  (:func:`write_meta`, :func:`read_meta`, :func:`check_meta`);
- :mod:`~startup_recs.synth.traffic`: ``recs simulate-traffic``, the planted world answering a
  predictor's (or a baseline policy's) slates;
- :mod:`~startup_recs.synth.cli`: ``recs synth`` (:func:`cli_synth`).

Storage in the app database: list columns (``skills_needed``, ``skills``, ``sectors``,
``stages``) are JSON text (``'["python", "ml"]'``) so SQLite and PostgreSQL hold the same
thing; timestamps are UTC (``timestamptz`` on PostgreSQL, naive UTC text on SQLite).
"""

from __future__ import annotations

from startup_recs.synth.affinity import Shortlist, World, build_world, match_factors, role_of, shortlist
from startup_recs.synth.cli import cli_synth, default_oracle_path
from startup_recs.synth.meta import check_meta, read_meta, write_meta
from startup_recs.synth.sessions import examination, respond, session_activity, simulate
from startup_recs.synth.tables import ORACLE_SCHEMA, event_counts, generate, oracle_table, segment_counts
from startup_recs.synth.world import (
    A_FEAT,
    B_TASTE,
    C_QUAL,
    DAY_US,
    EXAM_POWER,
    FORWARD,
    LOCATIONS,
    REVERSE,
    SECTORS,
    SIZES,
    SKILLS,
    STAGES,
    T0_US,
    WINDOW_DAYS,
    SizeSpec,
    Startups,
    Users,
)

__all__ = [
    "A_FEAT", "B_TASTE", "C_QUAL", "DAY_US", "EXAM_POWER", "FORWARD", "LOCATIONS", "ORACLE_SCHEMA", "REVERSE",
    "SECTORS", "SIZES", "SKILLS", "STAGES", "T0_US", "WINDOW_DAYS", "Shortlist", "SizeSpec", "Startups", "Users",
    "World", "build_world", "check_meta", "cli_synth", "default_oracle_path", "event_counts", "examination",
    "generate", "match_factors", "oracle_table", "read_meta", "respond", "role_of", "segment_counts",
    "session_activity", "shortlist", "simulate", "write_meta",
]
