"""The KServe predictor end to end: a real ModelServer in a subprocess on 127.0.0.1, serving
bundles trained (ALS + two-tower, tiny settings) from the tiny synthetic marketplace and
published with startup_recs.core.bundle. One shared server for the module; the hot-reload and
corrupt-bundle tests run last on it. S3 loading and start-up on a corrupt bundle use their own.
"""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from startup_recs.data.snapshot import load_snapshot
from startup_recs.data.split import TimeSplit
from startup_recs.serving.data import ServingData
from tests.integration.predictor_support import Server, build_models_dir, publish, publish_corrupt, variant

SD, SI = "startup_developer", "startup_investor"
LEGACY = {SD: "/api/recommendations/developers/for-startup/", SI: "/api/recommendations/investors/for-startup/"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_snapshot: str) -> dict:
    """Models folders of both reverse use cases, published as v1 under one models root."""
    root = tmp_path_factory.mktemp("predictor")
    out: dict = {"root": root, "models_root": root / "published", "snapshot": tiny_snapshot}
    for uc in (SD, SI):
        out[uc] = build_models_dir(tiny_snapshot, uc, root / f"work-{uc}", two_tower=(uc == SD), ranker=(uc == SD))
        publish(out[uc], str(out["models_root"]), uc)
    return out


@pytest.fixture(scope="module")
def server(world: dict) -> Server:
    srv = Server.module([str(world["models_root"])], world["root"] / "server.log", "--reload-interval", "0.5")
    try:
        srv.wait_ready("startup-developer")
        srv.wait_ready("startup-investor")
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def truth(world: dict) -> dict:
    """Independent expectations from the snapshot: fit-window interaction counts and contacted
    candidates per startup (computed here with pandas, not with the serving code)."""
    snap = load_snapshot(world["snapshot"])
    ev = snap.events(SD)
    split = TimeSplit.resolve(ev["ts"])
    fit = ev[ev["ts"] < split.split_at]
    counts = fit.groupby("entity_id").size()
    contacted = fit[fit["event"].isin(["contact", "apply_received"])].groupby("entity_id")["candidate_id"].apply(set)
    seen = fit.groupby("entity_id")["candidate_id"].apply(set)
    data = ServingData.load(str(world[SD] / "serving"))
    entities = pd.Series(data.known_entities())
    all_counts = entities.map(lambda e: int(counts.get(e, 0)))
    pick = {
        "cold": entities[all_counts < 5].iloc[0],
        "warm": entities[(all_counts >= 5) & (all_counts < 20)].iloc[0],
        "hot": entities[all_counts >= 20].iloc[0],
    }
    return {"counts": counts, "contacted": contacted, "seen": seen, "pick": pick}


# --- legacy routes -----------------------------------------------------------------------------
def test_legacy_routes_answer_with_routes_versions_and_reasons(client, truth):
    for seg, route in (("cold", "cold:content"), ("warm", "warm:als"), ("hot", "hot:two_tower")):
        sid = truth["pick"][seg]
        r = client.get(LEGACY[SD] + sid)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["method_used"] == route and body["segment"] == seg
        assert body["interaction_count"] == int(truth["counts"].get(sid, 0))
        assert body["model_version"] == "v1" and body["use_case"] == SD and body["entity_id"] == sid
        assert body["reranked"] is True  # top 200 of the route, re-ordered by the ranker
        cands = body["candidates"]
        assert len(cands) == 10 == body["total"]  # default limit
        assert [c["rank"] for c in cands] == list(range(1, 11))
        scores = [c["score"] for c in cands]
        assert scores == sorted(scores, reverse=True)
        assert all(c["id"].startswith("u") and isinstance(c["match_reasons"], list) for c in cands)
        assert len({c["id"] for c in cands}) == 10
    cold = client.get(LEGACY[SD] + truth["pick"]["cold"]).json()
    assert any(c["match_reasons"] for c in cold["candidates"]), "content route must say which features matched"
    inv = client.get(LEGACY[SI] + truth["pick"]["hot"], params={"limit": 3})
    assert inv.status_code == 200 and inv.json()["use_case"] == SI and len(inv.json()["candidates"]) == 3
    assert inv.json()["reranked"] is False  # the investor bundle has no ranker


