"""Online evaluation end to end (tiny, ~60 s): a real ModelServer on 127.0.0.1 logs its sessions
into the app database, recs simulate-traffic lets the planted world answer its slates and a random
baseline's, recs monitor finds the predictor's contact rate significantly above random's; then an
A/B experiment in the same predictor answers each entity from its sticky arm."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pandas as pd
import pytest

from startup_recs.cli import main as recs
from startup_recs.evaluation import online
from startup_recs.serving.experiments import assign
from startup_recs.synth import traffic, write_meta
from tests.integration.predictor_support import Server, build_models_dir, publish

SD = "startup_developer"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_db: str, tiny_snapshot: str) -> dict:
    root = tmp_path_factory.mktemp("online")
    db = root / "app.db"
    shutil.copy(tiny_db, db)
    url = f"sqlite:///{db}"
    write_meta(url, "tiny", 0)  # the tiny_db fixture is synth.generate("tiny", 0)
    models = build_models_dir(tiny_snapshot, SD, root / "work", two_tower=False)
    published = root / "published"
    publish(models, str(published), SD)
    treatment = root / "models-v2"  # the same models plus a note: a distinct bundle, v2
    shutil.copytree(models, treatment)
    (treatment / "note.txt").write_text("treatment arm of the integration test\n")
    publish(treatment, str(published), SD)
    return {"root": root, "url": url, "published": published}


def test_predictor_beats_random_online(setup: dict) -> None:
    root, url = setup["root"], setup["url"]
    srv = Server.recs_serve([f"{SD}={setup['published'] / SD / 'v1'}"], root / "serve.log",
                            "--log-sessions", url, "--reload-interval", "0")
    try:
        srv.wait_ready("startup-developer")
        ctx = traffic.prepare(url, "tiny", 0, SD)
        served = traffic.run(ctx, traffic.PredictorSource(srv.url, ctx.use_case), 600, days=2)
    finally:
        srv.stop()
    assert served["sessions"] == 600 and served["model_versions"] == {"v1": 600}
    assert recs(["simulate-traffic", "--db", url, "--size", "tiny", "--seed", "0", "--use-case", SD,
                 "--sessions", "600", "--days", "2", "--policy", "random"]) == 0
    m = online.monitor(url, SD, since=served["calendar"][0], n_boot=500)
    assert set(m["arms"]) == {"v1", "random"}
    assert m["arms"]["v1"]["sessions"] == 600 and m["arms"]["random"]["sessions"] == 600
    (c,) = m["comparisons"]
    assert (c["a"], c["b"]) == ("v1", "random")
    assert c["ratio"] > 1.5 and c["p_value"] < 0.05, c


def test_experiment_answers_each_entity_from_its_arm(setup: dict) -> None:
    root, url, published = setup["root"], setup["url"], setup["published"]
    srv = Server.recs_serve([f"{SD}={published / SD / 'v1'}"], root / "serve-ab.log", "--log-sessions", url,
                            "--experiment", f"{SD}={published / SD / 'v2'}:30:it-ab", "--reload-interval", "0")
    try:
        srv.wait_ready("startup-developer")
        ids = [f"s{i:06d}" for i in range(60)]
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            v1 = client.post("/v1/models/startup-developer:predict",
                             json={"instances": [{"entity_id": e, "limit": 5} for e in ids]}).json()["predictions"]
            legacy = client.get("/api/recommendations/developers/for-startup/s000007?limit=3").json()
            v2 = client.post("/v2/models/startup-developer/infer", json={"inputs": [
                {"name": "entity_id", "datatype": "BYTES", "shape": [20], "data": ids[:20]}]}).json()
        ctx = traffic.prepare(url, "tiny", 0, SD)
        served = traffic.run(ctx, traffic.PredictorSource(srv.url, ctx.use_case), 300, days=1)
    finally:
        srv.stop()
    for e, p in zip(ids, v1, strict=True):
        if "error" in p:
            continue
        arm = assign("it-ab", e, 0.3)
        assert p["experiment"] == {"name": "it-ab", "arm": arm}
        assert p["model_version"] == ("v2" if arm == "treatment" else "v1")
    assert legacy["experiment"]["arm"] == assign("it-ab", "s000007", 0.3) and legacy["session_id"]
    out = {o["name"]: o["data"] for o in v2["outputs"]}
    for e, arm, version, err in zip(ids[:20], out["experiment_arm"], out["model_version"], out["error"], strict=True):
        if not err:  # V2 rows of one request come from both arms: each row says which
            assert arm == assign("it-ab", e, 0.3) and version == ("v2" if arm == "treatment" else "v1")
    # the impressions record the served version, and the monitor splits the arms by it
    # (the direct requests above were logged at the wall clock's time, after the virtual calendar)
    until = (pd.Timestamp(served["calendar"][1]) + pd.Timedelta(seconds=1)).isoformat()
    m = online.monitor(url, SD, since=served["calendar"][0], until=until, n_boot=200)
    assert set(m["arms"]) == {"v1", "v2"}
    n_treated = served["arms"]["treatment"]
    assert m["arms"]["v2"]["sessions"] == n_treated and m["arms"]["v1"]["sessions"] == 300 - n_treated
    log = Path(root / "serve-ab.log").read_text()
    assert "experiment {'name': 'it-ab'" in log
    json.dumps(m)  # metrics.json is plain JSON


def test_fresh_exclusions_keep_what_was_contacted_after_the_bundle_out(setup: dict) -> None:
    """``--fresh-exclusions``: the database's contacts after v1's data watermark (the tiny world's
    test window, and any simulated traffic) are never answered by the served v1, though the same
    bundle in process, without them, answers some of them."""
    import sqlalchemy as sa

    from startup_recs.serving.reload import default_loader

    root, url, published = setup["root"], setup["url"], setup["published"]
    bundle = published / SD / "v1"
    plain = default_loader(bundle)
    since = plain.data.until.strftime("%Y-%m-%d %H:%M:%S.%f")
    with sa.create_engine(url).connect() as conn:
        rows = conn.execute(sa.text("select startup_id, user_id from startup_interactions where event in "
                                    "('contact', 'apply_received') and ts >= :t"), {"t": since}).all()
    fresh: dict[str, set[str]] = {}
    for s, u in rows:
        if u in plain.data.candidate_index and plain.data.knows_entity(s):
            fresh.setdefault(s, set()).add(u)
    ents = sorted(fresh)[:60]
    assert len(ents) >= 20
    stale = sum(bool(fresh[e] & {c["id"] for c in plain.recommend(e, 10)["candidates"]}) for e in ents)
    assert stale > 0  # without them, the bundle re-shows candidates contacted after its data
    srv = Server.recs_serve([f"{SD}={bundle}"], root / "serve-fresh.log", "--fresh-exclusions", url,
                            "--fresh-interval", "0", "--reload-interval", "0")
    try:
        srv.wait_ready("startup-developer")
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            preds = client.post("/v1/models/startup-developer:predict",
                                json={"instances": [{"entity_id": e, "limit": 10} for e in ents]}).json()["predictions"]
            one = client.get(f"/api/recommendations/developers/for-startup/{ents[0]}?limit=10").json()
    finally:
        srv.stop()
    for e, p in zip(ents, preds, strict=True):
        assert len(p["candidates"]) == 10 and not fresh[e] & {c["id"] for c in p["candidates"]}, e
    assert not fresh[ents[0]] & {c["id"] for c in one["candidates"]}
    assert "fresh exclusions from sqlite:///" in Path(root / "serve-fresh.log").read_text()
