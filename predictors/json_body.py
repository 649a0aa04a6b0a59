"""JSON request bodies, parsed once, in C.

orjson parses without Python recursion and refuses more than 1024 levels of nesting, so no
client JSON reaches a Python ``RecursionError`` (the standard ``json`` module fails that way on a
few thousand ``[``). Nothing after this walks the parsed value recursively, and every list or
object the decoders iterate is bounded by a length check first (:mod:`predictors.v1_request`,
:mod:`predictors.v2_request`): a 1 MiB body of ``[],[],...`` costs one orjson pass on the event
loop, not a Python walk over 300,000 nodes.
"""

from __future__ import annotations

from typing import Any

import orjson

from predictors.errors import BadRequest


def loads(data: bytes | str, *, what: str = "body") -> Any:
    """The JSON value of ``data``; :class:`BadRequest` naming ``what`` when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON ({_reason(exc)})") from None


def _reason(exc: orjson.JSONDecodeError) -> str:
    msg = str(exc.msg) if getattr(exc, "msg", None) else str(exc)
    return f"{msg[:80]} at byte {exc.pos}" if getattr(exc, "pos", None) is not None else msg[:80]
