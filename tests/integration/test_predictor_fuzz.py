"""Fuzzing a real predictor on 127.0.0.1 (the fixtures of test_predictor.py), about 60 s in all
(15 s to build and start it, then 30 + 12 s of requests):

- schemathesis over the app's own OpenAPI document, positive and negative cases, with the path
  parameters and body ids narrowed to served models and known entities (plus one unknown of
  each), so most requests get past the 404s into the parsers and the model;
- hypothesis-generated binary V2 bodies: a JSON header and binary tensors, each size, shape,
  datatype, length header and tail either right or perturbed.

Every answer must be below 500 (a 4xx with ``{"error": ...}``), and the server must still be
ready, with no traceback in its log, afterwards. Header bytes that are not HTTP field-value
characters are not generated: uvicorn's HTTP parser refuses those requests itself (a plain-text
400) before any predictor code runs.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.integration import test_predictor as base
from tests.integration.predictor_support import Server

world, server, client, truth = base.world, base.server, base.client, base.truth
SCHEMA_BUDGET_S = 30.0
BINARY_BUDGET_S = 12.0
BATCH = 25  # examples per hypothesis run; runs repeat until the budget is spent
LENGTH = "inference-header-content-length"
# derandomize=False: hypothesis's "ci" profile (loaded when CI is set) derandomizes, and every
# batch would then draw the same examples; each batch gets its own @seed instead (reproducible)
_FUZZ = settings(deadline=None, database=None, phases=[Phase.generate], print_blob=True, derandomize=False,
                 suppress_health_check=list(HealthCheck))


def _known(truth: dict) -> list[str]:
    return [truth["pick"][s] for s in ("cold", "warm", "hot")]


def narrowed(spec: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """The OpenAPI document with model names, versions and entity ids drawn from valid values
    (plus one invalid one each), so that generated requests reach past the 404s."""
    spec = copy.deepcopy(spec)
    enums = {"model_name": ["startup-developer", "startup-investor", "nope"], "model_version": ["1", "v1", "7"],
             "entity_id": [*ids, "ghost"]}
    for ops in spec["paths"].values():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["name"] in enums and p["in"] in ("path", "query"):
                    p["schema"] = {"type": "string", "enum": enums[p["name"]]}
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if not body:
                continue
            instances = body.get("properties", {}).get("instances")
            if instances:  # one id field, as both served (reverse) use cases name it
                instances["items"] = {"type": "object", "required": ["startup_id"], "additionalProperties": False,
                                      "properties": {"startup_id": {"type": "string", "enum": enums["entity_id"]},
                                                     "limit": {"type": "integer", "minimum": 1, "maximum": 100}}}
                instances["maxItems"] = 8
            inputs = body.get("properties", {}).get("inputs")
            if inputs:  # the two tensors of the contract, each alone valid
                inputs["items"] = {"oneOf": [
                    {"type": "object", "required": ["name", "datatype", "shape", "data"], "additionalProperties": False,
                     "properties": {"name": {"const": "entity_id"}, "datatype": {"const": "BYTES"},
                                    "shape": {"const": [1]},  # batches: the binary fuzz below
                                    "data": {"type": "array", "items": {"type": "string", "enum": enums["entity_id"]},
                                             "minItems": 1, "maxItems": 1}}},
                    {"type": "object", "required": ["name", "datatype", "shape", "data"], "additionalProperties": False,
                     "properties": {"name": {"const": "limit"}, "datatype": {"enum": ["INT32", "INT64"]},
                                    "shape": {"const": [1]},
                                    "data": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 100},
                                             "minItems": 1, "maxItems": 1}}}]}
    return spec


def _check(status: int, text: str, what: str) -> None:
    assert status < 500, f"{what} -> {status} {text[:500]}"
    if status >= 400:
        body = json.loads(text)
        assert list(body) == ["error"] and body["error"], f"{what} -> {status} {text[:500]}"


def until_spent(budget_s: float, batch: Callable[[int], None]) -> int:
    """Run ``batch(i)`` (one hypothesis run of :data:`BATCH` examples) until ``budget_s`` is spent:
    hypothesis has no wall-clock bound, and past a budget it would still generate every example."""
    end, i = time.monotonic() + budget_s, 0
    while time.monotonic() < end:
        batch(i)
        i += 1
    return i


def test_schemathesis_over_the_openapi_document_finds_no_5xx(server: Server, truth: dict) -> None:
    spec = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(narrowed(spec, _known(truth)))
    positive = schema.as_strategy(schemathesis.GenerationMode.POSITIVE)
    negative = schema.as_strategy(schemathesis.GenerationMode.NEGATIVE)
    seen: Counter[tuple[str, int]] = Counter()
    session = requests.Session()

    def batch(i: int) -> None:
        @seed(i)
        @settings(_FUZZ, max_examples=BATCH)
        @given(case=negative if i % 3 == 2 else positive)  # two positive batches per negative one
        def run(case: schemathesis.Case) -> None:
            r = case.call(base_url=server.url, session=session, timeout=30)
            seen[(case.path, r.status_code)] += 1
            _check(r.status_code, r.text, case.as_curl_command())

        run()

    until_spent(SCHEMA_BUDGET_S, batch)
    by_code = Counter()
    for (_, code), n in seen.items():
        by_code[code] += n
    print("schemathesis answers by status:", dict(by_code))
    answered = {path for (path, code) in seen if code == 200}
    assert "/v1/models/{model_name}:predict" in answered, seen
    assert answered & {"/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer"}, seen
    assert any(p.startswith("/api/recommendations/") for p in answered), seen
    assert by_code[400] > 10, by_code
    _still_ready(server)


ABSENT = object()


@st.composite
def binary_requests(draw: st.DrawFn, ids: list[str]) -> tuple[bytes, list[tuple[str, bytes]], bool]:
    """A binary V2 request, ``(body, headers, valid)``: half of them valid (known ids, a limit,
    right sizes), the others with any part perturbed (most of those invalid)."""
    if not draw(st.booleans()):
        return (*draw(_valid_binary(ids)), True)
    inputs, tail = [], b""
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["ids", "ids", "limit", "other"]))
        if kind == "ids":
            values = draw(st.lists(st.sampled_from([i.encode() for i in [*ids, "ghost"]]) | st.binary(max_size=10),
                                   max_size=4))
            name, datatype, shape = "entity_id", "BYTES", [len(values)]
            payload = _bytes_tensor(values)
        elif kind == "limit":
            datatype = draw(st.sampled_from(["INT32", "INT64", "FP32", "BOOL", "UINT64"]))
            dtype = {"INT32": "<i4", "INT64": "<i8", "FP32": "<f4", "BOOL": "?", "UINT64": "<u8"}[datatype]
            value = draw(st.integers(-3, 200) | st.integers(0, 2**31 - 1))
            name, shape, payload = "limit", [1], np.array([value]).astype(dtype).tobytes()
        else:
            name = draw(st.sampled_from(["entity_id", "limit", "x", ""]) | st.text(max_size=6))
            datatype = draw(st.sampled_from(["BYTES", "INT32", "FP16", "FP64", "STRING"]) | st.text(max_size=5))
            shape = draw(st.lists(st.integers(0, 4) | st.integers(-2**33, 2**40), max_size=3))
            payload = draw(st.binary(max_size=48))
        if draw(st.integers(0, 4)) == 0:
            shape = draw(st.lists(st.integers(-1, 300), max_size=3) | st.none() | st.text(max_size=3))
        size: Any = len(payload) + draw(st.sampled_from([0, 0, 0, 0, 1, -1, 4, -4, 10**6]))
        if draw(st.integers(0, 9)) == 0:
            size = draw(st.none() | st.text(max_size=3) | st.booleans() | st.floats(allow_nan=False))
        inp: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if draw(st.integers(0, 5)):
            inp["parameters"] = {"binary_data_size": size}
        data = draw(st.sampled_from([ABSENT, ABSENT, ABSENT, None, [], ["s000001"], 5]))
        if data is not ABSENT:
            inp["data"] = data
        inputs.append(inp)
        tail += payload
    header: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        header["outputs"] = draw(st.lists(st.sampled_from([{"name": "scores"}, {"name": "route", "parameters": {
            "binary_data": True}}, {"name": "nope"}, "scores", {"name": "error"}]), max_size=3))
    if draw(st.booleans()):
        header["parameters"] = {"binary_data_output": draw(st.booleans() | st.just("yes"))}
    head = json.dumps(header).encode()
    if draw(st.integers(0, 9)) == 0:
        head = draw(st.binary(max_size=64))
    tail += draw(st.sampled_from([b"", b"", b"", b"\x00", b"junk"]))
    length: bytes = str(len(head) + draw(st.sampled_from([0, 0, 0, 0, 1, -1, -len(head), 10**6]))).encode()
    if draw(st.integers(0, 9)) == 0:  # HTTP field-value bytes only: others never reach the app (module doc)
        length = draw(st.sampled_from(["²".encode("latin-1"), b"", b"-0", b"0x10", b"1 2", b"1e3"]) | st.binary(
            min_size=1, max_size=4).map(lambda b: bytes(x for x in b if 0x21 <= x <= 0x7E or x >= 0x80) or b"x"))
    headers = [(LENGTH, length)]
    if draw(st.integers(0, 14)) == 0:
        headers.append((LENGTH, str(len(head)).encode()))
    return head + tail, headers, False


@st.composite
def _valid_binary(draw: st.DrawFn, ids: list[str]) -> tuple[bytes, list[tuple[str, bytes]]]:
    values = [v.encode() for v in draw(st.lists(st.sampled_from(ids), min_size=1, max_size=4))]
    tensors = [({"name": "entity_id", "datatype": "BYTES", "shape": [len(values)]}, _bytes_tensor(values))]
    if draw(st.booleans()):
        datatype = draw(st.sampled_from(["INT32", "INT64"]))
        raw = np.array([draw(st.integers(1, 100))], "<i4" if datatype == "INT32" else "<i8").tobytes()
        tensors.append(({"name": "limit", "datatype": datatype, "shape": [1]}, raw))
    tensors = [tensors[i] for i in draw(st.permutations(range(len(tensors))))]  # any input order
    header: dict[str, Any] = {"inputs": [{**t, "parameters": {"binary_data_size": len(raw)}} for t, raw in tensors]}
    tail = b"".join(raw for _, raw in tensors)
    if draw(st.booleans()):
        header["outputs"] = [{"name": n, "parameters": {"binary_data": draw(st.booleans())}}
                             for n in draw(st.lists(st.sampled_from(["candidate_ids", "scores", "route", "error"]),
                                                    min_size=1, max_size=4, unique=True))]
    head = json.dumps(header).encode()
    return head + tail, [(LENGTH, str(len(head)).encode())]


def _bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(len(v).to_bytes(4, "little") + v for v in values)


def test_generated_binary_v2_bodies_get_no_5xx(server: Server, truth: dict) -> None:
    codes: Counter[int] = Counter()
    strategy = binary_requests(_known(truth))
    with httpx.Client(base_url=server.url, timeout=30) as c:

        def batch(i: int) -> None:
            @seed(i)
            @settings(_FUZZ, max_examples=BATCH)
            @given(req=strategy)
            def run(req: tuple[bytes, list[tuple[str, bytes]], bool]) -> None:
                body, headers, valid = req
                r = c.post("/v2/models/startup-developer/infer", content=body, headers=headers)
                codes[r.status_code] += 1
                what = f"{headers!r} {body[:300]!r}"
                _check(r.status_code, r.text if r.status_code >= 400 else "{}", what)
                assert r.status_code == 200 or not valid, f"{what} -> {r.status_code} {r.text[:300]}"

            run()

        until_spent(BINARY_BUDGET_S, batch)
    print("binary V2 answers by status:", dict(codes))
    assert codes[200] > 50 and codes[400] > 50, codes
    _still_ready(server)


def _still_ready(server: Server) -> None:
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=30).status_code == 200
    for model in ("startup-developer", "startup-investor"):
        assert httpx.get(f"{server.url}/v2/models/{model}/ready", timeout=30).status_code == 200
    log = server.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log

