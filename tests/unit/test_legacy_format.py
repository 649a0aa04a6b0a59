"""``format=legacy``: the legacy Flask service's answer shape, golden (exact keys, types, order)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from startup_recs.core.usecases import get_use_case
from startup_recs.serving import api
from startup_recs.serving.options import RequestOptions, parse_options, query_options

ANSWER = {
    "entity_id": "s000001", "method_used": "warm:als", "segment": "warm", "model_version": "v3", "reranked": True,
    "interaction_count": 12, "total": 2,
    "candidates": [{"id": "u0000007", "score": 0.91, "rank": 1, "match_reasons": ["skills: python", "same location: berlin"]},
                   {"id": "u0000002", "score": 0.5, "rank": 2, "match_reasons": []}],
}
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def test_legacy_shape_of_a_reverse_answer_is_golden() -> None:
    out = api.legacy_shape(api.legacy_response(ANSWER, get_use_case("startup_developer")),
                           get_use_case("startup_developer"), now=NOW)
    assert out == {
        "use_case": "startup_developer",
        "method": "warm:als",
        "model_version": "v3",
        "user_ids": ["u0000007", "u0000002"],
        "scores": {"u0000007": 0.91, "u0000002": 0.5},
        "match_reasons": {"u0000007": ["skills: python", "same location: berlin"], "u0000002": []},
        "total": 2,
        "interaction_count": 12,
        "created_at": "2026-07-01T12:00:00+00:00",
        "expires_at": "2026-07-01T13:00:00+00:00",
    }
    assert list(out) == ["use_case", "method", "model_version", "user_ids", "scores", "match_reasons", "total",
                         "interaction_count", "created_at", "expires_at"]


def test_legacy_shape_of_a_forward_answer_names_startup_ids_and_the_session() -> None:
    answer = {**ANSWER, "candidates": [{"id": "s000009", "score": 0.3, "rank": 1, "match_reasons": []}], "total": 1,
              "session_id": "rs-42"}
    out = api.legacy_shape(answer, get_use_case("developer_startup"), now=NOW)
    assert out["startup_ids"] == ["s000009"] and "user_ids" not in out
    assert out["recommendation_session_id"] == "rs-42"
    assert list(out)[-1] == "recommendation_session_id"


def test_render_picks_the_shape_from_the_options() -> None:
    uc = get_use_case("startup_developer")
    assert api.render(ANSWER, uc)["candidates"][0]["id"] == "u0000007"  # default shape unchanged
    assert "user_ids" in api.render(ANSWER, uc, RequestOptions(format="legacy"))
    assert query_options({"format": ["legacy"]}, uc).legacy
    with pytest.raises(api.InvalidRequest, match="format must be one of default, legacy"):
        query_options({"format": ["xml"]}, uc)
    with pytest.raises(api.InvalidRequest, match="format does not apply here"):
        parse_options({"format": "legacy"}, uc, allow_format=False)
    with pytest.raises(api.InvalidRequest, match="reciprocal applies to the reverse use cases"):
        query_options({"reciprocal": ["true"]}, get_use_case("developer_startup"))
    assert query_options({"reciprocal": ["false"]}, uc).reciprocal is False
    with pytest.raises(api.InvalidRequest, match="reciprocal must be true or false"):
        query_options({"reciprocal": ["maybe"]}, uc)
