"""Trainer config dataclasses as parameter dicts: their defaults, and a config built from tuned
values (a tuning step's ``best_params.json``, a Katib trial) in which every key must be known.

Each trainer's config dataclass (``TwoTowerConfig``, ``ALSConfig``, ``Item2ItemConfig``,
``RankerTrainConfig``) is the one place its defaults are written; the CLI, the tuner, the
pipeline steps and the KFP components read them from there (or are checked against them by a
unit test where KFP needs literal defaults). This module imports no trainer, so reading a
default costs nothing until the trainer itself runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from startup_recs.core.errors import ConfigError

C = TypeVar("C")


def config_defaults(cls: type) -> dict[str, Any]:
    """``{field: default}`` of a config dataclass, in field order (required fields left out)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def check_params(cls: type, params: Mapping[str, Any] | None, tunable: Collection[str] | None = None) -> dict[str, Any]:
    """``params`` as a dict, after checking that every key is a field of ``cls`` and, when
    ``tunable`` is given, one of those fields (the ones the caller hands on to the trainer).

    Raises :class:`ConfigError` naming the first offending key, so a tuned value is never
    dropped silently.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    allowed = [n for n in names if tunable is None or n in tunable]
    out = dict(params or {})
    for key in out:
        if key not in allowed:
            what = "a run setting, not a tunable parameter" if key in names else "not a parameter"
            raise ConfigError(f"tuned parameter {key!r} is {what} of {cls.__name__}; "
                              f"expected one of: {', '.join(sorted(allowed))}")
    return out


def from_params(cls: type[C], params: Mapping[str, Any] | None, *, tunable: Collection[str] | None = None,
                **settings: Any) -> C:
    """``cls(**settings)`` with the tuned ``params`` on top (see :func:`check_params`)."""
    return cls(**{**settings, **check_params(cls, params, tunable)})
