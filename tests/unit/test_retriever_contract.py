"""Every retriever keeps the shared contract (``retriever_contract.RetrieverContract``).

One tiny planted-cluster world (``two_tower_data.make_dataset``: 48 startups x 160 developers
with profiles) is fitted once: a two-epoch two-tower, ALS, EASE item-to-item. Their files and
the serving data go into one models folder, which is published as a bundle and fetched back;
each retriever loaded from that bundle is checked against the contract and against the model
built in memory from the fitted object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from startup_recs.core import artifacts, bundle
from startup_recs.models.als import ALSModel
from startup_recs.models.item2item import Item2ItemConfig, Item2ItemModel
from startup_recs.models.two_tower import TwoTowerModel
from startup_recs.serving.content import ContentRetriever
from startup_recs.serving.data import ServingData
from startup_recs.serving.item2item import Item2ItemRetriever
from startup_recs.serving.retrievers import (
    EmbeddingRetriever,
    PopularityRetriever,
    Retriever,
    align_rows,
    load_retrievers,
)
from tests.unit.retriever_contract import ContractCase, RetrieverContract
from tests.unit.two_tower_data import T0, make_dataset

UC = "startup_developer"
UNTIL = T0 + pd.Timedelta(days=85)  # train + validation of make_dataset's pairs


@dataclass
class World:
    data: ServingData  # in memory, as fitted
    loaded: dict[str, Retriever]  # from the published bundle
    two_tower: TwoTowerModel
    als: ALSModel
    item2item: Item2ItemModel
    item_ids: list[str]  # item2item / ALS column order
    entities: list[str]


def _matrix(events: pd.DataFrame) -> tuple[sp.csr_matrix, list[str], list[str]]:
    """Entities x candidates summed weights (sorted ids), as ``recs dataset als`` builds it."""
    ents, e_codes = np.unique(events["entity_id"].to_numpy(str), return_inverse=True)
    cands, c_codes = np.unique(events["candidate_id"].to_numpy(str), return_inverse=True)
    m = sp.csr_matrix((events["weight"].to_numpy(np.float32), (e_codes, c_codes)), shape=(len(ents), len(cands)))
    m.sum_duplicates()
    return m, ents.tolist(), cands.tolist()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    import torch

    from startup_recs.train.als import ALSConfig, fit_als
    from startup_recs.train.item2item import fit_item2item
    from startup_recs.train.two_tower import TwoTowerConfig, fit
    from startup_recs.train.two_tower_data import load_dataset

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("contract")
    pairs_uri = make_dataset(root / "data")
    pairs = pd.read_parquet(pairs_uri)
    ent_feats = pd.read_parquet(artifacts.sidecar(str(pairs_uri), artifacts.ENTITIES_SIDECAR)).set_index("entity_id")
    cand_feats = pd.read_parquet(artifacts.sidecar(str(pairs_uri), artifacts.CANDIDATES_SIDECAR)).set_index("candidate_id")
    events = pairs[(pairs["label"] == 1) & (pairs["ts"] < UNTIL)].assign(event="contact")
    data = ServingData.from_events(events, UC, UNTIL, entity_features=ent_feats, candidate_features=cand_feats)

    models = root / "models"
    cfg = TwoTowerConfig(epochs=2, batch_size=64, embedding_dim=16, hidden_dim=32, feature_dim=8, lr=3e-3,
                         fit_on="trainval", progress=False, seed=0)
    tt, _ = fit(cfg, str(pairs_uri), str(models))
    tt.encoder = load_dataset(str(pairs_uri), cfg.fit_on).encoder  # refitted in memory: the trainer's encoder
    m, users, items = _matrix(events)
    als = fit_als(m, users, items, ALSConfig(factors=8, iterations=3, seed=0, num_threads=1), use_case=UC)
    als.save(str(models), artifacts.als_files(UC).stem)
    i2i = fit_item2item(m, Item2ItemConfig(UC, method="ease", lam=10.0))
    i2i.save(models, artifacts.item2item_files(UC).stem, {c: i for i, c in enumerate(items)})
    data.save(str(models / artifacts.SERVING_DIR))

    bundle.publish(models, str(root / "published"), UC, metrics={}, watermark=None)
    local, _ = bundle.fetch_verified(str(root / "published" / UC))
    loaded_data = ServingData.load(str(local / artifacts.SERVING_DIR))
    loaded = load_retrievers(str(local), loaded_data)
    entities = [e for e in sorted(data.entity_counts) if data.seen_of(e).size][:8]
    return World(data, loaded, tt, als, i2i, items, entities)


class TestTwoTower(RetrieverContract):
    name = "two_tower"
    atol = 1e-5  # the exported embeddings were computed in other batch sizes

    @pytest.fixture
    def case(self, world: World) -> ContractCase:
        d, model = world.data, world.two_tower
        ents = sorted(d.entity_features.index)
        fresh = EmbeddingRetriever(
            "two_tower", d, ents, model.encode_entities(ents, d.entity_features.loc[ents]),
            model.encode_candidates(d.candidate_ids.tolist(), d.candidate_features))
        return ContractCase(world.loaded["two_tower"], fresh, world.entities)


class TestALS(RetrieverContract):
    name = "als"

    @pytest.fixture
    def case(self, world: World) -> ContractCase:
        m = world.als
        fresh = EmbeddingRetriever("als", world.data, m.user_ids, m.user_factors,
                                   align_rows(m.item_ids, m.item_factors, world.data)[0])
        return ContractCase(world.loaded["als"], fresh, world.entities)


class TestItem2Item(RetrieverContract):
    name = "item2item"

    @pytest.fixture
    def case(self, world: World) -> ContractCase:
        fresh = Item2ItemRetriever(world.data, world.item2item, world.item_ids)
        return ContractCase(world.loaded["item2item"], fresh, world.entities)


class TestContent(RetrieverContract):
    name = "content"

    @pytest.fixture
    def case(self, world: World) -> ContractCase:
        return ContractCase(world.loaded["content"], ContentRetriever(world.data), world.entities)


class TestPopularity(RetrieverContract):
    name = "popularity"

    @pytest.fixture
    def case(self, world: World) -> ContractCase:
        return ContractCase(world.loaded["popularity"], PopularityRetriever(world.data), world.entities)


def test_every_registered_retriever_has_a_contract_test(world: World) -> None:
    covered = {c.name for c in (TestTwoTower, TestALS, TestItem2Item, TestContent, TestPopularity)}
    assert set(world.loaded) == covered


class TestPoolBuilder:
    """The hybrid pool (``serving.pool.build_pools``) over the contract's retrievers, as loaded
    from the bundle: the union of each knowing retriever's own ``top`` lists, nothing seen, nothing
    twice; list positions and scores are those retrievers' own; a batch equals one by one."""

    SPEC = {"content": 12, "two_tower": 10, "als": 10, "item2item": 8, "popularity": 4}

    def test_union_of_the_retrievers_top_lists(self, world: World) -> None:
        from startup_recs.serving.pool import NOT_LISTED, PoolSpec, build_pools

        rets = world.loaded
        pools = build_pools(rets, world.data, world.entities, PoolSpec.of(self.SPEC), routes=["als"] * len(world.entities),
                            score_names=list(self.SPEC))
        for e, pool in zip(world.entities, pools, strict=True):
            assert len(pool.cand) == len(np.unique(pool.cand))
            assert not set(pool.cand.tolist()) & set(world.data.exclusions(e).tolist())
            want: set[int] = set()
            for name, k in self.SPEC.items():
                if not rets[name].knows(e):
                    assert name not in pool.scores
                    continue
                idx, sc = rets[name].top([e], k)
                top = idx[0][np.isfinite(sc[0])]
                want |= set(top.tolist())
                pos = {int(c): i for i, c in enumerate(top)}
                assert [pos.get(int(c), NOT_LISTED) for c in pool.cand] == pool.listed[name].tolist()
                np.testing.assert_allclose(pool.scores[name], rets[name].score_at(e, pool.cand), rtol=1e-6, atol=1e-6)
            assert set(pool.cand.tolist()) == want
            assert pool.cand[: len(np.flatnonzero(pool.listed["als"] >= 0))].tolist() == \
                [c for c in pool.cand.tolist() if pool.listed["als"][pool.cand.tolist().index(c)] >= 0]  # route leads

    def test_batch_equals_one_at_a_time(self, world: World) -> None:
        from startup_recs.serving.pool import build_pool, build_pools

        many = build_pools(world.loaded, world.data, world.entities, self.SPEC, score_names=list(self.SPEC))
        for e, p in zip(world.entities, many, strict=True):
            one = build_pool(world.loaded, world.data, e, self.SPEC, score_names=list(self.SPEC))
            assert one.cand.tolist() == p.cand.tolist()
            assert {k: v.tolist() for k, v in one.listed.items()} == {k: v.tolist() for k, v in p.listed.items()}