def test_reciprocal_without_the_forward_twin_is_one_sided_and_says_so(client, truth):
    sid = truth["pick"]["hot"]
    assert "reciprocal" not in client.get(LEGACY[SD] + sid).json()  # no developer-startup bundle here
    body = client.get(LEGACY[SD] + sid, params={"reciprocal": "true"}).json()
    assert body["reciprocal"]["available"] is False and "scores" not in body["candidates"][0]


def test_limit_is_honoured_up_to_100_without_silent_cap(client, truth):
    sid = truth["pick"]["warm"]
    assert len(client.get(LEGACY[SD] + sid, params={"limit": 1}).json()["candidates"]) == 1
    many = client.get(LEGACY[SD] + sid, params={"limit": 100}).json()["candidates"]
    assert len(many) == 100
    top10 = client.get(LEGACY[SD] + sid).json()["candidates"]
    assert [c["id"] for c in many[:10]] == [c["id"] for c in top10]


def test_already_contacted_candidates_are_excluded(client, truth):
    checked = 0
    for sid in list(truth["contacted"].index)[:6]:
        ids = {c["id"] for c in client.get(LEGACY[SD] + sid, params={"limit": 100}).json()["candidates"]}
        assert not ids & truth["contacted"][sid], f"{sid} was recommended a candidate it already contacted"
        assert sid not in ids  # a view alone does not exclude (contracts: exclude_events)
        checked += len(truth["contacted"][sid])
    assert checked >= 6  # the check had contacts to exclude


# --- V1 and V2 ---------------------------------------------------------------------------------
def test_v1_predict_matches_the_legacy_route(client, truth):
    hot, cold = truth["pick"]["hot"], truth["pick"]["cold"]
    r = client.post("/v1/models/startup-developer:predict",
                    json={"instances": [{"startup_id": hot, "limit": 5}, {"entity_id": cold}]})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["entity_id"] for p in preds] == [hot, cold]
    assert len(preds[0]["candidates"]) == 5 and len(preds[1]["candidates"]) == 10
    legacy = client.get(LEGACY[SD] + hot, params={"limit": 5}).json()
    assert preds[0]["candidates"] == legacy["candidates"] and preds[0]["method_used"] == legacy["method_used"]


def test_v2_json_and_binary_with_tritonclient(server, client, truth):
    import tritonclient.http as th

    ids = [truth["pick"][s] for s in ("cold", "warm", "hot")]
    legacy = [client.get(LEGACY[SD] + i, params={"limit": 7}).json() for i in ids]
    tc = th.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        assert tc.is_model_ready("startup-developer")
        meta = tc.get_model_metadata("startup-developer")
        assert {i["name"] for i in meta["inputs"]} == {"entity_id", "limit"}
        for binary in (False, True):
            ent = th.InferInput("entity_id", [3], "BYTES")
            ent.set_data_from_numpy(np.array([i.encode() for i in ids], dtype=object), binary_data=binary)
            lim = th.InferInput("limit", [1], "INT32")
            lim.set_data_from_numpy(np.array([7], dtype=np.int32), binary_data=binary)
            outs = [th.InferRequestedOutput(n, binary_data=binary) for n in ("candidate_ids", "scores", "route")]
            res = tc.infer("startup-developer", [ent, lim], outputs=outs)
            cand, scores, route = res.as_numpy("candidate_ids"), res.as_numpy("scores"), res.as_numpy("route")
            assert cand.shape == (3, 7) and scores.shape == (3, 7) and scores.dtype == np.float32
            assert res.get_response()["model_version"] == "v1"
            for row, ans in enumerate(legacy):
                got = [x.decode() if isinstance(x, bytes) else x for x in cand[row]]
                assert got == [c["id"] for c in ans["candidates"]]
                np.testing.assert_allclose(scores[row], [c["score"] for c in ans["candidates"]], rtol=1e-5)
                r = route[row]
                assert (r.decode() if isinstance(r, bytes) else r) == ans["method_used"]
        ent = th.InferInput("entity_id", [1], "BYTES")
        ent.set_data_from_numpy(np.array([ids[0].encode()], dtype=object))
        res = tc.infer("startup-developer", [ent])  # limit defaults to 10
        assert res.as_numpy("candidate_ids").shape == (1, 10)
    finally:
        tc.close()


