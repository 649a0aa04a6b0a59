"""Forward routes, reciprocal reverse answers, filters and the legacy format through a real
ModelServer (``python -m predictors`` on 127.0.0.1) serving ALS bundles of the tiny marketplace:
both forward use cases and startup_developer, whose answers then fuse its forward twin's scores.
"""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

from startup_recs.data.snapshot import load_snapshot
from startup_recs.data.split import TimeSplit
from tests.integration.predictor_support import Server, build_models_dir, publish

SD, DS, IS = "startup_developer", "developer_startup", "investor_startup"
ROUTE = {SD: "/api/recommendations/developers/for-startup/", DS: "/api/recommendations/startups/for-developer/",
         IS: "/api/recommendations/startups/for-investor/"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_snapshot: str) -> dict:
    root = tmp_path_factory.mktemp("predictor-forward")
    out: dict = {"root": root, "models_root": root / "published"}
    for uc in (SD, DS, IS):
        models = build_models_dir(tiny_snapshot, uc, root / f"work-{uc}", two_tower=False)
        publish(models, str(out["models_root"]), uc)
    snap = load_snapshot(tiny_snapshot)
    out["features"] = {"user": snap.table("users").set_index("user_id"),
                       "startup": snap.table("startups").set_index("startup_id")}
    out["busy"] = {}
    for uc in (SD, DS, IS):
        ev = snap.events(uc)
        fit = ev[ev["ts"] < TimeSplit.resolve(ev["ts"]).split_at]
        out["busy"][uc] = str(fit["entity_id"].value_counts().index[0])
    return out


@pytest.fixture(scope="module")
def client(world: dict) -> httpx.Client:
    srv = Server.module([str(world["models_root"])], world["root"] / "server.log", "--reload-interval", "0")
    try:
        for name in ("startup-developer", "developer-startup", "investor-startup"):
            srv.wait_ready(name)
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            yield c
    finally:
        srv.stop()


