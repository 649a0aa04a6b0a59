"""Request parsing, validation and response shapes of the online API (no web framework here).

The predictor (``predictors/``) is a thin KServe adapter: it hands the raw parts of a request
(path id, query string, V1 JSON body, V2 tensors) to these functions and maps
:class:`InvalidRequest` to HTTP 400. Keeping them here makes every rule testable as plain Python
and shared by the legacy routes, V1 and V2, so the three protocols cannot drift apart.

Rules: ``limit`` is an integer in ``[1, 100]``, default 10, never silently capped; an
entity id is a non-empty string of at most :data:`MAX_ID_CHARS` characters; a V1 body holds
``{"instances": [{<id field>: str, "limit"?: int}, ...]}`` with no other keys; a V2 request holds
``entity_id`` BYTES ``[n]`` and an optional ``limit`` INT32 ``[1]``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from startup_recs.core.errors import RecsError
from startup_recs.core.usecases import UseCase

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_BATCH = 256  # entities per V1/V2 request
MAX_ID_CHARS = 256
MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any valid request (256 ids x 256 chars + JSON)
V2_INT_TYPES = ("INT32", "INT64")  # INT32 per the contract; INT64 because many clients default to it


class InvalidRequest(RecsError):
    """The request is malformed (HTTP 400); the message names the field and the problem."""


@dataclass(frozen=True)
class Query:
    """One recommendation question: ``entity_id`` wants ``limit`` candidates; ``options``
    (:class:`startup_recs.serving.options.RequestOptions`: filters, reciprocal, format) or
    ``None`` for the defaults. Hashable: a batch computes each distinct query once."""

    entity_id: str
    limit: int
    options: Any = None


@dataclass(frozen=True)
class Tensor:
    """A V2 input tensor, decoded by the adapter: ``data`` is a flat sequence or numpy array."""

    name: str
    datatype: str
    shape: Sequence[int]
    data: Any


def id_fields(use_case: UseCase) -> tuple[str, ...]:
    """Accepted names of the entity id in a V1 instance: ``startup_id``/``user_id`` or ``entity_id``."""
    kind = "startup_id" if use_case.entity_is_startup else "user_id"
    return (kind, "entity_id")


_ASCII_INT = re.compile(r"[+-]?[0-9]+")
_ASCII_DIGITS = re.compile(r"[0-9]{1,18}")
MAX_HEADER_DEPTH = 32  # a V2 header is an object of inputs of shape lists: 4 levels deep


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_too_deep(text: bytes | str, limit: int) -> bool:
    """True when ``text`` nests ``[`` / ``{`` deeper than ``limit`` (brackets inside strings do
    not count), decided without recursion: when it holds at most ``limit`` brackets it cannot be;
    otherwise strings are cut out by one regex and the depth is a cumulative sum (numpy, C speed
    even for a 1 MiB body). Why: Python's ``json`` parser recurses, so a header of 100k ``[``
    raises RecursionError (or exhausts the stack) before any check of ours runs."""
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    a = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    steps = ((a == 0x5B) | (a == 0x7B)).astype(np.int32) - ((a == 0x5D) | (a == 0x7D)).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0)) > limit


def parse_limit(raw: object, *, field: str = "limit", from_text: bool = True) -> int:
    """``limit`` from a query string (str, when ``from_text``) or JSON (int); ``None`` means 10.

    A JSON ``10.0`` is the integer 10: JSON has one number type, JSON Schema (and the OpenAPI
    document) calls ``10.0`` an integer, and Python's ``json.dumps`` writes a float that way.
    Raises :class:`InvalidRequest` for a bool, a fractional or text-borne float, a non-numeric
    string or a value outside ``[1, MAX_LIMIT]``: an out-of-range limit is an error, never capped.
    """
    if raw is None:
        return DEFAULT_LIMIT
    if isinstance(raw, bool):
        raise InvalidRequest(f"{field} must be an integer, got a boolean")
    if isinstance(raw, str) and from_text:
        text = raw.strip()
        # ASCII only: str.isdigit also accepts '²' or Arabic-Indic digits, which int() then
        # refuses (a 500) or reads as a number the client never wrote
        if not _ASCII_INT.fullmatch(text) or len(text) > 12:
            raise InvalidRequest(f"{field} must be an integer, got {raw[:20]!r}")
        value = int(text)
    elif isinstance(raw, int | np.integer) or (
            not from_text and isinstance(raw, float | np.floating) and float(raw).is_integer()):
        value = int(raw)
    else:
        raise InvalidRequest(f"{field} must be an integer, got {type(raw).__name__}")
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidRequest(f"{field} must be between 1 and {MAX_LIMIT}, got {value}")
    return value


def parse_entity_id(raw: object, *, field: str = "entity_id") -> str:
    """A non-empty id string of at most :data:`MAX_ID_CHARS` characters (bytes are UTF-8 decoded)."""
    if isinstance(raw, bytes | np.bytes_):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"{field} is not valid UTF-8") from None
    if not isinstance(raw, str):
        raise InvalidRequest(f"{field} must be a string, got {type(raw).__name__}")
    if not raw or len(raw) > MAX_ID_CHARS or raw != raw.strip():
        raise InvalidRequest(f"{field} must be a non-empty string of at most {MAX_ID_CHARS} characters "
                             "without surrounding spaces")
    return raw


def parse_v1(body: object, use_case: UseCase) -> list[Query]:
    """The queries of a V1 ``:predict`` body ``{"instances": [{"startup_id": "...", "limit": 10}]}``;
    an instance may also carry the options of :mod:`startup_recs.serving.options` (filters,
    ``reciprocal``, ``format``)."""
    from startup_recs.serving.options import OPTION_NAMES, parse_options

    if not isinstance(body, Mapping):
        raise InvalidRequest("body must be a JSON object with an 'instances' list")
    extra = set(body) - {"instances"}
    if extra:
        raise InvalidRequest(f"unexpected field(s) in body: {', '.join(sorted(map(str, extra)))}")
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest("'instances' must be a non-empty list")
    if len(instances) > MAX_BATCH:
        raise InvalidRequest(f"at most {MAX_BATCH} instances per request, got {len(instances)}")
    names = id_fields(use_case)
    queries = []
    for i, inst in enumerate(instances):
        if not isinstance(inst, Mapping):
            raise InvalidRequest(f"instances[{i}] must be an object with {names[0]!r}")
        present = [n for n in names if n in inst]
        if len(present) != 1:
            raise InvalidRequest(f"instances[{i}] needs exactly one of {', '.join(map(repr, names))}")
        extra = set(inst) - {present[0], "limit", *OPTION_NAMES}
        if extra:
            raise InvalidRequest(f"instances[{i}] has unexpected field(s): {', '.join(sorted(map(str, extra)))}")
        options = parse_options(inst, use_case, from_text=False, field=f"instances[{i}].")
        queries.append(Query(parse_entity_id(inst[present[0]], field=f"instances[{i}].{present[0]}"),
                             parse_limit(inst.get("limit"), field=f"instances[{i}].limit", from_text=False),
                             options or None))
    return queries


def _shape(t: Tensor) -> list[int]:
    if not isinstance(t.shape, list | tuple) or not all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) for d in t.shape
    ):
        raise InvalidRequest(f"input {t.name!r}: shape must be a list of integers")
    return [int(d) for d in t.shape]


def _flat(t: Tensor) -> list:
    data = t.data
    if isinstance(data, np.ndarray):
        return data.reshape(-1).tolist()
    if not isinstance(data, list | tuple):
        raise InvalidRequest(f"input {t.name!r}: data must be a list")
    flat: list = []
    stack = [iter(data)]
    while stack:  # nested JSON lists are allowed by the V2 protocol; flatten row-major
        for x in stack[-1]:
            if isinstance(x, list | tuple):
                stack.append(iter(x))
                break
            flat.append(x)
        else:
            stack.pop()
    return flat


def parse_v2(inputs: Iterable[Tensor]) -> tuple[list[str], int]:
    """``(entity_ids, limit)`` of a V2 request: ``entity_id`` BYTES ``[n]``, optional ``limit`` INT32 ``[1]``."""
    by_name: dict[str, Tensor] = {}
    for t in inputs:
        if t.name in by_name:
            raise InvalidRequest(f"input {t.name!r} given twice")
        by_name[t.name] = t
    extra = set(by_name) - {"entity_id", "limit"}
    if extra:
        raise InvalidRequest(f"unexpected input(s): {', '.join(sorted(extra))}; expected entity_id[, limit]")
    ent = by_name.get("entity_id")
    if ent is None:
        raise InvalidRequest("missing input 'entity_id' (BYTES, shape [n])")
    if ent.datatype != "BYTES":
        raise InvalidRequest(f"input 'entity_id' must be BYTES, got {ent.datatype}")
    shape = _shape(ent)
    if len(shape) != 1 or not 1 <= shape[0] <= MAX_BATCH:
        raise InvalidRequest(f"input 'entity_id' must have shape [n] with 1 <= n <= {MAX_BATCH}, got {shape}")
    values = _flat(ent)
    if len(values) != shape[0]:
        raise InvalidRequest(f"input 'entity_id' has {len(values)} elements but shape {shape}")
    ids = [parse_entity_id(v, field=f"entity_id[{i}]") for i, v in enumerate(values)]
    limit = DEFAULT_LIMIT
    lim = by_name.get("limit")
    if lim is not None:
        if lim.datatype not in V2_INT_TYPES:
            raise InvalidRequest(f"input 'limit' must be INT32, got {lim.datatype}")
        if _shape(lim) != [1]:
            raise InvalidRequest(f"input 'limit' must have shape [1], got {list(lim.shape)}")
        flat = _flat(lim)
        if len(flat) != 1:
            raise InvalidRequest(f"input 'limit' has {len(flat)} elements but shape [1]")
        limit = parse_limit(flat[0], from_text=False)
    return ids, limit


def v2_outputs(answers: Sequence[Mapping[str, Any]], limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The V2 output tensors of answers from ``Recommender.recommend``.

    Returns ``candidate_ids`` (object array of ``bytes`` [n, limit]), ``scores`` (float32
    [n, limit]) and ``route`` (object array of ``bytes`` [n], the answer's ``method_used``).
    A row with fewer than ``limit`` candidates is padded with ``b""`` ids and NaN scores, so the
    tensor stays rectangular and padding can never be mistaken for a real candidate.
    """
    n = len(answers)
    ids = np.full((n, limit), b"", dtype=object)
    scores = np.full((n, limit), np.nan, dtype=np.float32)
    routes = np.empty(n, dtype=object)
    for i, ans in enumerate(answers):
        cands = ans["candidates"][:limit]
        ids[i, : len(cands)] = [str(c["id"]).encode() for c in cands]
        scores[i, : len(cands)] = [float(c["score"]) for c in cands]
        routes[i] = str(ans["method_used"]).encode()
    return ids, scores, routes


def legacy_response(answer: Mapping[str, Any], use_case: UseCase) -> dict[str, Any]:
    """The JSON object of the legacy routes and of each V1 prediction: the recommender's answer
    plus ``use_case``. Scores become plain floats (non-finite ones ``None``) so any JSON encoder works."""
    out = dict(answer)
    out["use_case"] = use_case.name
    out["candidates"] = [
        {**c, "score": (float(c["score"]) if math.isfinite(float(c["score"])) else None)}
        for c in answer["candidates"]
    ]
    return out


LEGACY_TTL_S = 3600  # expires_at of a legacy-shape answer: created_at + 1 h (how long a client may cache it)


def legacy_shape(answer: Mapping[str, Any], use_case: UseCase, now: Any = None) -> dict[str, Any]:
    """The legacy Flask service's answer (``?format=legacy``), from a :func:`legacy_response` dict::

        {"use_case", "method", "model_version", "user_ids" | "startup_ids": [id, ...] (best first),
         "scores": {id: score}, "match_reasons": {id: [str, ...]}, "total", "interaction_count",
         "created_at", "expires_at"}  (+ "recommendation_session_id" when sessions are logged)

    ``user_ids`` when the candidates are users (reverse use cases), ``startup_ids`` when they are
    startups. Times are ISO-8601 UTC; ``expires_at`` = ``created_at`` + :data:`LEGACY_TTL_S`.
    ``now`` (a ``datetime``) pins ``created_at`` for tests."""
    from datetime import UTC, datetime, timedelta

    created = now or datetime.now(UTC)
    cands = list(answer.get("candidates", []))
    ids = [str(c["id"]) for c in cands]
    out: dict[str, Any] = {
        "use_case": use_case.name,
        "method": answer.get("method_used"),
        "model_version": answer.get("model_version"),
        ("startup_ids" if use_case.candidate_kind == "startup" else "user_ids"): ids,
        "scores": {str(c["id"]): c["score"] for c in cands},
        "match_reasons": {str(c["id"]): list(c.get("match_reasons") or []) for c in cands},
        "total": int(answer.get("total", len(ids))),
        "interaction_count": int(answer.get("interaction_count", 0)),
        "created_at": created.isoformat(),
        "expires_at": (created + timedelta(seconds=LEGACY_TTL_S)).isoformat(),
    }
    if answer.get("session_id"):
        out["recommendation_session_id"] = answer["session_id"]
    return out


def render(answer: Mapping[str, Any], use_case: UseCase, options: Any = None) -> dict[str, Any]:
    """The JSON object of one answer: :func:`legacy_response`, or :func:`legacy_shape` of it
    when ``options`` ask for ``format=legacy``."""
    out = legacy_response(answer, use_case)
    return legacy_shape(out, use_case) if options is not None and getattr(options, "legacy", False) else out


_FIXED_SIZES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "UINT32": 4, "INT32": 4,
                "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}


def check_v2_binary(body: bytes, json_length: str) -> None:
    """Check the envelope of a binary-tensor V2 request before any decoder touches it.

    The body is a JSON header of ``json_length`` bytes (the ``Inference-Header-Content-Length``
    header) followed by raw tensors, each sized by its ``parameters.binary_data_size``. A
    header that lies about sizes, a missing field or a BYTES tensor whose 4-byte length prefixes
    overrun it raise :class:`InvalidRequest` here, instead of an exception deep in a decoder.
    """
    import json

    if not _ASCII_DIGITS.fullmatch(json_length) or int(json_length) > len(body):
        raise InvalidRequest(f"Inference-Header-Content-Length {json_length[:20]!r} does not fit a "
                             f"{len(body)}-byte body")
    n = int(json_length)
    if json_too_deep(body[:n], MAX_HEADER_DEPTH):
        raise InvalidRequest(f"the JSON header nests deeper than {MAX_HEADER_DEPTH} levels")
    try:
        header = json.loads(body[:n])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("the JSON header of the binary request is not valid JSON") from None
    inputs = header.get("inputs") if isinstance(header, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest("the request header needs a non-empty 'inputs' list")
    pos = n
    for i, inp in enumerate(inputs):
        if not isinstance(inp, dict) or not isinstance(inp.get("name"), str) \
                or not isinstance(inp.get("datatype"), str) or not isinstance(inp.get("shape"), list):
            raise InvalidRequest(f"inputs[{i}] needs 'name' (str), 'datatype' (str) and 'shape' (list)")
        t = Tensor(inp["name"], inp["datatype"], inp["shape"], None)
        count = math.prod(_shape(t))
        params = inp.get("parameters") or {}
        if inp.get("data") is not None:  # "data": null is no data: the tensor must be binary then
            continue
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or pos + size > len(body):
            raise InvalidRequest(f"input {t.name!r}: needs 'data' or a 'binary_data_size' that fits the body")
        chunk = body[pos:pos + size]
        pos += size
        if t.datatype == "BYTES":
            off, items = 0, 0
            while off < len(chunk):
                if off + 4 > len(chunk):
                    raise InvalidRequest(f"input {t.name!r}: truncated BYTES element")
                off += 4 + int.from_bytes(chunk[off:off + 4], "little")
                if off > len(chunk):
                    raise InvalidRequest(f"input {t.name!r}: truncated BYTES element")
                items += 1
            if off != len(chunk) or items != count:
                raise InvalidRequest(f"input {t.name!r}: BYTES data holds {items} elements, shape says {count}")
        elif t.datatype in _FIXED_SIZES:
            if size != count * _FIXED_SIZES[t.datatype]:
                raise InvalidRequest(f"input {t.name!r}: {size} bytes do not hold {count} {t.datatype} values")
        else:
            raise InvalidRequest(f"input {t.name!r}: unknown datatype {t.datatype!r}")
    if pos != len(body):
        raise InvalidRequest(f"{len(body) - pos} bytes after the last input tensor")


def example_curls(base_url: str, use_case: UseCase, entity_id: str, limit: int = 5) -> list[str]:
    """Working ``curl`` calls of the three protocols for one entity (printed by ``recs serve``)."""
    import json
    import shlex

    v1 = {"instances": [{id_fields(use_case)[0]: entity_id, "limit": limit}]}
    v2 = {"inputs": [{"name": "entity_id", "datatype": "BYTES", "shape": [1], "data": [entity_id]},
                     {"name": "limit", "datatype": "INT32", "shape": [1], "data": [limit]}]}
    post = "curl -s -X POST -H 'content-type: application/json'"
    return [
        f"curl -s {shlex.quote(base_url + use_case.route.format(id=entity_id) + f'?limit={limit}')}",
        f"{post} {base_url}/v1/models/{use_case.model_name}:predict -d {shlex.quote(json.dumps(v1))}",
        f"{post} {base_url}/v2/models/{use_case.model_name}/infer -d {shlex.quote(json.dumps(v2))}",
    ]