# --- bad input: never a 500 --------------------------------------------------------------------
def _get(url: str, **kwargs) -> httpx.Response:
    return httpx.get(url, timeout=30, **kwargs)


def _v2(name: str = "entity_id", datatype: str = "BYTES", shape: list | None = None, data: list | None = None) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape if shape is not None else [1],
            "data": data if data is not None else ["s000000"]}


_LYING_HEADER = b'{"inputs": [{"name": "entity_id", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 40}}]}'
BAD = [
    # (method, path, kwargs, status, message fragment)
    ("GET", LEGACY[SD] + "no-such-startup", {}, 404, "unknown startup id 'no-such-startup'"),
    ("GET", LEGACY[SD] + "{hot}", {"params": {"limit": 0}}, 400, "between 1 and 100"),
    ("GET", LEGACY[SD] + "{hot}", {"params": {"limit": 101}}, 400, "between 1 and 100, got 101"),
    ("GET", LEGACY[SD] + "{hot}", {"params": {"limit": "ten"}}, 400, "must be an integer"),
    ("GET", LEGACY[SD] + "{hot}", {"params": [("limit", 3), ("limit", 4)]}, 400, "more than once"),
    ("GET", LEGACY[SD] + "{hot}", {"params": {"lmit": 3}}, 400, "unknown query parameter"),
    # forward routes are served when their bundles are (tests/integration/test_predictor_forward.py)
    ("GET", LEGACY[SD] + "{hot}", {"params": {"location": "atlantis"}}, 400, "unknown location 'atlantis'"),
    ("GET", LEGACY[SD] + "{hot}", {"params": {"stage": "seed"}}, 400, "filter 'stage' does not apply"),
    ("POST", "/v1/models/nope:predict", {"json": {"instances": [{"startup_id": "x"}]}}, 404, "nope does not exist"),
    ("POST", "/v1/models/startup-developer:predict", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "body is not valid JSON"),
    ("POST", "/v1/models/startup-developer:predict", {"json": {"inputs": []}}, 400, "unexpected field"),
    ("POST", "/v1/models/startup-developer:predict", {"json": {"instances": [{"startup_id": 7}]}}, 400, "must be a string"),
    ("POST", "/v1/models/startup-developer:predict", {"json": {"instances": [{"startup_id": "{hot}", "limit": 500}]}}, 400, "between 1 and 100"),
    ("POST", "/v1/models/startup-developer:predict", {"json": {"instances": [{"startup_id": "ghost"}]}}, 404, "unknown startup id 'ghost'"),
    ("POST", "/v1/models/startup-developer:predict", {"content": b"x" * (2 << 20)}, 413, "exceeds"),
    ("POST", "/v2/models/nope/infer", {"json": {"inputs": [_v2()]}}, 404, "nope does not exist"),
    ("POST", "/v2/models/startup-developer/infer", {"content": b"{oops"}, 400, "not valid JSON"),
    ("POST", "/v2/models/startup-developer/infer", {"json": {"inputs": [{"name": "entity_id", "datatype": "BYTES"}]}}, 400, "shape"),
    ("POST", "/v2/models/startup-developer/infer", {"json": {"inputs": [_v2(datatype="INT32", data=[1])]}}, 400, "must be BYTES"),
    ("POST", "/v2/models/startup-developer/infer", {"json": {"inputs": [_v2(shape=[1, 1])]}}, 400, "shape [n]"),
    ("POST", "/v2/models/startup-developer/infer", {"json": {"inputs": [_v2(shape=[2])]}}, 400, "1 elements but shape [2]"),
    ("POST", "/v2/models/startup-developer/infer", {"json": {"inputs": [_v2(name="limit", datatype="INT32", data=[3])]}}, 400, "missing input 'entity_id'"),
    ("POST", "/v2/models/startup-developer/infer", {"json": {"inputs": [_v2(), _v2(name="limit", datatype="FP32", data=[3.0])]}}, 400, "must be INT32"),
    ("POST", "/v2/models/startup-developer/infer", {"json": {"inputs": [_v2(), _v2(name="limit", datatype="INT32", data=[0])]}}, 400, "between 1 and 100"),
    ("POST", "/v2/models/startup-developer/infer", {"json": {"inputs": [_v2(data=["ghost"])]}}, 404, "unknown startup id 'ghost'"),
    ("POST", "/v2/models/startup-developer/infer", {"content": b'{"inputs": 5}', "headers": {"inference-header-content-length": "13"}}, 400, "'inputs' list"),
    ("POST", "/v2/models/startup-developer/infer", {"content": _LYING_HEADER + b"\x02\x00\x00\x00s1", "headers": {"inference-header-content-length": str(len(_LYING_HEADER))}}, 400, "binary_data_size"),
    ("POST", "/v2/models/startup-developer/infer", {"content": b"{}", "headers": {"inference-header-content-length": "abc"}}, 400, "must be a byte count"),
]


