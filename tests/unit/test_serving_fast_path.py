"""The per-request fast path of the Recommender gives the answers of the computation it replaced.

The old code is kept below verbatim (pandas rows into ``features.match``): ``old_match_block`` is
the ranker's match-feature block as it was, ``old_candidates`` the answer's candidate objects. The
same bundle answers every entity once with them patched in and once as shipped; scores, order and
reasons must be identical. Batched answers must equal one-at-a-time answers, and a bundle with an
ANN index must serve from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from startup_recs.core import bundle
from startup_recs.core.errors import DataError
from startup_recs.models.ranker import RankerConfig, RankerMLP, save
from startup_recs.serving import ranking_features
from startup_recs.serving.data import ServingData
from startup_recs.serving.ranking_features import _match_names, feature_names
from startup_recs.serving.recommender import Recommender, UnknownEntityError

UC = "startup_developer"
T0 = pd.Timestamp("2026-01-01", tz="UTC")


def old_match_block(use_case, entity_ids, offsets, cand_idx, data):  # the code before the fast path
    from startup_recs.features.match import match_features

    k = len(_match_names(data))
    n = len(cand_idx)
    out = np.zeros((n, k + 1), np.float32)
    ent = data.entity_features
    if n == 0 or ent is None:
        return out
    sizes = np.diff(offsets)
    has = np.array([e in ent.index for e in entity_ids], dtype=bool)
    rows_has = np.repeat(has, sizes)
    if not rows_has.any():
        return out
    row_ents = np.repeat(np.asarray(entity_ids, dtype=object), sizes)[rows_has]
    if len(entity_ids) == 1:
        ent_arg = ent.loc[entity_ids[0]]
    else:
        ent_arg = ent.loc[row_ents.tolist()].reset_index(drop=True)
    cands = data.candidate_features.iloc[cand_idx[rows_has]].reset_index(drop=True)
    m, names = match_features(use_case, ent_arg, cands)
    if list(names) != _match_names(data):
        raise DataError("match features changed shape")
    out[rows_has, 0] = 1.0
    out[rows_has, 1:] = m
    return out


def old_candidates(self, entity_id, cand, scores):  # Recommender._candidates before the fast path
    from startup_recs.features.match import match_reasons_batch

    ent = self.data.entity_row(entity_id)
    feats = self.data.candidate_features
    reasons = [[] for _ in range(len(cand))]
    if ent is not None and feats is not None and len(cand):
        reasons = match_reasons_batch(self.use_case, ent, feats.iloc[cand])
    return [{"id": str(self.data.candidate_ids[c]), "score": float(s), "rank": rank, "match_reasons": r}
            for rank, (c, s, r) in enumerate(zip(cand.tolist(), scores.tolist(), reasons, strict=True), start=1)]


@pytest.fixture(scope="module")
def models(tiny_snapshot: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder over 3,000 candidates x 400 entities: tiny-marketplace feature rows
    resampled, events for every segment, ALS factors, a random-weight ranker, warm -> ALS."""
    from startup_recs.data.snapshot import load_snapshot

    snap = load_snapshot(tiny_snapshot)
    ef0, cf0 = snap.entity_features(UC), snap.candidate_features(UC)
    rng = np.random.default_rng(0)
    n_e, n_c, dim = 400, 3_000, 16
    ents = np.array([f"s{i:05d}" for i in range(n_e)], dtype=object)
    cands = np.array([f"u{i:05d}" for i in range(n_c)], dtype=object)
    ef = ef0.iloc[rng.integers(0, len(ef0), n_e)].set_axis(pd.Index(ents, name=ef0.index.name))
    cf = cf0.iloc[rng.integers(0, len(cf0), n_c)].set_axis(pd.Index(cands, name=cf0.index.name))
    counts = rng.choice([0, 2, 8, 30], n_e)
    rows = np.repeat(np.arange(n_e), counts)
    ev = pd.DataFrame({"entity_id": ents[rows], "candidate_id": cands[rng.integers(0, n_c, len(rows))],
                       "ts": T0 + pd.to_timedelta(rng.uniform(0, 50, len(rows)), unit="D"), "weight": 1.0})
    data = ServingData.from_events(ev, UC, T0 + pd.Timedelta(days=51), entity_features=ef, candidate_features=cf)
    d = tmp_path_factory.mktemp("fast") / "models"
    d.mkdir()
    data.save(str(d / "serving"))
    known = sorted(set(ev["entity_id"]))
    stem = "als_reverse_v1"
    np.save(d / f"{stem}_user_factors.npy", rng.standard_normal((len(known), dim)).astype(np.float32))
    np.save(d / f"{stem}_item_factors.npy", rng.standard_normal((n_c, dim)).astype(np.float32))
    (d / f"{stem}_user_mapping.json").write_text(json.dumps({e: i for i, e in enumerate(known)}))
    (d / f"{stem}_item_mapping.json").write_text(json.dumps({c: i for i, c in enumerate(cands.tolist())}))
    (d / f"{stem}_config.json").write_text(json.dumps({"use_case": UC, "factors": dim}))
    names = feature_names(data)
    cfg = RankerConfig(use_case=UC, features=names, hidden=[16, 8], mean=[0.0] * len(names), std=[1.0] * len(names))
    save(RankerMLP(len(names), cfg.hidden, 0.0, cfg.mean, cfg.std), cfg, str(d))
    (d / "routing.json").write_text(json.dumps({"warm": "als", "chosen_on": "default", "val_ndcg@10": {}}))
    return d


