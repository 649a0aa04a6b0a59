"""Descriptions of the parameters many components share, written once.

A component's ``Args:`` entry ``name: (shared)`` (or a line ``(shared) a b c`` for several)
takes its text from :data:`ARGS`;
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
    """Fill ``fn``'s docstring from :data:`ARGS`.

    - ``<name>: (shared)`` becomes ``<name>: <ARGS[name]>``; ``<name>: (shared <key>)`` takes
      another key's text (``seed: (shared tune_seed)``);
    - ``(shared) a b=key c`` becomes one ``Args:`` line per name, in that order (the run of
      time-split and tuning parameters most steps end with).

    Raises ``KeyError`` naming a key the glossary lacks, at import: a typo never reaches the UI.
    """

    def text(name: str, key: str) -> str:
        if key not in ARGS:
            raise KeyError(f"{fn.__name__}: no shared description for {key!r} (components/glossary.py)")
        return f"{name}: {ARGS[key]}"

    lines = []
    for line in (fn.__doc__ or "").split("\n"):
        indent = line[:len(line) - len(line.lstrip())]
        stripped = line.strip()
        name, sep, rest = stripped.partition(": ")
        if stripped.startswith(MARK + " "):
            for item in stripped[len(MARK):].split():
                n, _, k = item.partition("=")
                lines.append(indent + text(n, k or n))
            continue
        if sep and rest.startswith(MARK[:-1]) and rest.endswith(")"):
            line = indent + text(name, rest[len(MARK) - 1:-1].strip() or name)
        lines.append(line)
    fn.__doc__ = "\n".join(lines)
    return fn
