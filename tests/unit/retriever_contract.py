"""The contract every retriever keeps, as a test mixin (in the style of implicit's
``RecommenderBase`` test mixin): a concrete test class names the retriever and provides a
``case`` fixture; the mixin's tests then run against it.

What a retriever promises (``startup_recs.serving.retrievers.Retriever``):

* ``score(ids)`` is ``float32 [len(ids), n_c]`` over ``data.candidate_ids``, finite, and a row of
  zeros for an entity it does not ``know``;
* ``top(ids, n)`` gives ``(int64 [len(ids), n], float32 [len(ids), n])``, best first, never a
  candidate the entity already interacted with (nor the entity itself), and its scores are the
  ``n`` best of ``score`` once those are removed;
* ``score_at(id, cand_idx)`` equals the matching columns of ``score([id])``;
* loaded from a published bundle (save -> publish -> fetch -> load), it scores exactly as the
  model built in memory right after training did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from startup_recs.serving.data import ServingData
from startup_recs.serving.retrievers import Retriever


@dataclass
class ContractCase:
    """One retriever under test.

    ``retriever``: loaded through the registry from a published bundle (its ``data`` read back
    from the bundle's ``serving/`` folder); ``fresh``: the same model built in memory from the
    fitted object, before anything was written; ``entities``: ids the retriever knows, each with
    at least one already-seen candidate; ``unknown``: an id nothing knows.
    """

    retriever: Retriever
    fresh: Retriever
    entities: list[str]
    unknown: str = "no-such-entity"

    @property
    def data(self) -> ServingData:
        return self.retriever.data


class RetrieverContract:
    """Mixin: subclass with ``name = "<registry name>"`` and a ``case`` fixture -> ContractCase."""

    name: ClassVar[str]
    n: ClassVar[int] = 5  # top-n asked for
    atol: ClassVar[float] = 1e-6  # loaded vs in-memory scores (float32 maths, same operands)

    @pytest.fixture
    def case(self) -> ContractCase:  # pragma: no cover - every concrete class overrides it
        raise NotImplementedError

    def test_registry_name(self, case: ContractCase) -> None:
        assert case.retriever.name == self.name == case.fresh.name

    def test_knows_its_entities(self, case: ContractCase) -> None:
        assert all(case.retriever.knows(e) for e in case.entities)
        assert [case.retriever.knows(e) for e in [*case.entities, case.unknown]] == \
            [case.fresh.knows(e) for e in [*case.entities, case.unknown]]

    def test_score_shape_and_dtype(self, case: ContractCase) -> None:
        ids = [*case.entities, case.unknown]
        s = case.retriever.score(ids)
        assert s.shape == (len(ids), case.data.n_candidates) and s.dtype == np.float32
        assert np.isfinite(s).all()
        assert case.retriever.score([]).shape == (0, case.data.n_candidates)
        if not case.retriever.knows(case.unknown):
            assert np.all(s[-1] == 0), "an unknown entity gets a row of zeros"
        np.testing.assert_allclose(case.retriever.score(ids[:1])[0], s[0], rtol=1e-5, atol=1e-6,
                                   err_msg="a row does not depend on the rest of the batch")

    def test_top_excludes_seen_and_self(self, case: ContractCase) -> None:
        idx, sc = case.retriever.top(case.entities, self.n)
        assert idx.shape == sc.shape == (len(case.entities), self.n)
        for e, row in zip(case.entities, idx, strict=True):
            excluded = set(case.data.exclusions(e).tolist())
            assert excluded, f"{e}: the fixture should give every entity a seen candidate"
            assert not excluded & set(row.tolist()), e
        assert np.all(np.diff(sc, axis=1) <= 0), "best first"

    def test_top_is_the_best_of_score_once_seen_removed(self, case: ContractCase) -> None:
        _, sc = case.retriever.top(case.entities, self.n)
        full = case.retriever.score(case.entities).astype(np.float64)
        for r, e in enumerate(case.entities):
            full[r, case.data.exclusions(e)] = -np.inf
        best = -np.sort(-full, axis=1)[:, : self.n]
        np.testing.assert_allclose(sc, best, rtol=1e-5, atol=1e-6)

    def test_score_at_equals_score_columns(self, case: ContractCase) -> None:
        rng = np.random.default_rng(0)
        for e in [*case.entities[:3], case.unknown]:
            cand_idx = rng.choice(case.data.n_candidates, size=min(17, case.data.n_candidates), replace=False)
            got = case.retriever.score_at(e, cand_idx)
            assert got.shape == (len(cand_idx),)
            np.testing.assert_allclose(got, case.retriever.score([e])[0, cand_idx], rtol=1e-5, atol=1e-6)

    def test_loaded_from_bundle_scores_as_trained(self, case: ContractCase) -> None:
        ids = [*case.entities, case.unknown]
        assert case.retriever.data is not case.fresh.data, "the loaded one must read its own serving data"
        assert case.retriever.data.candidate_ids.tolist() == case.fresh.data.candidate_ids.tolist()
        np.testing.assert_allclose(case.retriever.score(ids), case.fresh.score(ids), rtol=0, atol=self.atol)
