"""Approximate nearest-neighbour candidate search (faiss), built once per bundle at publish time.

What: :class:`FaissIndex`, a :class:`~startup_recs.serving.index.CandidateIndex` over a faiss
index (IVF-Flat by default, HNSW on request) that keeps the exact candidate matrix beside it for
``scores`` / ``scores_at`` (the ranker's features need exact scores of chosen candidates);
:func:`build` picks the index type from the catalogue size (exact below ``exact_below``, 50k by
default) and tunes its search breadth (IVF ``nprobe`` / HNSW ``efSearch``) to the lowest value
reaching ``recall@k >= target`` against exact search on real queries; :func:`save` /
:func:`load` keep it in faiss's own file format (``write_index`` / ``read_index``; memory-mapped
with ``IO_FLAG_MMAP`` on request, see :func:`load`) plus a JSON record of what was built and the
recall it reached.

Why IVF-Flat by default: re-ranking wants the top 200, and for large ``k`` an inverted-file scan
of a few percent of the catalogue beats a graph walk (HNSW needs ``efSearch`` well above ``k``:
measured at 100k x 64, HNSW needed ~2.7 ms per query for recall@200 = 0.95, IVF-Flat ~0.4 ms).
Flat codes keep the scores exact for the candidates it returns (1M x 64 float32 = 256 MiB).

Exclusions (already-seen candidates, the entity itself) are handled by over-fetching
``k + len(exclude)`` and dropping them; an allow-list filter (``allow``: bool ``[n_c]``) is a faiss
``IDSelectorBitmap`` inside the scan, and a filter so selective that the scan would return too few
candidates falls back to an exact scan of the allowed rows only.

Files in a models folder / bundle (listed with checksums in the manifest like every file)::

    ann/<retriever>.json    AnnInfo: kind, params, chosen search breadth, recall@k, fingerprint
    ann/<retriever>.faiss   the faiss index (absent when kind == "exact")
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from startup_recs.core.errors import ConfigError, ModelMismatchError
from startup_recs.serving.index import CandidateIndex, ExactIndex, top_k

log = logging.getLogger(__name__)

FORMAT = "startup_recs.ann/1"
ANN_DIR = "ann"
EXACT_BELOW = 50_000  # catalogues smaller than this are scanned exactly (a scan is ~1 ms there)
RECALL_K = 200  # the retrieval depth the re-ranker sees
RECALL_TARGET = 0.95
KINDS = ("exact", "ivf_flat", "hnsw")
# An allow-list keeping fewer rows than this is scanned exactly (cheap, and IVF/HNSW lose recall
# when most of what they visit is filtered out).
EXACT_FILTER_BELOW = 20_000


@dataclass
class AnnInfo:
    """What :func:`build` made, as recorded in ``ann/<retriever>.json``.

    ``params``: build parameters (``nlist`` or ``M`` / ``efConstruction``); ``search``: the
    chosen search breadth (``{"nprobe": p}`` or ``{"efSearch": e}``); ``recall``: mean
    recall@``k`` of the chosen setting vs exact search (exclusions applied as when serving) over
    ``queries`` sampled query vectors; ``tried``: ``[{search value, recall, ms_per_query}]`` of
    the tuning ladder; ``fingerprint``: sha256 of the candidate matrix's shape and a row sample,
    checked at load so an index never serves vectors it was not built on.
    """

    kind: str
    n: int
    dim: int
    retriever: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    k: int = RECALL_K
    target: float = RECALL_TARGET
    recall: float | None = None
    queries: int = 0
    tried: list[dict[str, Any]] = field(default_factory=list)
    build_seconds: float = 0.0
    ms_per_query: float | None = None
    fingerprint: str = ""
    file: str | None = None
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_file_dict(self) -> dict[str, Any]:
        """What ``ann/<retriever>.json`` holds: :meth:`to_dict` without the timings
        (``build_seconds``, ``ms_per_query``, the ladder's ``ms_per_query``). A file is part of
        the bundle's checksums, so a rebuild on the same vectors must write the same bytes, or a
        rerun on the same data would publish a new version; the timings go to the manifest
        (:attr:`summary`)."""
        d = self.to_dict()
        d.pop("build_seconds"), d.pop("ms_per_query")
        d["tried"] = [{k: v for k, v in t.items() if k != "ms_per_query"} for t in d["tried"]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnnInfo:
        if d.get("format") != FORMAT:
            raise ModelMismatchError(f"not an ANN record of format {FORMAT!r} (got {d.get('format')!r})")
        keys = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in keys})

    @property
    def summary(self) -> dict[str, Any]:
        """The manifest's short form: kind, search breadth, ``recall@k``, and the timings."""
        return {"kind": self.kind, **self.search, f"recall@{self.k}": self.recall, "n": self.n,
                "ms_per_query": self.ms_per_query, "build_seconds": round(self.build_seconds, 3)}


def fingerprint(vectors: np.ndarray, sample: int = 4096) -> str:
    """sha256 of ``vectors``' shape and ``sample`` evenly spaced rows (cheap at 1M rows)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.unique(np.linspace(0, max(len(v) - 1, 0), min(len(v), sample)).astype(np.int64))
    h = hashlib.sha256(f"{v.shape[0]}x{v.shape[1] if v.ndim == 2 else 0}".encode())
    if len(v):
        h.update(np.ascontiguousarray(v[rows]).tobytes())
    return h.hexdigest()


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a runtime dependency
        raise ConfigError("approximate search needs faiss-cpu (see requirements/lock.txt)") from exc
    return faiss


# --- the index ---------------------------------------------------------------------------------
class FaissIndex(CandidateIndex):
    """A faiss index over ``vectors`` ``[n_c, d]`` (inner product), with the exact matrix kept
    for ``scores`` / ``scores_at``.

    ``search``: ``{"nprobe": p}`` (IVF) or ``{"efSearch": e}`` (HNSW). Searching returns
    ``(idx int64 [n, k], scores float32 [n, k])`` best first; ``-1`` / ``-inf`` pad rows with
    fewer than ``k`` eligible candidates (callers drop non-finite scores).
    """

    def __init__(self, vectors: np.ndarray, index: Any, search: dict[str, Any], info: AnnInfo | None = None) -> None:
        super().__init__(vectors)
        if index.ntotal != self.size or index.d != self.dim:
            raise ModelMismatchError(f"ANN index holds {index.ntotal} x {index.d}, the candidates are "
                                     f"{self.size} x {self.dim}")
        self.index = index
        self.search_args = dict(search)
        self.info = info
        self._params = self._make_params()

    def _make_params(self, sel: Any = None) -> Any:
        faiss = _faiss()
        kw = {"sel": sel} if sel is not None else {}
        if "nprobe" in self.search_args:
            return faiss.SearchParametersIVF(nprobe=int(self.search_args["nprobe"]), **kw)
        if "efSearch" in self.search_args:
            return faiss.SearchParametersHNSW(efSearch=int(self.search_args["efSearch"]), **kw)
        return faiss.SearchParameters(**kw) if kw else None

    def _faiss_search(self, queries: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        dist, idx = self.index.search(q, int(k), params=params)
        idx = idx.astype(np.int64, copy=False)
        dist = np.where(idx >= 0, dist, -np.inf).astype(np.float32, copy=False)
        return idx, dist

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._faiss_search(queries, k, self._params)

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None,
               allow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query, never ``exclude[i]`` for query ``i``, only rows where ``allow``.

        Exclusions: over-fetch ``k + max(len(exclude[i]))`` and drop them (one faiss call for the
        whole batch). ``allow`` (bool ``[n_c]``): an ``IDSelectorBitmap`` in the scan, or an exact
        scan of the allowed rows when fewer than :data:`EXACT_FILTER_BELOW` remain.
        """
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        k_out = min(int(k), self.size)
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        if allow is not None:
            allow = np.asarray(allow, dtype=bool)
            if allow.shape != (self.size,):
                raise ConfigError(f"allow mask has shape {allow.shape}, expected ({self.size},)")
            kept = np.flatnonzero(allow)
            if len(kept) < EXACT_FILTER_BELOW:
                return _exact_subset(self.vectors, kept, queries, k_out, exclude)
            faiss = _faiss()
            bits = np.packbits(allow, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))  # n = bytes of the bitmap
            idx, sc = self._faiss_search(queries, min(k_out + extra, self.size), self._make_params(sel))
            del bits  # the selector read it during the search only
        else:
            idx, sc = self._search(queries, min(k_out + extra, self.size))
        return drop_excluded(idx, sc, k_out, exclude)