@pytest.mark.parametrize("method, path, kwargs, status, fragment", BAD, ids=[f"{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_gets_4xx_json_never_500(client, truth, method, path, kwargs, status, fragment):
    hot = truth["pick"]["hot"]
    path = path.replace("{hot}", hot)
    if "json" in kwargs:
        kwargs = {**kwargs, "json": _fill(kwargs["json"], hot)}
    r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]
    assert client.get(LEGACY[SD] + hot).status_code == 200  # the same keep-alive client still works


def _fill(obj, hot):
    if isinstance(obj, dict):
        return {k: _fill(v, hot) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, hot) for v in obj]
    return obj.replace("{hot}", hot) if isinstance(obj, str) else obj


def test_health_metadata_and_prometheus_metrics(client, truth):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v1/models").json()["models"] == ["startup-developer", "startup-investor"]
    assert client.get("/v2/models/startup-investor/ready").json()["ready"] is True
    client.get(LEGACY[SD] + truth["pick"]["warm"])
    text = client.get("/metrics").text
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]

    def value(prefix: str) -> float:
        hits = [float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(prefix)]
        assert hits, f"no metric line starts with {prefix}"
        return sum(hits)

    assert value('recs_requests_total{code="200",endpoint="legacy",model="startup-developer",'
                 'model_version="v1",route="warm:als"}') >= 1
    assert value('recs_requests_total{code="404",endpoint="legacy"') >= 1
    assert value('recs_requests_total{code="400",endpoint="v2"') >= 1
    assert value('recs_route_total{model="startup-developer",model_version="v1",route="hot:two_tower"}') >= 1
    assert value('recs_request_latency_seconds_count{endpoint="legacy",model="startup-developer",'
                 'model_version="v1",route="cold:content"}') >= 1
    assert value('recs_bundle_version{model="startup-investor"}') == 1


