"""Hostile clients against a real predictor on 127.0.0.1 (the fixtures of test_predictor.py): every
bad request gets a 4xx ``{"error": ...}`` naming the problem, never a 5xx, an exception class
name or a traceback, and the server stays ready. Then per-instance errors in batches, the
version and explain routes, and overload (bounded queue, deadline) on a second server.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from startup_recs.serving import api
from startup_recs.serving.data import ServingData
from tests.integration import test_predictor as base
from tests.integration.predictor_support import PY, REPO, Server

# the module-scoped fixtures of test_predictor.py, shared by name (this module gets its own server)
world, server, client, truth = base.world, base.server, base.client, base.truth
LEGACY = base.LEGACY
SD = base.SD
V1 = "/v1/models/startup-developer:predict"
V2 = "/v2/models/startup-developer/infer"
LENGTH = "inference-header-content-length"
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b|Traceback")


def _ids(*ids: str, shape: list[int] | None = None) -> dict:
    return {"name": "entity_id", "datatype": "BYTES", "shape": shape or [len(ids)], "data": list(ids)}


def _limit(value: Any, datatype: str = "INT32") -> dict:
    return {"name": "limit", "datatype": datatype, "shape": [1], "data": value}


def bytes_tensor(*items: bytes) -> bytes:
    return b"".join(len(i).to_bytes(4, "little") + i for i in items)


def binary(header: dict | bytes, tail: bytes = b"", *, length: str | bytes | None = None,
           extra: tuple[tuple[str, str | bytes], ...] = ()) -> dict:
    """kwargs of a binary V2 request: JSON header + tail, the length header (correct unless given)."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return {"content": head + tail, "headers": [(LENGTH, length if length is not None else str(len(head))), *extra]}


def _bin_ids(*ids: bytes, **params: Any) -> dict:
    size = len(bytes_tensor(*ids))
    return {"name": "entity_id", "datatype": "BYTES", "shape": [len(ids)],
            "parameters": {"binary_data_size": size, **params}}


@dataclass(frozen=True)
class Case:
    """One hostile request: ``kwargs`` (or a function of a known entity id giving them)."""

    name: str
    method: str
    path: str
    status: int
    fragment: str
    kwargs: dict | Callable[[str], dict] = field(default_factory=dict)


