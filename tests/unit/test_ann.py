"""Approximate candidate search (serving/ann.py): agreement with exact search on a fixed synthetic
catalogue, exclusion and filter correctness, and the index's round trip through a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from startup_recs.core import bundle  # noqa: E402
from startup_recs.core.errors import BundleError, ModelMismatchError  # noqa: E402
from startup_recs.serving import ann  # noqa: E402
from startup_recs.serving.index import ExactIndex, top_k  # noqa: E402

N, D, K = 20_000, 16, 100


def _catalogue(n: int = N, d: int = D, q: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered vectors with a decaying spectrum (what trained embeddings look like): candidates
    ``[n, d]``, tuning queries ``[q, d]`` and held-out queries ``[q, d]``, float32."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, d))
    spec = np.exp(-np.arange(d) / 6)

    def draw(m: int) -> np.ndarray:
        return ((centres[rng.integers(0, len(centres), m)] + 0.5 * rng.standard_normal((m, d))) * spec).astype(np.float32)

    return draw(n), draw(q), draw(q)


@pytest.fixture(scope="module")
def built() -> tuple[ann.FaissIndex, ann.AnnInfo, np.ndarray, np.ndarray]:
    x, q_tune, q_test = _catalogue()
    rng = np.random.default_rng(1)
    excl = [rng.choice(N, 20, replace=False) for _ in range(len(q_tune))]
    index, info = ann.build(x, q_tune, excl, exact_below=5_000, k=K, target=0.95, retriever="als")
    assert isinstance(index, ann.FaissIndex)
    return index, info, x, q_test


def test_small_catalogue_stays_exact() -> None:
    x, q, _ = _catalogue(n=2_000)
    index, info = ann.build(x, q, exact_below=5_000)
    assert isinstance(index, ExactIndex) and info.kind == "exact" and info.recall == 1.0
    assert ann.choose_kind(49_999) == "exact" and ann.choose_kind(50_000) == "ivf_flat"
    assert ann.choose_kind(60_000, "hnsw") == "hnsw"


def test_tuned_index_agrees_with_exact_on_held_out_queries(built) -> None:
    index, info, x, q_test = built
    assert info.kind == "ivf_flat" and info.recall >= 0.95
    # the chosen nprobe is the lowest on the ladder reaching the target
    p = info.search["nprobe"]
    assert all(t["recall"] < 0.95 for t in info.tried if t["nprobe"] < p)
    truth = ann.exact_truth(x, q_test, K)
    found, scores = index.search(q_test, K)
    assert ann.recall_at(found, truth) >= 0.93  # held out: a little below the tuning set's
    # scores are the exact inner products of what was found, best first
    np.testing.assert_allclose(scores, np.take_along_axis(q_test @ x.T, found, axis=1), rtol=1e-5, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_exhaustive_probe_equals_exact_search_with_exclusions(built) -> None:
    index, info, x, q_test = built
    full = ann.FaissIndex(x, index.index, {"nprobe": info.params["nlist"]})
    rng = np.random.default_rng(2)
    exact = ExactIndex(x)
    excl = [exact.search(q[None], 10)[0][0][::2] for q in q_test[:50]]  # drop some true top hits
    excl = [np.concatenate([e, rng.choice(N, 5, replace=False)]) for e in excl]
    fi, fs = full.search(q_test[:50], K, excl)
    ei, es = exact.search(q_test[:50], K, excl)
    np.testing.assert_array_equal(fi, ei)
    np.testing.assert_allclose(fs, es, rtol=1e-5, atol=1e-5)


def test_ann_answers_never_hold_excluded_candidates(built) -> None:
    index, _, x, q_test = built
    exact = ExactIndex(x)
    excl = [exact.search(q[None], 30)[0][0] for q in q_test[:40]]  # exclude each query's true top 30
    found, scores = index.search(q_test[:40], K, excl)
    assert found.shape == (40, K) and np.isfinite(scores).all()
    for row, ex in zip(found, excl, strict=True):
        assert not np.isin(row, ex).any()
        assert len(np.unique(row)) == K


@pytest.mark.parametrize("selective", [False, True])
def test_allow_filter_returns_only_allowed_rows(built, monkeypatch, selective: bool) -> None:
    index, _, x, q_test = built
    rng = np.random.default_rng(3)
    allow = rng.random(N) < (0.05 if selective else 0.6)
    if not selective:  # the bitmap selector path (else the exact scan of the allowed rows)
        monkeypatch.setattr(ann, "EXACT_FILTER_BELOW", 100)
    excl = [rng.choice(np.flatnonzero(allow), 10, replace=False) for _ in range(30)]
    found, _ = index.search(q_test[:30], K, excl, allow=allow)
    kept = np.flatnonzero(allow)
    loc = ann.exact_truth(x[kept], q_test[:30], K, [np.flatnonzero(np.isin(kept, e)) for e in excl])
    truth = np.where(loc >= 0, kept[np.maximum(loc, 0)], -1)
    valid = found[found >= 0]
    assert allow[valid].all()
    for row, ex in zip(found, excl, strict=True):
        assert not np.isin(row, ex).any()
    assert ann.recall_at(found, truth) >= (0.999 if selective else 0.85)


def test_drop_excluded_keeps_order_and_pads() -> None:
    idx = np.array([[5, 3, -1, 7], [1, 2, 3, 4]])
    sc = np.array([[4, 3, -np.inf, 1], [9, 8, 7, 6]], np.float32)
    oi, os_ = ann.drop_excluded(idx, sc, 3, [np.array([3]), np.array([], np.int64)])
    np.testing.assert_array_equal(oi, [[5, 7, -1], [1, 2, 3]])
    np.testing.assert_array_equal(os_, np.array([[4, 1, -np.inf], [9, 8, 7]], np.float32))


def test_index_round_trips_through_a_bundle(built, tmp_path: Path) -> None:
    index, info, x, q_test = built
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "model.txt").write_text("weights")
    written = ann.save(staging, "als", index, info)
    assert written == ["ann/als.faiss", "ann/als.json"]
    manifest = bundle.publish(staging, str(tmp_path / "models"), "startup_developer", metrics={},
                              watermark=None, extra={"ann": {"als": info.summary}})
    assert {"ann/als.faiss", "ann/als.json"} <= set(manifest["files"])
    local, m = bundle.fetch_verified(str(tmp_path / "models" / "startup_developer"))
    assert m["ann"]["als"]["recall@100"] == pytest.approx(info.recall)
    loaded = ann.load(str(local), "als", x)
    assert isinstance(loaded, ann.FaissIndex) and loaded.search_args == info.search
    record = json.loads((local / "ann" / "als.json").read_text())
    assert record["recall"] == pytest.approx(info.recall) and record["kind"] == "ivf_flat"
    a = index.search(q_test[:20], K)
    for mmap in (False, True):  # in memory (default) or the IVF lists mapped from the file
        b = ann.load(str(local), "als", x, mmap=mmap).search(q_test[:20], K)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # an index built on other vectors is refused, not served
    with pytest.raises(ModelMismatchError):
        ann.load(str(local), "als", x[::-1].copy())
    # a corrupted index file fails the bundle's checksum
    with open(local / "ann" / "als.faiss", "r+b") as f:
        f.seek(200)
        f.write(b"\0\1\2\3")
    with pytest.raises(BundleError):
        bundle.verify_dir(local)


def test_rebuild_on_the_same_vectors_writes_the_same_files(built, tmp_path: Path) -> None:
    """The files hold what was built, not how long it took: a rerun on the same data leaves the
    bundle's checksums as they were (publish then sees it unchanged); timings go to the manifest."""
    index, info, x, _ = built
    again = ann.AnnInfo.from_dict(info.to_dict())
    again.build_seconds, again.ms_per_query = info.build_seconds + 9.0, (info.ms_per_query or 0) + 1.0
    again.tried = [{**t, "ms_per_query": t["ms_per_query"] * 3} for t in info.tried]
    for folder, rec in (("a", info), ("b", again)):
        ann.save(tmp_path / folder, "als", index, rec)
    for f in ("als.json", "als.faiss"):
        assert (tmp_path / "a/ann" / f).read_bytes() == (tmp_path / "b/ann" / f).read_bytes(), f
    record = json.loads((tmp_path / "a/ann/als.json").read_text())
    assert "build_seconds" not in record and "ms_per_query" not in record["tried"][0]
    assert info.summary["ms_per_query"] == info.ms_per_query and info.summary["build_seconds"] >= 0


def test_exact_record_loads_as_exact_index(tmp_path: Path) -> None:
    x, q, _ = _catalogue(n=1_000)
    index, info = ann.build(x, q)
    assert ann.save(tmp_path, "two_tower", index, info) == ["ann/two_tower.json"]
    assert isinstance(ann.load(str(tmp_path), "two_tower", x), ExactIndex)
    assert ann.load(str(tmp_path), "als", x) is None


def test_top_k_baseline_unchanged() -> None:
    s = np.array([[0.1, 0.9, 0.5, 0.7]], np.float32)
    idx, sc = top_k(s, 2, [np.array([1])])
    np.testing.assert_array_equal(idx, [[3, 2]])


def test_exact_index_takes_the_same_allow_mask(built) -> None:
    _, _, x, q_test = built
    rng = np.random.default_rng(4)
    allow = rng.random(N) < 0.3
    idx, sc = ExactIndex(x).search(q_test[:10], K, None, allow=allow)
    assert allow[idx[np.isfinite(sc)]].all()
    kept = np.flatnonzero(allow)
    np.testing.assert_array_equal(idx, kept[ann.exact_truth(x[kept], q_test[:10], K)])