def _ids(rec: Recommender) -> list[str]:
    return sorted(rec.data.entity_features.index)[:80]


def test_fast_path_answers_equal_the_old_computation(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recommender.load(str(models))
    assert rec.reranker is not None
    ids = _ids(rec)
    fast = [rec.recommend(e, 20) for e in ids]
    with monkeypatch.context() as m:
        m.setattr(ranking_features, "_match_block", old_match_block)
        m.setattr(Recommender, "_candidates", old_candidates)
        old = [rec.recommend(e, 20) for e in ids]
    assert {a["method_used"].split(":")[1] for a in fast} >= {"content", "als"}
    assert fast == old  # ids, scores (bit for bit), ranks, reasons, routes
    assert any(c["match_reasons"] for a in fast for c in a["candidates"])


def test_batch_answers_equal_single_answers(models: Path) -> None:
    rec = Recommender.load(str(models))
    ids = _ids(rec)[:60]
    limits = [5 + (i % 3) * 10 for i in range(len(ids))]
    batch = rec.recommend_batch(ids, limits)
    single = [rec.recommend(e, lim) for e, lim in zip(ids, limits, strict=True)]
    for b, s in zip(batch, single, strict=True):
        assert [c["id"] for c in b["candidates"]] == [c["id"] for c in s["candidates"]]
        np.testing.assert_allclose([c["score"] for c in b["candidates"]], [c["score"] for c in s["candidates"]],
                                   rtol=1e-5)
        assert [c["match_reasons"] for c in b["candidates"]] == [c["match_reasons"] for c in s["candidates"]]
        assert {k: v for k, v in b.items() if k != "candidates"} == {k: v for k, v in s.items() if k != "candidates"}
    assert rec.recommend_batch(ids[:3], 7) == [rec.recommend(e, 7) for e in ids[:3]]
    with pytest.raises(UnknownEntityError):
        rec.recommend_batch([ids[0], "nobody"], 5)


def test_published_ann_index_is_loaded_and_served(models: Path, tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    import shutil

    from startup_recs.serving import ann
    from startup_recs.serving.ann_build import build_indexes

    staging = tmp_path / "staging"
    shutil.copytree(models, staging)
    summary = build_indexes(staging, exact_below=1_000, n_queries=200)  # force IVF at 3k candidates
    assert summary["als"]["kind"] == "ivf_flat" and summary["als"]["recall@200"] >= 0.95
    manifest = bundle.publish(staging, str(tmp_path / "pub"), UC, metrics={}, watermark=None,
                              extra={"ann": summary})
    assert {"ann/als.faiss", "ann/als.json"} <= set(manifest["files"])
    rec = Recommender.load(str(tmp_path / "pub" / UC / "v1"))
    index = rec.retrievers["als"].index
    assert isinstance(index, ann.FaissIndex)
    exact = Recommender.load(str(models))
    ids = [e for e in _ids(rec) if rec.router.route(e)[1] == "als"][:30]
    got = [set(rec.retrieve(e, "als")[0].tolist()) for e in ids]
    want = [set(exact.retrieve(e, "als")[0].tolist()) for e in ids]
    recall = np.mean([len(g & w) / len(w) for g, w in zip(got, want, strict=True)])
    assert recall >= 0.9
    for e in ids:  # never a seen candidate or the entity itself
        assert not np.isin(rec.retrieve(e, "als")[0], rec.data.exclusions(e)).any()


def test_materialized_content_lists_equal_live_content_scoring(models: Path, tmp_path: Path) -> None:
    import shutil

    from startup_recs.core.errors import ModelMismatchError
    from startup_recs.serving import content_lists
    from startup_recs.serving.content import load_lists

    staging = tmp_path / "staging"
    shutil.copytree(models, staging)
    info = content_lists.build(staging, batch=7, workers=3)  # batches cut across entities on purpose
    one = tmp_path / "one-thread"
    shutil.copytree(models, one)
    content_lists.build(one, batch=5, workers=1)
    for f in ("top_idx.npy", "top_scores.npy", "lists.json"):  # threads and batches change no byte
        assert (staging / "content" / f).read_bytes() == (one / "content" / f).read_bytes(), f
    rec = Recommender.load(str(staging))
    live = Recommender.load(str(models))  # no lists: scans every candidate
    assert info["entities"] == len(rec.data.known_entities())
    cold = [e for e in rec.data.known_entities() if rec.router.route(e)[1] == "content"]
    assert len(cold) > 10
    content = rec.retrievers["content"]
    assert content.lists is not None and live.retrievers["content"].lists is None
    for e in cold[:20] + [e for e in rec.data.known_entities() if e not in set(cold)][:20]:
        a_i, a_s = content.top([e], 200)
        b_i, b_s = content.top([e], 200, use_lists=False)
        ok = np.isfinite(b_s[0])
        np.testing.assert_array_equal(np.isfinite(a_s[0]), ok)
        np.testing.assert_array_equal(a_i[0][ok], b_i[0][ok])
        np.testing.assert_array_equal(a_s[0][ok], b_s[0][ok])
        assert rec.recommend(e, 10) == live.recommend(e, 10)
    other = ServingData.load(str(staging / "serving"))
    other.popularity[:] += 1.0  # lists of this bundle do not fit other serving data
    with pytest.raises(ModelMismatchError):
        load_lists(str(staging), other)