def test_forward_routes_answer_with_startups(client, world) -> None:
    for uc in (DS, IS):
        uid = world["busy"][uc]
        r = client.get(ROUTE[uc] + uid, params={"limit": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["use_case"] == uc and body["entity_id"] == uid and body["model_version"] == "v1"
        assert len(body["candidates"]) == 5 and all(c["id"].startswith("s") for c in body["candidates"])
        assert "reciprocal" not in body  # forward answers are one-sided
        model = uc.replace("_", "-")
        v1 = client.post(f"/v1/models/{model}:predict", json={"instances": [{"user_id": uid, "limit": 3}]})
        assert v1.status_code == 200 and len(v1.json()["predictions"][0]["candidates"]) == 3
        v2 = client.post(f"/v2/models/{model}/infer", json={"inputs": [
            {"name": "entity_id", "datatype": "BYTES", "shape": [1], "data": [uid]}]})
        assert v2.status_code == 200, v2.text
        ids = next(o for o in v2.json()["outputs"] if o["name"] == "candidate_ids")["data"]
        assert all(i.startswith("s") for i in ids)
    assert client.get(ROUTE[DS] + "no-such-user").status_code == 404
    # a use case this server does not serve (no startup_investor bundle here) is a 404 naming it
    r = client.get("/api/recommendations/investors/for-startup/s000001")
    assert r.status_code == 404 and "startup-investor does not exist" in r.json()["error"]


def test_reverse_answers_are_reciprocal_when_the_forward_twin_is_loaded(client, world) -> None:
    sid = world["busy"][SD]
    body = client.get(ROUTE[SD] + sid).json()
    assert body["reciprocal"]["forward_model_version"] == "v1"
    for c in body["candidates"]:
        assert 0 < c["scores"]["reverse"] < 1 and 0 < c["scores"]["forward"] < 1
        assert isinstance(c["match_reasons"], list) and isinstance(c["match_reasons_forward"], list)
    plain = client.get(ROUTE[SD] + sid, params={"reciprocal": "false"}).json()
    assert "reciprocal" not in plain and "scores" not in plain["candidates"][0]
    v1 = client.post("/v1/models/startup-developer:predict",
                     json={"instances": [{"startup_id": sid, "limit": 3}, {"startup_id": sid, "reciprocal": False}]})
    first, second = v1.json()["predictions"]
    assert "reciprocal" in first and "reciprocal" not in second
    bad = client.get(ROUTE[DS] + world["busy"][DS], params={"reciprocal": "true"})
    assert bad.status_code == 400 and "reverse use cases" in bad.json()["error"]


def test_filters_hold_for_every_candidate_on_every_protocol(client, world) -> None:
    users, startups = world["features"]["user"], world["features"]["startup"]
    sid = world["busy"][SD]
    r = client.get(ROUTE[SD] + sid, params={"location": "london,berlin", "skills": "python", "limit": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["candidates"] and body["filters"]["applied"] == {"location": ["london", "berlin"],
                                                                 "skills": ["python"]}
    for c in body["candidates"]:
        assert users.loc[c["id"], "location"] in ("london", "berlin") and "python" in list(users.loc[c["id"], "skills"])
    uid = world["busy"][DS]
    v1 = client.post("/v1/models/developer-startup:predict",
                     json={"instances": [{"user_id": uid, "limit": 10, "sector": ["fintech", "ai"], "stage": "seed"}]})
    assert v1.status_code == 200, v1.text
    for c in v1.json()["predictions"][0]["candidates"]:
        assert startups.loc[c["id"], "sector"] in ("fintech", "ai") and startups.loc[c["id"], "stage"] == "seed"
    v2 = client.post("/v2/models/developer-startup/infer", json={
        "inputs": [{"name": "entity_id", "datatype": "BYTES", "shape": [1], "data": [uid]}],
        "parameters": {"location": "remote"}})
    assert v2.status_code == 200, v2.text
    ids = [i for i in next(o for o in v2.json()["outputs"] if o["name"] == "candidate_ids")["data"] if i]
    assert ids and all(startups.loc[i, "location"] == "remote" for i in ids)


def test_a_rare_filter_widens_instead_of_answering_empty(client, world) -> None:
    sid = world["busy"][SD]
    pool = {c["id"] for c in client.get(ROUTE[SD] + sid, params={"limit": 100}).json()["candidates"]}
    users = world["features"]["user"]
    outside = users[(users.role == "developer") & ~users.index.isin(pool)]
    rare = outside["location"].value_counts().index[-1]
    body = client.get(ROUTE[SD] + sid, params={"location": rare, "limit": 10}).json()
    assert body["candidates"], body
    assert all(users.loc[c["id"], "location"] == rare for c in body["candidates"])
    assert body["filters"]["short"] is (body["total"] < 10)
    if not ({c["id"] for c in body["candidates"]} <= pool):
        assert body["filters"]["widened"] is True


def test_bad_filter_values_are_400_naming_the_value(client, world) -> None:
    sid = world["busy"][SD]
    for params, text in (({"location": "atlantis"}, "unknown location 'atlantis'"),
                         ({"skills": "python,cobol"}, "unknown skills 'cobol'"),
                         ({"sector": "ai"}, "filter 'sector' does not apply to startup_developer"),
                         ({"format": "xml"}, "format must be one of default, legacy"),
                         ({"colour": "red"}, "unknown query parameter(s): colour")):
        r = client.get(ROUTE[SD] + sid, params=params)
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/json"), (params, r.text)
        assert text in r.json()["error"], (params, r.json())
    v1 = client.post("/v1/models/startup-developer:predict",
                     json={"instances": [{"startup_id": sid, "location": "atlantis"}]})
    assert v1.status_code == 400 and "unknown location 'atlantis'" in v1.json()["error"]
    v2 = client.post("/v2/models/startup-developer/infer", json={
        "inputs": [{"name": "entity_id", "datatype": "BYTES", "shape": [1], "data": [sid]}],
        "parameters": {"format": "legacy"}})
    assert v2.status_code == 400 and "format does not apply" in v2.json()["error"]


def test_legacy_format_over_http(client, world) -> None:
    sid = world["busy"][SD]
    body = client.get(ROUTE[SD] + sid, params={"format": "legacy", "limit": 4}).json()
    assert set(body) == {"use_case", "method", "model_version", "user_ids", "scores", "match_reasons", "total",
                         "interaction_count", "created_at", "expires_at"}
    assert body["use_case"] == SD and len(body["user_ids"]) == 4 == body["total"]
    assert set(body["scores"]) == set(body["user_ids"]) == set(body["match_reasons"])
    created, expires = (datetime.fromisoformat(body[k]) for k in ("created_at", "expires_at"))
    assert (expires - created).total_seconds() == 3600
    fwd = client.get(ROUTE[DS] + world["busy"][DS], params={"format": "legacy"}).json()
    assert "startup_ids" in fwd and "user_ids" not in fwd
    v1 = client.post("/v1/models/startup-developer:predict",
                     json={"instances": [{"startup_id": sid, "limit": 2, "format": "legacy"}]}).json()
    assert len(v1["predictions"][0]["user_ids"]) == 2
