"""Checks of single request fields that the predictor adds on top of :mod:`startup_recs.serving.api`.

- A ``limit`` from a query string must be ASCII digits: ``str.isdigit`` also accepts ``'²'`` or
  Arabic-Indic digits, which ``int()`` then refuses (or reads as another number).
- An entity id may not hold control characters or lone surrogates: no real id does, and such
  bytes end up in log lines and metric labels.
- A header the predictor interprets (a length, a content type) must be given at most once and
  be plain ASCII; a number header is 1-9 ASCII digits.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from predictors.errors import BadRequest
from startup_recs.serving import api

_ASCII_INT = re.compile(r"[+-]?[0-9]{1,12}")
_ASCII_LENGTH = re.compile(r"[0-9]{1,9}")


def limit_from_text(raw: str | None, *, field: str = "limit") -> int:
    """``limit`` from a query string: ASCII digits only, then the rules of ``api.parse_limit``."""
    if raw is not None and not _ASCII_INT.fullmatch(raw.strip()):
        raise BadRequest(f"{field} must be an integer, got {raw[:20]!r}")
    try:
        return api.parse_limit(raw, field=field)
    except api.InvalidRequest as exc:
        raise BadRequest(str(exc)) from None


def check_entity_id(entity_id: str, *, field: str = "entity_id") -> str:
    """``entity_id`` (already a valid ``api.parse_entity_id`` string) without control characters."""
    for ch in entity_id:
        if ch < " " or ch == "\x7f" or unicodedata.category(ch) in ("Cc", "Cs"):
            raise BadRequest(f"{field} contains a control character ({ord(ch):#06x})")
    return entity_id


def entity_id(raw: object, *, field: str = "entity_id") -> str:
    """``api.parse_entity_id`` plus :func:`check_entity_id`, as :class:`BadRequest`."""
    try:
        value = api.parse_entity_id(raw, field=field)
    except api.InvalidRequest as exc:
        raise BadRequest(str(exc)) from None
    return check_entity_id(value, field=field)


def single_header(values: Sequence[str], name: str) -> str | None:
    """The one value of header ``name`` (``None`` when absent); twice -> :class:`BadRequest`."""
    if len(values) > 1:
        raise BadRequest(f"header {name} given {len(values)} times")
    return values[0] if values else None


def length_header(value: str, name: str) -> int:
    """A byte count header: 1-9 ASCII digits."""
    if not _ASCII_LENGTH.fullmatch(value):
        raise BadRequest(f"header {name} must be a byte count (ASCII digits), got {value[:20]!r}")
    return int(value)
