"""The search spaces of the hyperparameter search and the values each search starts from.

:data:`SEARCH_SPACES` is the one definition that both Optuna (:func:`suggest`) and the Katib
``Experiment`` manifests are generated from. The values a search is compared with (trial 0)
come from each trainer's config dataclass (:func:`default_params`), the one place trainer
defaults are written; a parameter that is not searched raises :class:`ConfigError` naming it.
"""

from __future__ import annotations

from typing import Any

from startup_recs.core.errors import ConfigError
from startup_recs.train.ranker_search import SPACE as RANKER_SPACE

# name -> {param: spec}. spec: ("int"|"float", low, high, log) or ("cat", [choices]).
SEARCH_SPACES: dict[str, dict[str, tuple]] = {
    "als": {
        "factors": ("int", 16, 256, True),
        "regularization": ("float", 1e-3, 10.0, True),
        "alpha": ("float", 0.1, 100.0, True),
        "iterations": ("int", 5, 30, False),
        "weighting": ("cat", ["linear", "binary", "log", "bm25"]),
    },
    "item2item": {
        "method": ("cat", ["ease", "cosine", "bm25"]),
        "lam": ("float", 1.0, 5000.0, True),
        "neighbours": ("int", 10, 500, True),
    },
    "two-tower": {
        "embedding_dim": ("cat", [32, 64, 128]),
        "lr": ("float", 1e-4, 1e-2, True),
        "temperature": ("float", 0.03, 0.5, True),
        "hard_negatives": ("int", 0, 5, False),
    },
    "ranker": RANKER_SPACE,  # learner + its key parameters, shared with the trainer's own search
}
MODELS = tuple(SEARCH_SPACES)


def config_class(model: str) -> type:
    """The trainer config dataclass of ``model`` (imported on demand: two-tower pulls in torch)."""
    if model == "als":
        from startup_recs.train.als import ALSConfig

        return ALSConfig
    if model == "item2item":
        from startup_recs.train.item2item import Item2ItemConfig

        return Item2ItemConfig
    if model == "two-tower":
        from startup_recs.train.two_tower import TwoTowerConfig

        return TwoTowerConfig
    if model == "ranker":
        from startup_recs.train.ranker import RankerTrainConfig

        return RankerTrainConfig
    raise ConfigError(f"unknown model {model!r}; expected one of: {', '.join(MODELS)}")


def default_params(model: str) -> dict[str, Any]:
    """The values each search is compared with (trial 0 unless the caller gives its own): the
    trainer config's defaults of the searched parameters, spelled as the search space spells them
    (item-to-item ``auto`` is the search's ``ease``: EASE where it fits; ranker ``hidden`` is a
    comma-separated string)."""
    from startup_recs.train.params import config_defaults

    defaults = config_defaults(config_class(model))
    out: dict[str, Any] = {}
    for name in SEARCH_SPACES[model]:
        value = defaults[name]
        if model == "item2item" and name == "method" and value == "auto":
            value = "ease"
        elif model == "ranker" and name == "hidden":
            value = ",".join(str(h) for h in value)
        out[name] = value
    return out


def check_search_params(model: str, params: dict[str, Any] | None, what: str = "tuned parameter") -> dict[str, Any]:
    """``params`` as a dict after checking every key is a searched parameter of ``model``;
    another key raises :class:`ConfigError` naming it (never dropped silently)."""
    known = SEARCH_SPACES[model]
    for key in params or {}:
        if key not in known:
            raise ConfigError(f"{what} {key!r} is not searched for {model}; expected one of: {', '.join(known)}")
    return dict(params or {})


def suggest(trial: Any, model: str) -> dict[str, Any]:
    """Draw one parameter set for ``model`` from :data:`SEARCH_SPACES`."""
    out: dict[str, Any] = {}
    for name, spec in SEARCH_SPACES[model].items():
        if spec[0] == "int":
            out[name] = trial.suggest_int(name, spec[1], spec[2], log=spec[3])
        elif spec[0] == "float":
            out[name] = trial.suggest_float(name, spec[1], spec[2], log=spec[3])
        else:
            out[name] = trial.suggest_categorical(name, spec[1])
    return out
