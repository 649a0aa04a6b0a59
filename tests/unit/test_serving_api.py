"""Request rules of the online API (startup_recs.serving.api): every accept and every reject."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from startup_recs.core.usecases import get_use_case
from startup_recs.serving import api
from startup_recs.serving.api import InvalidRequest, Query, Tensor

SD = get_use_case("startup_developer")
DS = get_use_case("developer_startup")


@pytest.mark.parametrize("raw, want", [(None, 10), ("1", 1), ("100", 100), (" 7 ", 7), (42, 42), (np.int32(5), 5)])
def test_limit_accepts(raw, want):
    assert api.parse_limit(raw) == want


@pytest.mark.parametrize("raw, msg", [
    ("0", "between 1 and 100, got 0"), ("101", "got 101"), (-3, "got -3"), ("abc", "integer"),
    ("1.5", "integer"), (2.0, "got float"), (True, "boolean"), ("", "integer"), ([3], "got list"),
    ("9" * 30, "integer"),
])
def test_limit_rejects_without_capping(raw, msg):
    with pytest.raises(InvalidRequest, match=msg):
        api.parse_limit(raw)


def test_json_limit_may_be_an_integral_float():
    """JSON Schema's 'integer' (the OpenAPI document's) includes 10.0; 10.5 is still refused."""
    assert api.parse_limit(10.0, from_text=False) == 10 and api.parse_limit(np.float32(3), from_text=False) == 3
    for bad, msg in ((10.5, "got float"), (float("nan"), "got float"), (1e308, "between 1 and 100")):
        with pytest.raises(InvalidRequest, match=msg):
            api.parse_limit(bad, from_text=False)


def test_entity_id_rules():
    assert api.parse_entity_id("s-1") == "s-1"
    assert api.parse_entity_id(b"s\xc3\xa9") == "sé"
    for bad in ("", " s1", "x" * 257, 12, None, b"\xff"):
        with pytest.raises(InvalidRequest):
            api.parse_entity_id(bad)


def test_v1_parses_id_field_of_the_use_case_and_limits():
    body = {"instances": [{"startup_id": "s1"}, {"entity_id": "s2", "limit": 3}]}
    assert api.parse_v1(body, SD) == [Query("s1", 10), Query("s2", 3)]
    assert api.parse_v1({"instances": [{"user_id": "u1", "limit": 100}]}, DS) == [Query("u1", 100)]


@pytest.mark.parametrize("body, msg", [
    ([1], "JSON object"),
    ({}, "non-empty list"),
    ({"instances": []}, "non-empty list"),
    ({"instances": {"startup_id": "s1"}}, "non-empty list"),
    ({"instances": [{"startup_id": "s1"}], "extra": 1}, "unexpected field"),
    ({"instances": ["s1"]}, r"instances\[0\] must be an object"),
    ({"instances": [{"user_id": "s1"}]}, "exactly one of 'startup_id'"),
    ({"instances": [{"startup_id": "s1", "entity_id": "s1"}]}, "exactly one"),
    ({"instances": [{"startup_id": 5}]}, "must be a string"),
    ({"instances": [{"startup_id": "s1", "limit": "5"}]}, r"limit must be an integer"),
    ({"instances": [{"startup_id": "s1", "limit": 0}]}, "between 1 and 100"),
    ({"instances": [{"startup_id": "s1", "colour": "red"}]}, "unexpected field"),
    ({"instances": [{"startup_id": "s"}] * 257}, "at most 256"),
])
def test_v1_rejects(body, msg):
    with pytest.raises(InvalidRequest, match=msg):
        api.parse_v1(body, SD)


def _ids(*ids, shape=None, dtype="BYTES"):
    return Tensor("entity_id", dtype, shape if shape is not None else [len(ids)], list(ids))


def test_v2_parses_json_and_numpy_forms():
    assert api.parse_v2([_ids("s1", "s2")]) == (["s1", "s2"], 10)
    lim = Tensor("limit", "INT32", [1], np.array([25], dtype=np.int32))
    got = api.parse_v2([Tensor("entity_id", "BYTES", [2], np.array([b"a", b"b"], dtype=object)), lim])
    assert got == (["a", "b"], 25)
    assert api.parse_v2([_ids("a"), Tensor("limit", "INT64", [1], [[7]])]) == (["a"], 7)


@pytest.mark.parametrize("inputs, msg", [
    ([], "missing input 'entity_id'"),
    ([_ids("a"), Tensor("other", "INT32", [1], [1])], "unexpected input"),
    ([_ids("a"), _ids("b")], "given twice"),
    ([_ids("a", dtype="INT32")], "must be BYTES"),
    ([_ids("a", shape=[1, 1])], r"shape \[n\]"),
    ([_ids("a", shape=[0])], r"shape \[n\]"),
    ([_ids("a", shape=[2])], "has 1 elements but shape"),
    ([_ids("a", shape=["1"])], "list of integers"),
    ([_ids(5)], "must be a string"),
    ([_ids("a"), Tensor("limit", "FP32", [1], [5.0])], "must be INT32"),
    ([_ids("a"), Tensor("limit", "INT32", [2], [5, 6])], r"shape \[1\]"),
    ([_ids("a"), Tensor("limit", "INT32", [1], [500])], "between 1 and 100"),
    ([_ids("a"), Tensor("limit", "INT32", [1], [])], "0 elements"),
])
def test_v2_rejects(inputs, msg):
    with pytest.raises(InvalidRequest, match=msg):
        api.parse_v2(inputs)


def _answer(ids, route="warm:als"):
    return {"candidates": [{"id": c, "score": 1.0 / (i + 1), "rank": i + 1, "match_reasons": []}
                           for i, c in enumerate(ids)], "method_used": route}


def test_v2_outputs_are_rectangular_with_marked_padding():
    ids, scores, routes = api.v2_outputs([_answer(["a", "b", "c"]), _answer(["d"], "cold:content")], 3)
    assert ids.shape == (2, 3) and scores.shape == (2, 3) and scores.dtype == np.float32
    assert ids.tolist() == [[b"a", b"b", b"c"], [b"d", b"", b""]]
    np.testing.assert_allclose(scores[0], [1.0, 0.5, 1 / 3], rtol=1e-6)
    assert scores[1, 0] == 1.0 and np.isnan(scores[1, 1:]).all()
    assert routes.tolist() == [b"warm:als", b"cold:content"]


def test_legacy_response_adds_use_case_and_plain_floats():
    ans = _answer(["a"])
    ans["candidates"][0]["score"] = np.float32(0.25)
    out = api.legacy_response(ans, SD)
    assert out["use_case"] == "startup_developer"
    assert type(out["candidates"][0]["score"]) is float and out["candidates"][0]["score"] == 0.25
    json.dumps(out)


def _binary(header: dict, *chunks: bytes) -> tuple[bytes, str]:
    h = json.dumps(header).encode()
    return h + b"".join(chunks), str(len(h))


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


def test_binary_envelope_accepts_a_well_formed_request():
    ids = _bytes_tensor(b"s1", b"s22")
    lim = np.array([5], dtype=np.int32).tobytes()
    body, n = _binary({"inputs": [
        {"name": "entity_id", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(ids)}},
        {"name": "limit", "datatype": "INT32", "shape": [1], "parameters": {"binary_data_size": 4}},
    ]}, ids, lim)
    api.check_v2_binary(body, n)


@pytest.mark.parametrize("case, msg", [
    ("bad_len", "does not fit"), ("not_json", "not valid JSON"), ("no_inputs", "non-empty 'inputs'"),
    ("no_name", "needs 'name'"), ("size_overrun", "binary_data_size"), ("count", "holds 1 elements"),
    ("truncated", "truncated BYTES"), ("int_size", "do not hold"), ("trailing", "after the last"),
    ("dtype", "unknown datatype"),
])
def test_binary_envelope_rejects(case, msg):
    one = _bytes_tensor(b"s1")
    spec = {"name": "entity_id", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(one)}}
    if case == "bad_len":
        body, n = b"{}", "99"
    elif case == "not_json":
        body, n = b"{nope", "5"
    elif case == "no_inputs":
        body, n = _binary({"inputs": []})
    elif case == "no_name":
        body, n = _binary({"inputs": [{"datatype": "BYTES", "shape": [1]}]})
    elif case == "size_overrun":
        body, n = _binary({"inputs": [{**spec, "parameters": {"binary_data_size": 999}}]}, one)
    elif case == "count":
        body, n = _binary({"inputs": [{**spec, "shape": [2]}]}, one)
    elif case == "truncated":
        bad = struct.pack("<I", 50) + b"s1"
        body, n = _binary({"inputs": [{**spec, "parameters": {"binary_data_size": len(bad)}}]}, bad)
    elif case == "int_size":
        body, n = _binary({"inputs": [{"name": "limit", "datatype": "INT32", "shape": [1],
                                       "parameters": {"binary_data_size": 3}}]}, b"abc")
    elif case == "trailing":
        body, n = _binary({"inputs": [spec]}, one, b"xx")
    else:
        body, n = _binary({"inputs": [{**spec, "datatype": "STRING"}]}, one)
    with pytest.raises(InvalidRequest, match=msg):
        api.check_v2_binary(body, n)
