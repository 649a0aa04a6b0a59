"""The core request rules refuse what only looks valid: non-ASCII digits, ``"data": null`` in a
binary V2 request, and a header nested deep enough to make Python's recursive JSON parser fail."""

from __future__ import annotations

import json

import pytest

from startup_recs.serving.api import InvalidRequest, check_v2_binary, json_too_deep, parse_limit


@pytest.mark.parametrize("raw", ["²", "٣", "１０", "5²", "+-5", ""])
def test_limit_needs_ascii_digits(raw: str) -> None:
    with pytest.raises(InvalidRequest, match="must be an integer"):
        parse_limit(raw)


def test_ascii_limits_still_parse() -> None:
    assert parse_limit(" 7 ") == 7 and parse_limit("+5") == 5 and parse_limit(None) == 10


def _binary(header: dict, tail: bytes = b"") -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    return head + tail, str(len(head))


def test_data_null_is_not_data() -> None:
    body, n = _binary({"inputs": [{"name": "limit", "datatype": "INT32", "shape": [1], "data": None}]})
    with pytest.raises(InvalidRequest, match="binary_data_size"):
        check_v2_binary(body, n)
    ok, n_ok = _binary({"inputs": [{"name": "limit", "datatype": "INT32", "shape": [1], "data": None,
                                    "parameters": {"binary_data_size": 4}}]}, (5).to_bytes(4, "little"))
    check_v2_binary(ok, n_ok)


@pytest.mark.parametrize("depth", [33, 10_000, 200_000])
def test_deep_header_is_refused_without_recursion(depth: int) -> None:
    head = b"[" * depth + b"]" * depth
    with pytest.raises(InvalidRequest, match="nests deeper"):
        check_v2_binary(head, str(len(head)))


def test_header_length_needs_ascii_digits() -> None:
    body, _ = _binary({"inputs": []})
    with pytest.raises(InvalidRequest, match="does not fit"):
        check_v2_binary(body, "²")


def test_brackets_inside_strings_do_not_count() -> None:
    assert not json_too_deep(json.dumps({"id": "[" * 100, "x": [[1]]}), 4)
    assert json_too_deep(json.dumps({"x": [[[[[1]]]]]}), 4)