def _exact_subset(vectors: np.ndarray, kept: np.ndarray, queries: np.ndarray, k: int,
                  exclude: Sequence[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` among rows ``kept`` only (a selective filter): ``[n, |kept|]`` scores."""
    scores = queries @ vectors[kept].T
    excl = None
    if exclude is not None:
        excl = [np.flatnonzero(np.isin(kept, e)) for e in exclude]
    loc, sc = top_k(scores, k, excl)
    idx = kept[loc] if len(kept) else loc
    out_i = np.full((len(queries), k), -1, np.int64)
    out_s = np.full((len(queries), k), -np.inf, np.float32)
    out_i[:, : idx.shape[1]], out_s[:, : sc.shape[1]] = idx, sc
    return out_i, np.where(out_i >= 0, out_s, -np.inf).astype(np.float32)


def drop_excluded(idx: np.ndarray, sc: np.ndarray, k: int,
                  exclude: Sequence[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first ``k`` entries of each row of an over-fetched ``(idx, sc)`` ``[n, K]`` that
    are valid (``idx >= 0``) and not in ``exclude[i]``; order is kept. Pads with ``-1`` / ``-inf``."""
    bad = idx < 0
    if exclude is not None:
        for r, ex in enumerate(exclude):
            if len(ex):  # membership by binary search: cheaper than np.isin for a few hundred ids
                ex = np.sort(np.asarray(ex, dtype=np.int64))
                pos = np.minimum(np.searchsorted(ex, idx[r]), len(ex) - 1)
                bad[r] |= ex[pos] == idx[r]
    if not bad.any():
        return idx[:, :k], sc[:, :k]
    out_i = np.full((len(idx), k), -1, np.int64)
    out_s = np.full((len(idx), k), -np.inf, np.float32)
    for r in range(len(idx)):  # boolean indexing per row: a few µs, cheaper than take_along_axis
        good = ~bad[r]
        ii, ss = idx[r][good][:k], sc[r][good][:k]
        out_i[r, : len(ii)], out_s[r, : len(ss)] = ii, ss
    return out_i, out_s


# --- building and tuning -----------------------------------------------------------------------
def choose_kind(n: int, kind: str = "auto", exact_below: int = EXACT_BELOW) -> str:
    """``"exact"`` below ``exact_below`` candidates, else ``kind`` (``auto`` = ``ivf_flat``)."""
    if kind not in ("auto", *KINDS):
        raise ConfigError(f"unknown ANN index kind {kind!r}; expected auto or one of {', '.join(KINDS)}")
    if kind == "exact" or n < exact_below:
        return "exact"
    return "ivf_flat" if kind == "auto" else kind


def nlist_for(n: int) -> int:
    """IVF lists for ``n`` vectors: ~4 sqrt(n) (1M -> 4000, 100k -> 1265), within [16, 65536]."""
    return int(min(65_536, max(16, round(4 * np.sqrt(max(n, 1))))))


def _train_ivf(vectors: np.ndarray, nlist: int, seed: int) -> Any:
    faiss = _faiss()
    d = vectors.shape[1]
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 12
    index.cp.seed = int(seed)
    index.cp.max_points_per_centroid = 64  # k-means on <= 64 * nlist sampled rows (bounded build time)
    index.train(vectors)
    index.add(vectors)
    return index


def _train_hnsw(vectors: np.ndarray, m: int = 32, ef_construction: int = 80) -> Any:
    faiss = _faiss()
    index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(vectors)
    return index


def exact_truth(vectors: np.ndarray, queries: np.ndarray, k: int,
                exclude: Sequence[np.ndarray] | None = None, chunk: int = 64) -> np.ndarray:
    """Exact top-``k`` indices ``int64 [n, k]`` (``-1`` pads), computed ``chunk`` queries at a
    time so memory stays at ``chunk * n_c`` floats."""
    out = np.full((len(queries), min(k, len(vectors))), -1, np.int64)
    for lo in range(0, len(queries), chunk):
        q = queries[lo:lo + chunk]
        ex = None if exclude is None else list(exclude[lo:lo + chunk])
        idx, sc = top_k(q @ vectors.T, k, ex)
        out[lo:lo + len(q)] = np.where(np.isfinite(sc), idx, -1)
    return out


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows of ``|found ∩ truth| / |truth|`` (``-1`` entries ignored; rows without
    truth skipped). ``found``, ``truth``: ``int64 [n, k]``."""
    vals = []
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        if len(t):
            vals.append(len(np.intersect1d(f[f >= 0], t, assume_unique=True)) / len(t))
    return float(np.mean(vals)) if vals else 1.0


def _ladder(lo: int, hi: int) -> list[int]:
    """Powers of two from ``lo`` up to ``hi`` (``hi`` included)."""
    out, v = [], max(1, lo)
    while v < hi:
        out.append(v)
        v *= 2
    return [*out, hi]


def _tune(index: FaissIndex, key: str, lo: int, hi: int, queries: np.ndarray, truth: np.ndarray, k: int,
          exclude: Sequence[np.ndarray] | None, target: float) -> tuple[int, float, list[dict[str, Any]]]:
    """Lowest ``key`` value in ``[lo, hi]`` whose recall@k reaches ``target``: doubling, then
    bisection between the last miss and the first hit (recall grows with the breadth). Returns
    ``(value, recall, tried)``; ``hi`` and its recall when nothing reaches the target."""
    tried: dict[int, dict[str, Any]] = {}

    def measure(v: int) -> float:
        if v not in tried:
            index.search_args = {key: v}
            index._params = index._make_params()
            t0 = time.perf_counter()
            idx, _ = index.search(queries, k, exclude)
            ms = (time.perf_counter() - t0) * 1000 / max(len(queries), 1)
            tried[v] = {key: v, "recall": recall_at(idx, truth), "ms_per_query": ms}
        return tried[v]["recall"]

    miss, hit = lo - 1, None
    for v in _ladder(lo, hi):
        if measure(v) >= target:
            hit = v
            break
        miss = v
    if hit is None:
        best = hi
    else:
        while hit - miss > 1:
            mid = (hit + miss) // 2
            if measure(mid) >= target:
                hit = mid
            else:
                miss = mid
        best = hit
    index.search_args = {key: best}
    index._params = index._make_params()
    return best, tried[best]["recall"], [tried[v] for v in sorted(tried)]


def build(vectors: np.ndarray, queries: np.ndarray, exclude: Sequence[np.ndarray] | None = None, *,
          kind: str = "auto", exact_below: int = EXACT_BELOW, k: int = RECALL_K, target: float = RECALL_TARGET,
          seed: int = 0, retriever: str = "") -> tuple[CandidateIndex, AnnInfo]:
    """Build and tune the index of a candidate matrix ``vectors`` ``[n_c, d]``.

    ``queries`` ``[q, d]``: real query vectors (entity embeddings) to tune on, with their serving
    ``exclude`` lists; zero rows are dropped (an unknown entity's vector has no neighbours).
    Returns the index and its :class:`AnnInfo`; an exact index has recall 1.
    """
    t0 = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    chosen = choose_kind(n, kind, exact_below)
    info = AnnInfo(kind=chosen, n=n, dim=d, retriever=retriever, k=k, target=target, fingerprint=fingerprint(vectors))
    if chosen == "exact":
        info.recall = 1.0
        info.build_seconds = time.perf_counter() - t0
        return ExactIndex(vectors), info
    queries = np.asarray(queries, dtype=np.float32)
    keep = np.flatnonzero(np.abs(queries).sum(axis=1) > 0)
    queries = np.ascontiguousarray(queries[keep])
    exclude = None if exclude is None else [exclude[i] for i in keep]
    if not len(queries):
        raise ConfigError(f"{retriever or 'ANN'}: no non-zero query vectors to tune the index on")
    k_eff = min(k, n)
    truth = exact_truth(vectors, queries, k_eff, exclude)
    if chosen == "ivf_flat":
        nlist = nlist_for(n)
        index = FaissIndex(vectors, _train_ivf(vectors, nlist, seed), {"nprobe": 1})
        info.params = {"nlist": nlist, "metric": "inner_product"}
        key, lo, hi = "nprobe", 1, nlist
    else:
        m, efc = 32, 80
        index = FaissIndex(vectors, _train_hnsw(vectors, m, efc), {"efSearch": k_eff})
        info.params = {"M": m, "efConstruction": efc, "metric": "inner_product"}
        key, lo, hi = "efSearch", k_eff, max(k_eff, 16 * k_eff)
    value, recall, tried = _tune(index, key, lo, hi, queries, truth, k_eff, exclude, target)
    info.search, info.recall, info.tried, info.queries = {key: value}, recall, tried, len(queries)
    info.ms_per_query = next(t["ms_per_query"] for t in tried if t[key] == value)
    info.build_seconds = time.perf_counter() - t0
    index.info = info
    if recall < target:
        log.warning("%s: %s reached recall@%d %.3f < %.2f at the widest search (%s=%d)",
                    retriever, chosen, k_eff, recall, target, key, value)
    log.info("%s: %s index over %d x %d, %s=%d, recall@%d %.4f (%.2f ms/query), built in %.1f s",
             retriever, chosen, n, d, key, value, k_eff, recall, info.ms_per_query, info.build_seconds)
    return index, info


# --- files -------------------------------------------------------------------------------------
def save(folder: str | Path, name: str, index: CandidateIndex, info: AnnInfo) -> list[str]:
    """Write ``<folder>/ann/<name>.json`` (+ ``.faiss`` for a faiss index); returns the relative
    paths written (JSON last, so a JSON always names a complete index file)."""
    root = Path(folder) / ANN_DIR
    root.mkdir(parents=True, exist_ok=True)
    written = []
    info = AnnInfo.from_dict(info.to_dict())
    info.retriever = info.retriever or name
    if isinstance(index, FaissIndex):
        info.file = f"{name}.faiss"
        _faiss().write_index(index.index, str(root / info.file))
        written.append(f"{ANN_DIR}/{info.file}")
    else:
        info.file = None
    (root / f"{name}.json").write_text(json.dumps(info.to_file_dict(), indent=2, sort_keys=True) + "\n")
    written.append(f"{ANN_DIR}/{name}.json")
    return written


def read_info(folder: str, name: str) -> AnnInfo | None:
    """The ``ann/<name>.json`` record of a models folder or bundle (local or ``s3://``), or None."""
    from startup_recs.core import storage

    uri = storage.join(folder, ANN_DIR, f"{name}.json")
    return AnnInfo.from_dict(storage.read_json(uri)) if storage.exists(uri) else None


def load(folder: str, name: str, vectors: np.ndarray, *, mmap: bool = False) -> CandidateIndex | None:
    """The index that :func:`save` wrote for retriever ``name`` over ``vectors`` (the candidate
    matrix in serving order), or None when the folder has none (the caller scans exactly).

    The index is read into memory by default. ``mmap=True`` maps an IVF index's lists from the
    local file instead (``IO_FLAG_MMAP``: paged in on use, shared by every process serving the same
    bundle, ~0 RSS at load), but faiss then serves them through ``OnDiskInvertedLists``, whose
    per-list locking made one query ~20x slower here (100k x 64, nprobe 45: 3.3 ms vs 0.16 ms), so
    it is for memory-bound hosts only. ``s3://`` folders are always read into memory. Raises
    :class:`ModelMismatchError` when the index was built on other vectors.
    """
    from startup_recs.core import storage

    info = read_info(folder, name)
    if info is None:
        return None
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if info.n != len(vectors) or info.dim != vectors.shape[1] or info.fingerprint != fingerprint(vectors):
        raise ModelMismatchError(f"{name}: the ANN index in {folder} was built on other candidate vectors "
                                 f"({info.n} x {info.dim} vs {vectors.shape[0]} x {vectors.shape[1]})")
    if info.kind == "exact" or not info.file:
        return ExactIndex(vectors)
    faiss = _faiss()
    uri = storage.join(folder, ANN_DIR, info.file)
    if storage.is_s3(uri):
        raw = np.frombuffer(storage.read_bytes(uri), dtype=np.uint8)
        index = faiss.deserialize_index(raw)
    else:
        path = str(storage.local(uri))
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap and info.kind == "ivf_flat" else 0
        index = faiss.read_index(path, flags)
    return FaissIndex(vectors, index, info.search, info)


def set_threads(n: int) -> None:
    """faiss's OpenMP threads (serving: 1 per process; building: all cores)."""
    _faiss().omp_set_num_threads(int(n))