# --- hot reload and a corrupt new bundle (run last: they change the served version) -----------
def test_hot_reload_under_load_has_zero_failures(server, world, truth, tmp_path):
    sid = truth["pick"]["hot"]
    seen_versions: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.get(LEGACY[SD] + sid, params={"limit": 1})
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        seen_versions.append(r.json()["model_version"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    t = threading.Thread(target=hammer)
    t.start()
    try:
        time.sleep(1.0)
        publish(variant(world[SD], tmp_path, "v2"), str(world["models_root"]), SD)  # v2
        deadline = time.time() + 30
        while (not seen_versions or seen_versions[-1] != "v2") and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        t.join(10)
    assert not failures, failures[:3]
    assert seen_versions[0] == "v1" and seen_versions[-1] == "v2", set(seen_versions)
    first_v2 = seen_versions.index("v2")
    assert "v1" not in seen_versions[first_v2:], "a request after the swap was answered by the old bundle"
    assert len(seen_versions) >= 10
    assert "startup_developer: hot-reloaded v1 -> v2" in server.log()


def test_corrupt_new_bundle_is_refused_while_old_keeps_serving(server, world, truth):
    bad = publish_corrupt(world["models_root"], SD)
    time.sleep(2.0)  # four poll intervals
    r = _get(server.url + LEGACY[SD] + truth["pick"]["warm"])
    assert r.status_code == 200 and r.json()["model_version"] == "v2"
    assert _get(f"{server.url}/v2/models/startup-developer/ready").status_code == 200
    log = server.log()
    refused = [ln for ln in log.splitlines() if " refused, " in ln]
    assert len(refused) == 1, refused
    assert f"v{bad}" in refused[0] and "checksum mismatch" in refused[0] and "keeps serving v2" in refused[0]
    assert "Traceback" not in log


# --- separate servers: S3 and start-up on a corrupt bundle -------------------------------------
def test_recs_serve_loads_from_s3(server, world, truth, s3_bucket, tmp_path):
    # the investor bundle (ALS + content, no torch to import) keeps this server's start-up short
    models_uri = f"{s3_bucket}/models"
    publish(world[SI], models_uri, SI)
    srv = Server.recs_serve([f"{models_uri}/{SI}"], tmp_path / "s3.log", "--cache-dir", str(tmp_path / "cache"),
                            "--reload-interval", "0")
    try:
        srv.wait_ready("startup-investor")
        sid = truth["pick"]["hot"]
        r = _get(srv.url + LEGACY[SI] + sid, params={"limit": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == "v1" and len(body["candidates"]) == 5
        local = _get(server.url + LEGACY[SI] + sid, params={"limit": 5}).json()  # same files, local copy
        assert local["model_version"] == "v1"
        assert (local["method_used"], local["candidates"]) == (body["method_used"], body["candidates"])
        assert _get(srv.url + LEGACY[SD] + sid).status_code == 404  # not served by this one
        assert any((tmp_path / "cache").rglob("manifest.json")), "the bundle was downloaded into --cache-dir"
    finally:
        srv.stop()


def test_corrupt_bundle_at_start_is_not_ready_without_tracebacks(world, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(world["models_root"] / SI / "v1", root / SI / "v1")
    (root / SI / "latest").write_text('{"version": 1, "path": "v1", "updated_at": "2026-01-01T00:00:00+00:00"}')
    publish_corrupt(root, SI)  # v2, corrupt, is latest
    shutil.rmtree(root / SI / "v1")  # and no older version to fall back to (test_predictor_chaos has that case)
    srv = Server.recs_serve([str(root / SI)], tmp_path / "bad.log", "--reload-interval", "0.3")
    try:
        srv.wait_live()
        time.sleep(1.0)
        assert srv.proc.poll() is None, "a corrupt bundle must not crash the server"
        assert _get(f"{srv.url}/v2/models/startup-investor/ready").status_code == 503
        assert _get(f"{srv.url}/v2/health/ready").status_code == 503  # a probe keeps traffic away
        assert _get(f"{srv.url}/v2/health/live").status_code == 200
        r = _get(srv.url + LEGACY[SI] + "s000000")
        assert r.status_code == 503 and "not ready" in r.json()["error"]
        log = srv.log()
        assert "Traceback" not in log
        assert len([ln for ln in log.splitlines() if " refused, " in ln]) == 1
        # a good bundle published later makes it ready without a restart
        publish(variant(world[SI], tmp_path, "good"), str(root), SI)
        srv.wait_ready("startup-investor", timeout=60)
        assert _get(srv.url + LEGACY[SI] + "s000000").json()["model_version"] == "v3"
    finally:
        srv.stop()


def test_unknown_bundle_path_is_a_one_line_cli_error(tmp_path):
    import subprocess
    import sys

    from tests.integration.predictor_support import REPO

    r = subprocess.run([sys.executable, "-m", "startup_recs.cli", "serve", "--bundle", str(tmp_path / "nothing")],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: cannot tell the use case of")
    assert "Traceback" not in r.stderr

