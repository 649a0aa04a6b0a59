"""Per-request options of the online API besides the id and ``limit``: candidate filters,
reciprocal scoring and the response format.

Where they come from, the same names everywhere:

- legacy routes: query parameters (``?location=berlin&skills=python,go&exclude=u1,u2``,
  ``&reciprocal=false``, ``&format=legacy``); a filter may be repeated (its values add up);
- V1: fields of each instance (``{"startup_id": "s1", "limit": 5, "skills": ["python", "go"],
  "reciprocal": false, "format": "legacy"}``; filter values as a comma-separated string or a list);
- V2: the request's ``parameters`` (``{"location": "berlin", "reciprocal": false}``; strings and
  booleans, as the protocol allows). ``format`` does not apply to V2 (its answer is tensors).

Rules: filters are :mod:`startup_recs.serving.filters`; ``reciprocal`` is ``true``/``false``
(``1``/``0``) and applies to the reverse use cases only (``None`` = the server's default: on
when the forward twin's bundle is loaded); ``format`` is ``default`` or ``legacy``
(:func:`startup_recs.serving.api.legacy_shape`). Anything else is
:class:`~startup_recs.serving.api.InvalidRequest` (HTTP 400) naming the field and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from startup_recs.core.usecases import UseCase, get_use_case
from startup_recs.serving.api import InvalidRequest
from startup_recs.serving.filters import FILTER_NAMES, NO_FILTER, CandidateFilter, parse_filters

FORMATS = ("default", "legacy")
OPTION_NAMES = (*FILTER_NAMES, "reciprocal", "format")
_BOOL_TEXT = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True)
class RequestOptions:
    """What one request asks besides id and limit; hashable (part of a query's dedupe key)."""

    filters: CandidateFilter = NO_FILTER
    reciprocal: bool | None = None  # None: the server's default
    format: str = "default"

    @property
    def legacy(self) -> bool:
        return self.format == "legacy"

    def __bool__(self) -> bool:  # anything but the defaults
        return bool(self.filters) or self.reciprocal is not None or self.format != "default"


DEFAULT_OPTIONS = RequestOptions()


def _bool(name: str, raw: object, from_text: bool) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and from_text and raw.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[raw.strip().lower()]
    raise InvalidRequest(f"{name} must be true or false, got {str(raw)[:20]!r}")


def parse_options(params: Mapping[str, Any], use_case: str | UseCase, *, from_text: bool = True,
                  allow_format: bool = True, field: str = "") -> RequestOptions:
    """:class:`RequestOptions` from the option keys of ``params`` (other keys are the caller's
    business). ``from_text``: values come from a query string (``"true"`` is a boolean there);
    ``field`` prefixes error messages (``"instances[0]."``)."""
    uc = use_case if isinstance(use_case, UseCase) else get_use_case(use_case)
    try:
        filters = parse_filters(params, uc)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{field}{exc}") from None
    reciprocal = None
    if params.get("reciprocal") is not None:
        reciprocal = _bool(f"{field}reciprocal", params["reciprocal"], from_text)
        if uc.direction != "reverse":
            raise InvalidRequest(f"{field}reciprocal applies to the reverse use cases (startups finding developers or "
                                 f"investors), not to {uc.name}")
    fmt = "default"
    if params.get("format") is not None:
        if not allow_format:
            raise InvalidRequest(f"{field}format does not apply here: a V2 answer is tensors (use V1 or the "
                                 "legacy route for format=legacy)")
        fmt = params["format"]
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise InvalidRequest(f"{field}format must be one of {', '.join(FORMATS)}, got {str(fmt)[:20]!r}")
    return RequestOptions(filters, reciprocal, fmt)


def query_options(query: Mapping[str, list[str]], use_case: str | UseCase) -> RequestOptions:
    """Options of a legacy route's query string, ``{name: [values]}`` (a repeated filter's values
    add up; ``reciprocal`` and ``format`` may be given once)."""
    flat: dict[str, Any] = {}
    for name, values in query.items():
        if name not in OPTION_NAMES or not values:
            continue
        if name in ("reciprocal", "format"):
            if len(values) > 1:
                raise InvalidRequest(f"{name} given more than once")
            flat[name] = values[0]
        else:
            flat[name] = list(values)
    return parse_options(flat, use_case)


def v2_options(parameters: Mapping[str, Any] | None, use_case: str | UseCase) -> RequestOptions:
    """Options of a V2 request's ``parameters`` (booleans or ``"true"``/``"false"``; no ``format``).
    Parameters that are not options (a client's own, e.g. ``content_type``) are left alone."""
    if not parameters:
        return DEFAULT_OPTIONS
    values = {k: _param_value(v) for k, v in parameters.items() if k in OPTION_NAMES}
    return parse_options(values, use_case, from_text=True, allow_format=False, field="parameters.")


def _param_value(v: object) -> object:
    """A V2 parameter's value: REST gives JSON values; gRPC an ``InferParameter`` message."""
    if hasattr(v, "WhichOneof"):
        kind = v.WhichOneof("parameter_choice")  # type: ignore[attr-defined]
        return getattr(v, kind) if kind else None
    return v
