"""JSON request bodies parsed once, with a nesting bound, before any other code walks them.

orjson parses (C, no Python recursion) and refuses more than 1024 levels; the walk below refuses
more than :data:`MAX_DEPTH`, so no recursive code later (kserve's decoders, pydantic, the
standard ``json`` module) can hit ``RecursionError`` on what a client sent. A valid request
nests 4 levels (``{"inputs": [{"data": [...]}]}``).
"""

from __future__ import annotations

from typing import Any

import orjson

from predictors.errors import BadRequest

MAX_DEPTH = 32


def loads(data: bytes | str, *, what: str = "body") -> Any:
    """The JSON value of ``data``; :class:`BadRequest` naming ``what`` when it is not JSON or too deep."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON ({_reason(exc)})") from None
    if depth(value, limit=MAX_DEPTH) > MAX_DEPTH:
        raise BadRequest(f"{what} nests deeper than {MAX_DEPTH} levels")
    return value


def depth(value: Any, *, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), walked without recursion; stops
    early and answers ``limit + 1`` once ``limit`` is passed."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        d += 1
        if d > limit:
            return limit + 1
        deepest = max(deepest, d)
        stack.extend((child, d) for child in node if isinstance(child, dict | list))
    return deepest


def _reason(exc: orjson.JSONDecodeError) -> str:
    msg = str(exc.msg) if getattr(exc, "msg", None) else str(exc)
    return f"{msg[:80]} at byte {exc.pos}" if getattr(exc, "pos", None) is not None else msg[:80]
