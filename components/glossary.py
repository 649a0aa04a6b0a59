"""Descriptions of the parameters many components share, written once.

A component's ``Args:`` entry ``name: (shared)`` takes its text from :data:`ARGS`;
:func:`shared_args` fills it in before ``@dsl.component`` reads the docstring (the Kubeflow UI
shows it), so the time-split and tuning parameters read the same in every step. It goes *under*
``@dsl.component``; KFP ships only the ``def`` to the pod, decorators dropped.
"""

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

MARK = "(shared)"
ARGS: dict[str, str] = {
    "snapshot": "The extract step's snapshot folder.",
    "split_at": "Start of the test window (ISO-8601); empty = ``test_days`` before the last event.",
    "test_days": "Length of the test window in days when ``split_at`` is empty.",
    "val_days": "Length of the validation window in days, just before ``split_at``.",
    "trials": "Optuna trials; 0 skips the search and passes the values above through.",
    "timeout_s": "Wall-clock budget of the whole search in seconds; 0 = no limit.",
    "tune_seed": "Seed of the TPE sampler.",
    "tune_val_days": "Length of the validation window in days (trials are scored on it).",
    "tune_report": "The chosen vs default values and the trials table, for the Kubeflow UI.",
}


def shared_args(fn: F) -> F:
    """Replace each ``<name>: (shared)`` line of ``fn``'s docstring with :data:`ARGS`' text.

    ``<name>: (shared <key>)`` takes the text of another key (``seed: (shared tune_seed)``).
    Raises ``KeyError`` naming a key the glossary lacks, at import: a typo never reaches the UI.
    """
    lines = []
    for line in (fn.__doc__ or "").split("\n"):
        name, sep, rest = line.strip().partition(": ")
        if sep and rest.startswith(MARK[:-1]) and rest.endswith(")"):
            key = rest[len(MARK) - 1:-1].strip() or name
            if key not in ARGS:
                raise KeyError(f"{fn.__name__}: no shared description for {key!r} (components/glossary.py)")
            line = f"{line[:len(line) - len(line.lstrip())]}{name}: {ARGS[key]}"
        lines.append(line)
    fn.__doc__ = "\n".join(lines)
    return fn
