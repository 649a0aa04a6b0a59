"""The item2item retriever end to end on the tiny marketplace: dataset -> train -> registry ->
scores identical to the model's -> evaluation scores it -> bundle round trip."""

from pathlib import Path

import numpy as np
import pytest

from startup_recs.core import bundle, storage
from startup_recs.data.snapshot import load_snapshot
from startup_recs.datasets.als import build_als
from startup_recs.models.item2item import Item2ItemModel
from startup_recs.serving.data import ServingData
from startup_recs.serving.retrievers import load_retrievers
from startup_recs.train.item2item import train_item2item


@pytest.fixture(scope="module")
def trained(tiny_snapshot: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ServingData]:
    d = tmp_path_factory.mktemp("i2i")
    build_als(tiny_snapshot, "startup_developer", str(d / "data"), fit_window="trainval")
    info = train_item2item(str(d / "data" / "als_interactions_reverse.npz"),
                           str(d / "data" / "als_reverse_user_mapping.json"),
                           str(d / "data" / "als_reverse_item_mapping.json"),
                           "startup_developer", str(d / "models"), method="ease", lam=50.0)
    assert info["method"] == "ease" and info["model_name"] == "item2item_reverse_v1"
    snap = load_snapshot(tiny_snapshot)
    from startup_recs.data.split import TimeSplit

    events = snap.events("startup_developer")
    split = TimeSplit.resolve(events["ts"])
    data = ServingData.from_events(events, "startup_developer", split.split_at,
                                   candidate_features=snap.candidate_features("startup_developer"))
    return d / "models", data


def test_registry_loads_it_and_scores_match_the_model(trained) -> None:
    models, data = trained
    r = load_retrievers(str(models), data)["item2item"]
    model, mapping = Item2ItemModel.load(models, "item2item_reverse_v1")
    entity = next(e for e in data.entity_counts if r.knows(e))
    hist = np.zeros((1, len(mapping)), np.float32)
    for c in data.candidate_ids[data.seen_of(entity)]:
        if c in mapping:
            hist[0, mapping[c]] = 1
    expected = model.score(hist)[0]
    got = r.score([entity])[0]
    cols = data.candidate_positions(list(mapping))
    np.testing.assert_allclose(got[cols[cols >= 0]], expected[np.flatnonzero(cols >= 0)], rtol=1e-5, atol=1e-6)
    assert not r.knows("no-such-startup") and np.all(r.score(["no-such-startup"]) == 0)


def test_round_trip_through_a_bundle(trained, tmp_path: Path) -> None:
    models, data = trained
    bundle.publish(models, str(tmp_path / "pub"), "startup_developer", metrics={}, watermark=None)
    local, manifest = bundle.fetch_verified(str(tmp_path / "pub" / "startup_developer"))
    assert "item2item_reverse_v1_weights.npy" in manifest["files"]
    a = load_retrievers(str(models), data)["item2item"]
    b = load_retrievers(str(local), data)["item2item"]
    ids = list(data.entity_counts)[:20]
    np.testing.assert_array_equal(a.score(ids), b.score(ids))
    assert storage.exists(str(local / "item2item_reverse_v1_config.json"))


def test_served_by_the_predictor_as_a_route(trained, tmp_path: Path, tiny_snapshot: str) -> None:
    """A bundle whose routing sends warm entities to item2item, served by a real ModelServer on
    loopback: the legacy route answers with ``method_used == "warm:item2item"``."""
    import httpx

    from startup_recs.serving.router import Routing
    from tests.integration.predictor_support import Server

    models, data = trained
    staged = tmp_path / "staged"
    import shutil

    shutil.copytree(models, staged)
    data.save(str(staged / "serving"))
    Routing(warm="item2item", chosen_on="validation").save(str(staged))
    bundle.publish(staged, str(tmp_path / "pub"), "startup_developer", metrics={}, watermark=None)
    warm = next(e for e, n in data.entity_counts.items() if 5 <= n < 20 and data.seen_of(e).size)
    srv = Server.recs_serve([str(tmp_path / "pub")], tmp_path / "server.log", "--reload-interval", "0")
    try:
        srv.wait_ready("startup-developer")
        r = httpx.get(f"{srv.url}/api/recommendations/developers/for-startup/{warm}", params={"limit": 5}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["method_used"] == "warm:item2item" and len(body["candidates"]) == 5
        contacted = set(data.candidate_ids[data.excluded_of(warm)])
        assert not contacted & {c["id"] for c in body["candidates"]}
    finally:
        srv.stop()
