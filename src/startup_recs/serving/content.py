"""Content-based cold start: score candidates by how well their profile matches the entity's.

The match features come from :func:`startup_recs.features.match_features` (skills <-> skills
needed, sectors and stages <-> an investor's thesis, location): the same code that gives the
ranker its match features and the API its ``match_reasons``. The score is their weighted sum plus
a small popularity prior that breaks ties between equally matching candidates. Without feature
tables (an id-only imported log) or for an entity without a profile, the score is popularity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from startup_recs.serving.data import ServingData
from startup_recs.serving.retrievers import Retriever, register_retriever

# Weight of the popularity prior relative to one fully matching feature. Small: it orders
# candidates inside a tie of match scores, it does not override a better match.
POPULARITY_PRIOR = 0.05
# Match features summed into the score with weight 1, except these: raw counts and unbounded
# ratios would swamp the [0, 1] flags and fractions (their normalised twins are in the sum).
ZERO_WEIGHT_SUFFIXES = ("_overlap", "_log_ratio")
# Entities scored per vectorised batch (memory: batch x n_c float64 per feature).
BATCH = 32
# List vocabularies up to this size also keep per-candidate token bitsets: one entity's overlap
# with every candidate is then a popcount over n_c x 4 words instead of a sparse product.
BITSET_MAX_TOKENS = 256


def default_weight(name: str) -> float:
    return 0.0 if name.endswith(ZERO_WEIGHT_SUFFIXES) else 1.0


class CandidateMatcher:
    """All-candidate match features for a batch of entities, vectorised.

    Equal to :func:`startup_recs.features.match_features` of each entity against all candidates
    (tested column by column) but the candidate side is tokenised once, up front, and each term
    becomes a sparse or broadcast product over ``[batch, n_c]``: one entity against 100k
    candidates costs milliseconds instead of a tokenisation of every candidate per request. It
    reuses the feature module's tokenisers and term table, so the definitions live there only;
    a term it does not know (imported feature tables) makes :meth:`supported` false, and the
    caller uses ``match_features`` per entity instead.
    """

    def __init__(self, use_case: str, entity_features: pd.DataFrame, candidate_features: pd.DataFrame) -> None:
        from startup_recs.core.usecases import get_use_case
        from startup_recs.features import match as F

        self.F = F
        self.uc = get_use_case(use_case)
        self.n_c = len(candidate_features)
        ent_cols, cand_cols = set(map(str, entity_features.columns)), set(map(str, candidate_features.columns))
        s_cols, u_cols = (ent_cols, cand_cols) if self.uc.entity_is_startup else (cand_cols, ent_cols)
        known = F.TERMS.get(self.uc.user_role, [])
        self.terms = [t for t in known if t.needs_s in s_cols and t.needs_u in u_cols]
        kinds = {F._overlap: "overlap", F._in_set: "in_set", F._same: "same", F._check_fit: "check"}
        self.kinds = [kinds.get(t.compute) for t in self.terms]
        self.supported = bool(self.terms) and all(self.kinds)
        self.names = [n for t in self.terms for n in t.names]
        self._cand: list[dict] = []
        if self.supported:
            for t, kind in zip(self.terms, self.kinds, strict=True):
                self._cand.append(self._prepare(kind, candidate_features[self._cand_col(t)]))

    def _ent_col(self, t) -> str:
        return t.needs_s if self.uc.entity_is_startup else t.needs_u

    def _cand_col(self, t) -> str:
        return t.needs_u if self.uc.entity_is_startup else t.needs_s

    def _list_matrix(self, col: pd.Series, vocab: pd.Index | None = None):
        import scipy.sparse as sp

        from startup_recs.serving.candidate_match import exploded

        rows, toks = exploded(col)  # the original tokeniser's output, vectorised for Parquet lists
        if vocab is None:
            vocab = pd.Index(pd.unique(toks)) if len(toks) else pd.Index([], dtype=object)
        codes = vocab.get_indexer(toks) if len(vocab) else np.full(len(toks), -1)
        ok = codes >= 0
        m = sp.csr_matrix((np.ones(int(ok.sum()), np.float64), (rows[ok], codes[ok])),
                          shape=(len(col), max(len(vocab), 1)))
        return m, np.bincount(rows, minlength=len(col)).astype(np.float64), vocab

    @staticmethod
    def _bits(m) -> np.ndarray | None:
        """uint64 ``[rows, words]`` token bitsets of a 0/1 list matrix (None when a row holds a
        token twice, whose product entry would be 2, or the vocabulary passes 256 tokens)."""
        if m.shape[1] > BITSET_MAX_TOKENS or (m.nnz and m.data.max() > 1):
            return None
        coo = m.tocoo()
        bits = np.zeros((m.shape[0], (m.shape[1] + 63) // 64), np.uint64)
        np.bitwise_or.at(bits, (coo.row, coo.col // 64), np.left_shift(np.uint64(1), (coo.col % 64).astype(np.uint64)))
        return bits

    def _prepare(self, kind: str, col: pd.Series) -> dict:
        F = self.F
        startup_side = not self.uc.entity_is_startup  # the candidates are startups
        if kind == "overlap" or (kind == "in_set" and not startup_side):
            m, counts, vocab = self._list_matrix(col)
            return {"m_t": m.T.tocsr(), "counts": counts, "vocab": vocab, "bits": self._bits(m)}
        if kind in ("same", "in_set"):
            mask, vals = F._strings(col)
            vocab = pd.Index(pd.unique(vals))
            return {"mask": mask, "codes": vocab.get_indexer(vals), "vocab": vocab}
        return {"x": F._numeric(col, False)}

    def features(self, ents: pd.DataFrame) -> np.ndarray:
        """``float64 [b, n_c, k]`` match features of each entity row against every candidate."""
        out = np.empty((len(ents), self.n_c, len(self.names)))
        j = 0
        for t, kind, c in zip(self.terms, self.kinds, self._cand, strict=True):
            for arr in self._term(kind, ents[self._ent_col(t)], c):
                out[:, :, j] = arr
                j += 1
        return out

    def scores(self, ents: pd.DataFrame, weights: np.ndarray) -> np.ndarray:
        """``sum_k w_k * feature_k``: ``float32 [b, n_c]`` without materialising all features."""
        acc = np.zeros((len(ents), self.n_c), np.float32)
        j = 0
        for t, kind, c in zip(self.terms, self.kinds, self._cand, strict=True):
            for arr in self._term(kind, ents[self._ent_col(t)], c):
                if weights[j]:
                    acc += weights[j] * arr
                j += 1
        return acc.astype(np.float32)

    def _term(self, kind: str, col: pd.Series, c: dict) -> list[np.ndarray]:
        F = self.F
        b = len(col)
        ent_is_startup = self.uc.entity_is_startup
        if kind == "overlap":
            m, counts_e, _ = self._list_matrix(col, c["vocab"])
            ebits = self._bits(m) if c["bits"] is not None else None
            if ebits is not None:  # shared tokens = popcount of the AND of two bitsets: the product's entries
                ov = np.empty((b, self.n_c), np.float32)
                for i in range(b):
                    ov[i] = np.bitwise_count(c["bits"] & ebits[i]).sum(axis=1, dtype=np.uint32)
            elif len(c["vocab"]):
                ov = (m @ c["m_t"]).toarray().astype(np.float32)
            else:
                ov = np.zeros((b, self.n_c), np.float32)
            ce, cc = counts_e[:, None].astype(np.float32), c["counts"][None, :].astype(np.float32)
            na, nb = (ce, cc) if ent_is_startup else (cc, ce)
            na, nb = np.broadcast_to(na, ov.shape), np.broadcast_to(nb, ov.shape)
            union = na + nb - ov
            jac = np.divide(ov, union, out=np.zeros_like(ov), where=union > 0)
            cov = np.divide(ov, na, out=np.zeros_like(ov), where=na > 0)
            return [ov, jac, cov]
        if kind == "in_set" and ent_is_startup:  # entity value in each candidate's list
            mask, vals = F._strings(col)
            codes = c["vocab"].get_indexer(vals) if len(c["vocab"]) else np.full(b, -1)
            out = np.zeros((b, self.n_c))
            ok = mask & (codes >= 0)
            if ok.any():
                out[ok] = c["m_t"][codes[ok]].toarray()
            return [out]
        if kind == "in_set":  # each candidate's value in the entity's list
            m, _, _ = self._list_matrix(col, c["vocab"])
            dense = m.toarray()
            out = np.zeros((b, self.n_c))
            ok = c["mask"] & (c["codes"] >= 0)
            out[:, ok] = dense[:, c["codes"][ok]]
            return [out]
        if kind == "same":
            mask, vals = F._strings(col)
            codes = c["vocab"].get_indexer(vals)
            eq = (codes[:, None] == c["codes"][None, :]) & (codes[:, None] >= 0)
            return [(eq & mask[:, None] & c["mask"][None, :]).astype(np.float32)]
        xe = F._numeric(col, False)[:, None]
        xc = c["x"][None, :]
        f, ch = (xe, xc) if ent_is_startup else (xc, xe)
        f, ch = np.broadcast_to(f, (b, self.n_c)), np.broadcast_to(ch, (b, self.n_c))
        ok = (f > 0) & (ch > 0)
        ratio = np.divide(ch, f, out=np.zeros((b, self.n_c)), where=ok)
        logr = np.log(np.where(ok, ratio, 1.0))
        fit = ok & (ratio >= F.CHECK_FIT[0]) & (ratio <= F.CHECK_FIT[1])
        return [np.where(ok, logr, 0.0), fit.astype(np.float64)]


class ContentRetriever(Retriever):
    """Feature-match scorer; ``knows`` every entity (popularity stands in for missing profiles)."""

    name = "content"

    def __init__(self, data: ServingData, weights: dict[str, float] | None = None,
                 popularity_prior: float = POPULARITY_PRIOR, lists: ContentLists | None = None) -> None:
        super().__init__(data)
        self.lists = lists
        self.weights = weights or {}
        pop = np.log1p(np.maximum(data.popularity, 0)).astype(np.float32)
        self._prior = (pop / pop.max()).astype(np.float32) if pop.size and pop.max() > 0 else pop
        self.popularity_prior = float(popularity_prior)
        self._matcher: CandidateMatcher | None = None
        if data.has_features:
            m = CandidateMatcher(data.use_case, data.entity_features, data.candidate_features)
            self._matcher = m if m.supported else None

    def knows(self, entity_id: str) -> bool:
        return True

    def uses_features(self, entity_id: str) -> bool:
        """True when the entity's score comes from feature matches (not the popularity fallback)."""
        ef = self.data.entity_features
        return self.data.candidate_features is not None and ef is not None and entity_id in ef.index

    def match_matrix(self, entity_id: str, cand_idx: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
        """Match features of the entity against candidates (all, or ``cand_idx``): ``[m, k]``.
        Chosen candidates come from the data's pre-encoded match table (no pandas rows; the same
        values as ``features.match.match_features``)."""
        from startup_recs.features.match import match_features
        from startup_recs.serving.candidate_match import match_table

        if cand_idx is not None and self.data.has_features:
            table = match_table(self.data)
            if table.knows(entity_id):
                feats, names = table.features(entity_id, np.asarray(cand_idx, dtype=np.int64))
                return np.nan_to_num(np.asarray(feats, dtype=np.float32)), list(names)
        cands = self.data.candidate_features
        if cand_idx is not None:
            cands = cands.iloc[np.asarray(cand_idx, dtype=np.int64)]
        feats, names = match_features(self.data.use_case, self.data.entity_row(entity_id), cands)
        return np.nan_to_num(np.asarray(feats, dtype=np.float32)), list(names)

    def _w(self, names: list[str]) -> np.ndarray:
        return np.asarray([self.weights.get(n, default_weight(n)) for n in names], dtype=np.float32)

    def _combine(self, feats: np.ndarray, names: list[str], prior: np.ndarray) -> np.ndarray:
        return feats @ self._w(names) + self.popularity_prior * prior

    def score(self, entity_ids: Sequence[str]) -> np.ndarray:
        out = np.empty((len(entity_ids), self.data.n_candidates), dtype=np.float32)
        out[:] = self.popularity_prior * self._prior if self.data.has_features else self._prior
        if not self.data.has_features:
            return out
        rows = [r for r, e in enumerate(entity_ids) if self.uses_features(e)]
        with_feat = set(rows)
        no_feat = [r for r in range(len(entity_ids)) if r not in with_feat]
        out[no_feat] = self._prior  # no profile: popularity alone
        if self._matcher is not None:
            w = self._w(self._matcher.names)
            for lo in range(0, len(rows), BATCH):
                chunk = rows[lo:lo + BATCH]
                ents = self.data.entity_features.loc[[entity_ids[r] for r in chunk]]
                out[chunk] += self._matcher.scores(ents, w)
            return out
        for r in rows:
            feats, names = self.match_matrix(entity_ids[r])
            out[r] = self._combine(feats, names, self._prior)
        return out

    def top(self, entity_ids: Sequence[str], n: int, *, exclude_seen: bool = True,
            use_lists: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`Retriever.top`; from the bundle's materialized lists
        (:mod:`startup_recs.serving.content_lists`) when every entity has one and ``n`` is their
        depth, else by scoring every candidate."""
        if use_lists and exclude_seen and self.lists is not None and n == self.lists.k:
            rows = [self.lists.row.get(e) for e in entity_ids]
            if all(r is not None for r in rows):
                idx = self.lists.idx[rows].astype(np.int64)
                sc = self.lists.scores[rows]
                for j, e in enumerate(entity_ids):  # contacted since the lists were built: dropped
                    fresh = self.data.fresh_of(e)
                    if len(fresh):
                        gone = np.isin(idx[j], fresh)
                        idx[j, gone], sc[j, gone] = -1, -np.inf
                return idx, sc
        return super().top(entity_ids, n, exclude_seen=exclude_seen)

    def score_at(self, entity_id: str, cand_idx: np.ndarray) -> np.ndarray:
        cand_idx = np.asarray(cand_idx, dtype=np.int64)
        if not self.uses_features(entity_id):
            return self._prior[cand_idx]
        feats, names = self.match_matrix(entity_id, cand_idx)
        return self._combine(feats, names, self._prior[cand_idx])


@dataclass(frozen=True)
class ContentLists:
    """Materialized top-``k`` of cold entities: ``idx`` int32 ``[n, k]`` (-1 pads), ``scores``
    float32 ``[n, k]`` (-inf pads), ``row``: entity id -> row."""

    k: int
    idx: np.ndarray
    scores: np.ndarray
    row: dict[str, int]


def data_fingerprint(data: ServingData) -> str:
    """sha256 of what the lists depend on besides the entity: the candidate space, popularity."""
    import hashlib

    n = data.n_candidates
    pick = np.unique(np.linspace(0, max(n - 1, 0), min(n, 4096)).astype(np.int64))
    h = hashlib.sha256(f"{data.use_case}|{n}|{len(data.entity_counts)}".encode())
    if n:
        h.update("|".join(data.candidate_ids[pick].tolist()).encode())
        h.update(np.ascontiguousarray(data.popularity[pick]).tobytes())
    return h.hexdigest()


def load_lists(models_dir: str, data: ServingData) -> ContentLists | None:
    """The bundle's ``content/`` lists, or None. Raises :class:`ModelMismatchError` when they were
    built on other serving data."""
    import io

    from startup_recs.core import storage
    from startup_recs.core.errors import ModelMismatchError
    from startup_recs.serving.content_lists import CONTENT_DIR

    meta_uri = storage.join(models_dir, CONTENT_DIR, "lists.json")
    if not storage.exists(meta_uri):
        return None
    meta = storage.read_json(meta_uri)
    if meta.get("n_candidates") != data.n_candidates or meta.get("fingerprint") != data_fingerprint(data):
        raise ModelMismatchError(f"{models_dir}: content lists were built on other serving data")

    def npy(name: str) -> np.ndarray:
        return np.load(io.BytesIO(storage.read_bytes(storage.join(models_dir, CONTENT_DIR, name))),
                       allow_pickle=False)

    ids = [str(e) for e in meta["entities"]]
    return ContentLists(int(meta["k"]), npy("top_idx.npy"), npy("top_scores.npy"), {e: i for i, e in enumerate(ids)})


@register_retriever("content")
def load_content(models_dir: str, data: ServingData) -> Retriever:
    return ContentRetriever(data, lists=load_lists(models_dir, data))