J = {"content-type": "application/json"}
CASES = [
    # the model repository extension is not served: nothing can unload a model
    Case("repository-unload", "POST", "/v2/repository/models/startup-investor/unload", 404, "no route"),
    Case("repository-load", "POST", "/v2/repository/models/startup-developer/load", 404, "no route"),
    Case("repository-index", "POST", "/v2/repository/index", 404, "no route"),
    # limit: digits that str.isdigit() accepts and int() refuses
    Case("limit-superscript", "GET", LEGACY[SD] + "{hot}", 400, "must be an integer", {"params": {"limit": "²"}}),
    Case("limit-arabic-indic", "GET", LEGACY[SD] + "{hot}", 400, "must be an integer", {"params": {"limit": "٣"}}),
    Case("limit-fullwidth", "GET", LEGACY[SD] + "{hot}", 400, "must be an integer", {"params": {"limit": "１０"}}),
    Case("limit-huge", "GET", LEGACY[SD] + "{hot}", 400, "must be an integer", {"params": {"limit": "9" * 400}}),
    # binary V2 envelopes
    Case("binary-null-data-shifted-size", "POST", V2, 400, "3 bytes do not hold 1 INT32", lambda hot: binary(
        {"inputs": [{"name": "limit", "datatype": "INT32", "shape": [1], "data": None,
                     "parameters": {"binary_data_size": 3}}, _bin_ids(hot.encode())]},
        b"\x01\x02\x03" + bytes_tensor(hot.encode()))),
    Case("binary-data-and-size", "POST", V2, 400, "not both", lambda hot: binary(
        {"inputs": [{**_bin_ids(hot.encode()), "data": [hot]}]}, bytes_tensor(hot.encode()))),
    Case("binary-neither-data-nor-size", "POST", V2, 400, "needs 'data' or", binary(
        {"inputs": [{"name": "entity_id", "datatype": "BYTES", "shape": [1]}]})),
    Case("binary-header-200k-brackets", "POST", V2, 400, "not valid JSON", binary(b"[" * 200_000)),
    Case("binary-header-40-deep", "POST", V2, 400, "must be a JSON object", binary(b"[" * 40 + b"]" * 40)),
    Case("binary-header-2000-deep", "POST", V2, 400, "not valid JSON", binary(b"[" * 2000 + b"]" * 2000)),
    Case("binary-length-superscript", "POST", V2, 400, "byte count", binary(b"{}", length="²".encode("latin-1"))),
    Case("binary-length-negative", "POST", V2, 400, "byte count", binary(b"{}", length="-2")),
    Case("binary-length-ten-digits", "POST", V2, 400, "byte count", binary(b"{}", length="9999999999")),
    Case("binary-length-past-body", "POST", V2, 400, "longer than", binary(b"{}", length="500")),
    Case("binary-length-twice", "POST", V2, 400, "given more than once", lambda hot: binary(
        {"inputs": [_bin_ids(hot.encode())]}, bytes_tensor(hot.encode()), extra=((LENGTH, "5"),))),
    Case("binary-length-twice-other-order", "POST", V2, 400, "given more than once", lambda hot: {
        "content": json.dumps({"inputs": [_bin_ids(hot.encode())]}).encode() + bytes_tensor(hot.encode()),
        "headers": [(LENGTH, "5"), (LENGTH, str(len(json.dumps({"inputs": [_bin_ids(hot.encode())]}))))]}),
    Case("binary-size-past-body", "POST", V2, 400, "does not fit", binary(
        {"inputs": [{"name": "entity_id", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 40}}]},
        bytes_tensor(b"s1"))),
    Case("binary-size-negative", "POST", V2, 400, "does not fit", binary(
        {"inputs": [{"name": "entity_id", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": -4}}]})),
    Case("binary-size-string", "POST", V2, 400, "does not fit", binary(
        {"inputs": [{"name": "entity_id", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": "6"}}]},
        bytes_tensor(b"s1"))),
    Case("binary-bytes-truncated", "POST", V2, 400, "truncated BYTES", binary(
        {"inputs": [{"name": "entity_id", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]},
        b"\xff\x00\x00\x00s1")),
    Case("binary-bytes-extra-element", "POST", V2, 400, "more than the 1 elements", binary(
        {"inputs": [{**_bin_ids(b"a", b"b"), "shape": [1]}]}, bytes_tensor(b"a", b"b"))),
    Case("binary-bytes-not-utf8", "POST", V2, 400, "not valid UTF-8", binary(
        {"inputs": [_bin_ids(b"\xff\xfe")]}, bytes_tensor(b"\xff\xfe"))),
    Case("binary-trailing-bytes", "POST", V2, 400, "bytes after the last input", lambda hot: binary(
        {"inputs": [_bin_ids(hot.encode())]}, bytes_tensor(hot.encode()) + b"junk")),
    Case("binary-fp32-wrong-size", "POST", V2, 400, "do not hold 1 INT32", lambda hot: binary(
        {"inputs": [_bin_ids(hot.encode()), {"name": "limit", "datatype": "INT32", "shape": [1],
                                              "parameters": {"binary_data_size": 7}}]},
        bytes_tensor(hot.encode()) + bytes(7))),
    Case("binary-int64-limit-huge", "POST", V2, 400, "between 1 and 100", lambda hot: binary(
        {"inputs": [_bin_ids(hot.encode()), {"name": "limit", "datatype": "INT64", "shape": [1],
                                              "parameters": {"binary_data_size": 8}}]},
        bytes_tensor(hot.encode()) + np.array([2**62], "<i8").tobytes())),
    Case("binary-outputs-not-objects", "POST", V2, 400, "outputs[0] must be an object", lambda hot: binary(
        {"inputs": [_bin_ids(hot.encode())], "outputs": [5]}, bytes_tensor(hot.encode()))),
    # numbers that overflow a decoder
    Case("limit-scalar-data", "POST", V2, 400, "data must be a list", {"json": {"inputs": [_ids("{hot}"), _limit(2**40)]}}),
    Case("limit-int32-overflow", "POST", V2, 400, "not a INT32 value", {"json": {"inputs": [_ids("{hot}"), _limit([2**40])]}}),
    Case("limit-int64-overflow", "POST", V2, 400, "not a INT64 value", {"json": {"inputs": [
        _ids("{hot}"), _limit([2**63], "INT64")]}}),
    Case("limit-beyond-64-bits", "POST", V2, 400, "not a INT32 value", {"json": {"inputs": [_ids("{hot}"), _limit([2**70])]}}),
    Case("limit-float-1e308", "POST", V2, 400, "not a INT32 value", {"json": {"inputs": [_ids("{hot}"), _limit([1e308])]}}),
    Case("limit-bool", "POST", V2, 400, "not a INT32 value", {"json": {"inputs": [_ids("{hot}"), _limit([True])]}}),
    # versions and explain
    Case("version-unknown-ready", "GET", "/v2/models/startup-developer/versions/2/ready", 404, "no version '2'"),
    Case("version-unknown-query", "GET", "/v2/models/startup-developer/ready", 404, "no version '9'",
         {"params": {"model_version": "9"}}),
    Case("version-unknown-infer", "POST", "/v2/models/startup-developer/versions/v7/infer", 404, "it serves v1",
         {"json": {"inputs": [_ids("{hot}")]}}),
    Case("version-unknown-metadata", "GET", "/v2/models/startup-developer/versions/0", 404, "no version"),
    Case("version-huge", "GET", "/v2/models/startup-developer/ready", 404, "no version",
         {"params": {"model_version": "x" * 5000}}),
    Case("version-unknown-model", "GET", "/v2/models/nope/versions/1/ready", 404, "nope does not exist"),
    Case("explain", "POST", "/v1/models/startup-developer:explain", 404, "no explainer",
         {"json": {"instances": [{"startup_id": "{hot}"}]}}),
    Case("explain-unknown-model", "POST", "/v1/models/nope:explain", 404, "nope does not exist", {"json": {}}),
    # CloudEvents
    Case("cloudevent-empty-body", "POST", V1, 400, "has no data", {"headers": {
        "ce-specversion": "1.0", "ce-id": "1", "ce-source": "test", "ce-type": "t"}}),
    Case("cloudevent-bad-specversion", "POST", V1, 400, "ce-specversion", {"content": b'{"instances": []}', "headers": {
        "ce-specversion": "9", "ce-id": "1", "ce-source": "test", "ce-type": "t"}}),
    Case("cloudevent-structured-no-data", "POST", V1, 400, "no 'data'", {"content": json.dumps(
        {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}), "headers": {"content-type": "application/cloudevents+json"}}),
    Case("cloudevent-structured-data-text", "POST", V1, 400, "CloudEvent data is not valid JSON", {"content": json.dumps(
        {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": "{nope"}),
        "headers": {"content-type": "application/cloudevents+json"}}),
    Case("cloudevent-structured-no-specversion", "POST", V1, 400, "needs 'specversion'", {"content": b'{"data": {}}',
         "headers": {"content-type": "application/cloudevents+json"}}),
    # control characters, huge ids
    Case("id-nul-in-path", "GET", LEGACY[SD] + "s%00001", 400, "control character"),
    Case("id-escape-in-path", "GET", LEGACY[SD] + "s%1b[2J", 400, "control character"),
    Case("id-del-v1", "POST", V1, 400, "control character", {"json": {"instances": [{"startup_id": "s\x7f1"}]}}),
    Case("id-bell-v2", "POST", V2, 400, "control character", {"json": {"inputs": [_ids("s\x07")]}}),
    Case("id-lone-surrogate", "POST", V1, 400, "not valid JSON", {"content": b'{"instances": [{"startup_id": "\\udc00"}]}',
                                                                 "headers": J}),
    Case("id-257-chars", "GET", LEGACY[SD] + "x" * 257, 400, "at most 256"),
    Case("id-60k-url", "GET", LEGACY[SD] + "x" * 60_000, 400, "at most 256"),
    Case("id-100k-v2", "POST", V2, 400, "at most 256", {"json": {"inputs": [_ids("x" * 100_000)]}}),
    Case("id-spaces", "POST", V1, 400, "surrounding spaces", {"json": {"instances": [{"startup_id": " {hot}"}]}}),
    # deep nesting
    Case("v1-200k-brackets", "POST", V1, 400, "not valid JSON", {"content": b"[" * 200_000, "headers": J}),
    Case("v2-200k-brackets", "POST", V2, 400, "not valid JSON", {"content": b"[" * 200_000, "headers": J}),
    Case("v1-40-deep", "POST", V1, 400, "instances[0] must be an object", {
        "content": b'{"instances": ' + b"[" * 40 + b"]" * 40 + b"}", "headers": J}),
    Case("v1-1mib-of-empty-lists", "POST", V1, 400, "JSON object", {"content": b"[" + b"[]," * 349_000 + b"[]]",
                                                                    "headers": J}),
    Case("v2-1mib-of-empty-lists", "POST", V2, 400, "JSON object", {"content": b"[" + b"[]," * 349_000 + b"[]]",
                                                                    "headers": J}),
    Case("v1-70k-fields", "POST", V1, 400, "70000 fields", {"content": b"{" + b",".join(
        b'"k%d": 1' % i for i in range(70_000)) + b"}", "headers": J}),
    Case("v1-instance-70k-fields", "POST", V1, 400, "instances[0] has 70000 fields", {
        "content": b'{"instances": [{' + b",".join(b'"k%d": 1' % i for i in range(70_000)) + b"}]}", "headers": J}),
    Case("v2-70k-parameters", "POST", V2, 400, "at most 32", {"content": b'{"inputs": [], "parameters": {' + b",".join(
        b'"k%d": 1' % i for i in range(70_000)) + b"}}", "headers": J}),
    Case("v2-data-300k-values", "POST", V2, 400, "more than 4096 values", {"content": b'{"inputs": [{"name": "limit", '
         b'"datatype": "INT32", "shape": [1], "data": [' + b",".join([b"1"] * 300_000) + b"]}]}", "headers": J}),
    Case("v2-data-40-deep", "POST", V2, 400, "nests deeper", {"content": b'{"inputs": [{"name": "entity_id", '
                                                              b'"datatype": "BYTES", "shape": [1], "data": '
                                                              + b"[" * 40 + b'"s1"' + b"]" * 40 + b"}]}", "headers": J}),
    Case("v2-parameters-nested", "POST", V2, 400, "string, boolean or integer", {"json": {
        "inputs": [_ids("{hot}")], "parameters": {"a": {"b": [1]}}}}),
    # absurd shapes
    Case("shape-negative", "POST", V2, 400, "shape must be", {"json": {"inputs": [_ids("{hot}", shape=[-1])]}}),
    Case("shape-2**40", "POST", V2, 400, "shape must be", {"json": {"inputs": [_ids("{hot}", shape=[2**40])]}}),
    Case("shape-2**31-1", "POST", V2, 400, "shape [n] with 1 <= n <= 256", {"json": {"inputs": [_ids("{hot}", shape=[2**31 - 1])]}}),
    Case("shape-9-dims", "POST", V2, 400, "shape must be", {"json": {"inputs": [_ids("{hot}", shape=[1] * 9)]}}),
    Case("shape-strings", "POST", V2, 400, "shape must be", {"json": {"inputs": [_ids("{hot}", shape=["1"])]}}),
    Case("shape-bools", "POST", V2, 400, "shape must be", {"json": {"inputs": [_ids("{hot}", shape=[True])]}}),
    Case("shape-float", "POST", V2, 400, "shape must be", {"json": {"inputs": [_ids("{hot}", shape=[1.5])]}}),
    Case("shape-scalar", "POST", V2, 400, "shape must be", {"json": {"inputs": [{**_ids("{hot}"), "shape": 1}]}}),
    Case("shape-zero", "POST", V2, 400, "1 <= n <= 256", {"json": {"inputs": [_ids(shape=[0])]}}),
    Case("binary-shape-2**31-fp32", "POST", V2, 400, "do not hold", lambda hot: binary(
        {"inputs": [_bin_ids(hot.encode()), {"name": "limit", "datatype": "FP32", "shape": [2**31 - 1, 1],
                                              "parameters": {"binary_data_size": 4}}]},
        bytes_tensor(hot.encode()) + bytes(4))),
    # 10k-instance batches
    Case("v1-10k-instances", "POST", V1, 400, "at most 256 instances", {"json": {"instances": [{"startup_id": "{hot}"}] * 10_000}}),
    Case("v2-10k-ids", "POST", V2, 400, "more than 4096 values", {"json": {"inputs": [_ids(*(["{hot}"] * 10_000))]}}),
    Case("v2-binary-10k-ids", "POST", V2, 400, "1 <= n <= 256", lambda hot: binary(
        {"inputs": [_bin_ids(*([hot.encode()] * 10_000))]}, bytes_tensor(*([hot.encode()] * 10_000)))),
    # malformed envelopes
    Case("v1-empty", "POST", V1, 400, "empty body"),
    Case("v1-array", "POST", V1, 400, "JSON object", {"json": []}),
    Case("v1-null", "POST", V1, 400, "JSON object", {"content": b"null", "headers": J}),
    Case("v1-not-utf8", "POST", V1, 400, "not valid JSON", {"content": b'{"instances": ["\xff"]}', "headers": J}),
    Case("v2-empty", "POST", V2, 400, "not valid JSON"),
    Case("v2-string", "POST", V2, 400, "JSON object", {"json": "inputs"}),
    Case("v2-unknown-key", "POST", V2, 400, "unexpected field", {"json": {"inputs": [_ids("{hot}")], "extra": 1}}),
    Case("v2-input-unknown-key", "POST", V2, 400, "unexpected field", {"json": {"inputs": [{**_ids("{hot}"), "x": 1}]}}),
    Case("v2-input-not-object", "POST", V2, 400, "must be an object", {"json": {"inputs": ["entity_id"]}}),
    Case("v2-input-name-huge", "POST", V2, 400, "inputs[0].name", {"json": {"inputs": [{**_ids("{hot}"), "name": "n" * 1000}]}}),
    Case("v2-nine-inputs", "POST", V2, 400, "at most 8 inputs", {"json": {"inputs": [_ids("{hot}")] * 9}}),
    Case("v2-input-twice", "POST", V2, 400, "given twice", {"json": {"inputs": [_ids("{hot}")] * 2}}),
    Case("v2-unknown-datatype", "POST", V2, 400, "datatype must be one of", {"json": {"inputs": [{**_ids("{hot}"), "datatype": "STRING"}]}}),
    Case("v2-fp16-json", "POST", V2, 400, "FP16 data must be sent as binary", {"json": {"inputs": [
        _ids("{hot}"), {"name": "limit", "datatype": "FP16", "shape": [1], "data": [1.0]}]}}),
    Case("v2-id-not-string", "POST", V2, 400, "'id' must be a string", {"json": {"inputs": [_ids("{hot}")], "id": 5}}),
    Case("v2-unknown-output", "POST", V2, 400, "unknown output", {"json": {"inputs": [_ids("{hot}")], "outputs": [{"name": "x"}]}}),
    Case("v2-output-twice", "POST", V2, 400, "requested twice", {"json": {"inputs": [_ids("{hot}")],
                                                                          "outputs": [{"name": "scores"}] * 2}}),
    Case("v2-binary-output-flag", "POST", V2, 400, "binary_data_output must be a boolean", {"json": {
        "inputs": [_ids("{hot}")], "parameters": {"binary_data_output": "yes"}}}),
    Case("v2-output-binary-flag", "POST", V2, 400, "binary_data must be a boolean", {"json": {
        "inputs": [_ids("{hot}")], "outputs": [{"name": "scores", "parameters": {"binary_data": 1}}]}}),
    Case("content-type-twice", "POST", V1, 400, "given more than once", {
        "content": b'{"instances": [{"startup_id": "x"}]}', "headers": [("content-type", "application/json"),
                                                                        ("content-type", "text/plain")]}),
    Case("chunked-over-limit", "POST", V1, 413, "exceeds", {"content": iter([b"x" * 65536] * 40)}),
    Case("wrong-method", "PUT", V2, 405, "not allowed"),
    Case("no-such-route", "GET", "/v3/anything", 404, "no route"),
]


def _fill(obj: Any, hot: str) -> Any:
    if isinstance(obj, dict):
        return {k: _fill(v, hot) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, hot) for v in obj]
    return obj.replace("{hot}", hot) if isinstance(obj, str) else obj


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_request_gets_4xx_json_and_server_stays_ready(client: httpx.Client, truth: dict, case: Case) -> None:
    hot = truth["pick"]["hot"]
    kwargs = case.kwargs(hot) if callable(case.kwargs) else dict(case.kwargs)
    if "json" in kwargs:
        kwargs["json"] = _fill(kwargs["json"], hot)
    r = client.request(case.method, case.path.replace("{hot}", hot), **kwargs)
    assert r.status_code == case.status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"] and case.fragment in body["error"], body
    assert not CLASS_NAME.search(body["error"]), body["error"]
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/startup-investor/ready").status_code == 200  # no request unloads a model
    assert client.get(LEGACY[SD] + hot, params={"limit": 1}).status_code == 200  # same keep-alive client


def test_binary_null_data_beside_a_size_is_a_binary_tensor(client: httpx.Client, truth: dict) -> None:
    hot = truth["pick"]["hot"]
    r = client.post(V2, **binary({"inputs": [{**_bin_ids(hot.encode()), "data": None}]}, bytes_tensor(hot.encode())))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [1, 10]


def test_batches_answer_per_instance_and_compute_repeats_once(client: httpx.Client, truth: dict) -> None:
    hot, warm = truth["pick"]["hot"], truth["pick"]["warm"]
    before = _metric(client, 'recs_repeated_instances_total{model="startup-developer"}')
    r = client.post(V1, json={"instances": [{"startup_id": hot, "limit": 3}, {"startup_id": "ghost"},
                                            {"entity_id": hot, "limit": 3}, {"startup_id": warm}]})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert preds[1] == {"entity_id": "ghost", "error": "unknown startup id 'ghost' for model startup-developer"}
    assert preds[0] == preds[2] and len(preds[0]["candidates"]) == 3 and preds[3]["entity_id"] == warm
    assert _metric(client, 'recs_repeated_instances_total{model="startup-developer"}') == before + 1
    many = client.post(V1, json={"instances": [{"startup_id": hot}] * 256})
    assert many.status_code == 200 and len(many.json()["predictions"]) == 256
    assert _metric(client, 'recs_repeated_instances_total{model="startup-developer"}') == before + 256

    r = client.post(V2, json={"inputs": [_ids("ghost", hot, "ghost"), _limit([2])]})
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["error"]["data"] == ["unknown startup id 'ghost' for model startup-developer", "",
                                    "unknown startup id 'ghost' for model startup-developer"]
    assert out["candidate_ids"]["data"][:2] == ["", ""] and all(out["candidate_ids"]["data"][2:4])
    assert out["scores"]["data"][:2] == [None, None] and out["route"]["data"] == ["", "hot:two_tower", ""]
    meta = client.get("/v2/models/startup-developer").json()
    assert [o["name"] for o in meta["outputs"]] == ["candidate_ids", "scores", "route", "error"]

    for body, path in (({"instances": [{"startup_id": "g1"}, {"startup_id": "g2"}]}, V1),
                       ({"inputs": [_ids("g1", "g2")]}, V2)):
        r = client.post(path, json=body)  # nothing to answer: the request is the 404
        assert r.status_code == 404 and r.json() == {"error": "unknown startup id 'g1' for model startup-developer"}


def test_versioned_routes_serve_the_served_version_only(client: httpx.Client, truth: dict) -> None:
    hot = truth["pick"]["hot"]
    for version in ("1", "v1"):
        assert client.get(f"/v2/models/startup-developer/versions/{version}/ready").json() == {
            "name": "startup-developer", "ready": True}
        assert client.get("/v2/models/startup-developer/ready", params={"model_version": version}).status_code == 200
        assert client.get(f"/v2/models/startup-developer/versions/{version}").json()["name"] == "startup-developer"
        r = client.post(f"/v2/models/startup-developer/versions/{version}/infer", json={"inputs": [_ids(hot)]})
        assert r.status_code == 200 and r.json()["model_version"] == "v1"
        r = client.post(V2, params={"model_version": version}, json={"inputs": [_ids(hot)]})
        assert r.status_code == 200
    assert client.get("/v2").json()["extensions"] == []  # no model repository extension advertised


def test_cloudevents_are_answered_in_their_mode(client: httpx.Client, truth: dict) -> None:
    hot = truth["pick"]["hot"]
    request = {"instances": [{"startup_id": hot, "limit": 2}]}
    r = client.post(V1, content=json.dumps(request), headers={
        "ce-specversion": "1.0", "ce-id": "42", "ce-source": "test", "ce-type": "recs.request"})
    assert r.status_code == 200, r.text
    assert r.headers["ce-type"] == "io.kserve.inference.response" and len(r.json()["predictions"][0]["candidates"]) == 2
    r = client.post(V1, content=json.dumps({"specversion": "1.0", "id": "1", "source": "s", "type": "t",
                                            "time": "2026-01-01T00:00:00Z", "data": request}),
                    headers={"content-type": "application/cloudevents+json"})
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "io.kserve.inference.response" and r.json()["data"]["predictions"][0]["entity_id"] == hot


def test_hostile_requests_left_no_traceback_in_the_log(server: Server) -> None:
    log = server.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log


def _metric(client: httpx.Client, line_prefix: str) -> float:
    hits = [float(ln.rsplit(" ", 1)[1]) for ln in client.get("/metrics").text.splitlines() if ln.startswith(line_prefix)]
    return sum(hits)


# --- overload: a second server with a queue of 2, a 0.25 s deadline, 5 ms per entity ---------
TIMEOUT_S = 0.25
DELAY_S = 0.005  # per entity answered: a batch of every startup takes about 1 s, a single answer 5 ms


@pytest.fixture(scope="module")
def small_server(world: dict) -> Server:
    srv = Server([PY, str(REPO / "tests/integration/slow_predictor.py"), "--bundle", str(world["models_root"]),
                  "--delay", str(DELAY_S), "--max-queue", "2", "--request-timeout", str(TIMEOUT_S)],
                 world["root"] / "small.log")
    try:
        srv.wait_ready("startup-developer")
        yield srv
    finally:
        srv.stop()


def _all_startups(world: dict) -> list[str]:
    return list(ServingData.load(str(world[SD] / "serving")).known_entities())[:api.MAX_BATCH]


def test_a_slow_batch_stops_at_its_deadline(small_server: Server, world: dict, truth: dict) -> None:
    """Every known startup (about 1 s of work here) against a 0.25 s deadline: 503 + Retry-After
    soon after the deadline (the batch stops within one chunk), and the next request is answered
    (the model thread is free again)."""
    ids = _all_startups(world)
    with httpx.Client(base_url=small_server.url, timeout=30) as c:
        t0 = time.perf_counter()
        r = c.post(V1, json={"instances": [{"startup_id": i} for i in ids]})
        took = time.perf_counter() - t0
        assert r.status_code == 503, r.text[:300]
        assert "deadline" in r.json()["error"] and int(r.headers["retry-after"]) >= 1
        assert took < TIMEOUT_S + 32 * DELAY_S + 1.0, took
        one = c.get(LEGACY[SD] + truth["pick"]["hot"], params={"limit": 1})
        assert one.status_code == 200, one.text


def test_overload_answers_503_with_retry_after_in_bounded_time(small_server: Server, world: dict, truth: dict) -> None:
    """A burst of 12 slow batches at a queue of 2: the extra ones are refused at once (503 +
    Retry-After), the admitted ones end at their deadline, liveness answers throughout, and the
    server serves normally afterwards."""
    ids = _all_startups(world)
    body = {"instances": [{"startup_id": i} for i in ids]}

    async def burst() -> tuple[list[tuple[int, float, httpx.Response]], list[float]]:
        async with httpx.AsyncClient(base_url=small_server.url, timeout=30,
                                     limits=httpx.Limits(max_connections=32)) as c:
            async def one() -> tuple[int, float, httpx.Response]:
                t0 = time.perf_counter()
                r = await c.post(V1, json=body)
                return r.status_code, time.perf_counter() - t0, r

            async def live() -> list[float]:
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    assert (await c.get("/v2/health/live")).status_code == 200
                    times.append(time.perf_counter() - t0)
                    await asyncio.sleep(0.05)
                return times

            results = await asyncio.gather(*[one() for _ in range(12)], live())
            return list(results[:-1]), results[-1]

    answers, live_times = asyncio.run(burst())
    codes = [code for code, _, _ in answers]
    assert set(codes) == {503}, codes  # every batch is over its deadline or refused
    refused = [r for _, _, r in answers if "queue is full" in r.json()["error"]]
    assert refused, [r.json()["error"] for _, _, r in answers]  # typically 10 of 12
    for _, took, r in answers:
        assert int(r.headers["retry-after"]) >= 1 and list(r.json()) == ["error"]
        assert took < TIMEOUT_S + 2.0, took
    assert max(live_times) < 1.0, live_times  # the event loop never stalled
    with httpx.Client(base_url=small_server.url, timeout=30) as c:
        assert c.get("/v2/health/ready").status_code == 200
        assert c.get(LEGACY[SD] + truth["pick"]["warm"], params={"limit": 2}).status_code == 200
    assert "Traceback" not in small_server.log()
