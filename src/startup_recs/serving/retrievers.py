"""Retrievers: score every candidate of :class:`ServingData` for a batch of entities.

A :class:`Retriever` maps entity ids to ``float32 [n, n_c]`` scores over
``ServingData.candidate_ids`` (the same column order for every retriever, so routing, ranking
and evaluation can mix them). The embedding-based ones (two-tower, ALS, and later item-to-item
factorizations) share :class:`EmbeddingRetriever`: an entity vector times the candidate matrix,
held in a pluggable :class:`~startup_recs.serving.index.CandidateIndex`.

:func:`load_retrievers` builds every retriever whose artifacts exist in a models folder. New
retrievers (item2item, in its own module) plug in with :func:`register_retriever`; a loader returns
``None`` when its files are absent, and routing simply skips it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import ModelMismatchError
from startup_recs.models.als import ALSModel
from startup_recs.serving import ann
from startup_recs.serving.data import ServingData
from startup_recs.serving.index import CandidateIndex, build_index, top_k

log = logging.getLogger(__name__)


class Retriever(ABC):
    """Scores all candidates of ``data`` for entities; a retriever that does not know an entity
    gives it a row of zeros (no signal) rather than failing, so batch scoring never breaks."""

    name: str = "retriever"

    def __init__(self, data: ServingData) -> None:
        self.data = data

    @abstractmethod
    def knows(self, entity_id: str) -> bool:
        """Whether this retriever has a real signal for the entity (routing asks this)."""

    @abstractmethod
    def score(self, entity_ids: Sequence[str]) -> np.ndarray:
        """``float32 [len(entity_ids), n_c]`` scores over ``data.candidate_ids``."""

    def score_at(self, entity_id: str, cand_idx: np.ndarray) -> np.ndarray:
        """Scores of chosen candidates only (``float32 [m]``); subclasses make this cheaper."""
        return self.score([entity_id])[0, np.asarray(cand_idx, dtype=np.int64)]

    def top(self, entity_ids: Sequence[str], n: int, *, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` candidate indices and scores per entity, excluding seen candidates and self."""
        excl = self.data.exclusion_lists(entity_ids) if exclude_seen else None
        return top_k(self.score(entity_ids), n, excl)

    @property
    def info(self) -> dict:
        return {"name": self.name}


class EmbeddingRetriever(Retriever):
    """``score = entity_vector @ candidate_matrix.T`` (dot product; cosine if both normalised).

    Args:
        entity_ids / entity_vectors: known entities and their ``[n_e, d]`` vectors.
        candidate_vectors: ``[n_c, d]`` aligned with ``data.candidate_ids`` (rows of candidates
            the model never saw are zeros: score 0).
        encode_entities: optional fallback ``ids -> [n, d]`` (rows of zeros where impossible)
            for entities outside ``entity_ids``, e.g. the two-tower's feature-only tower.
        can_encode: which unknown entities the fallback really covers.
        index: a prebuilt index over ``candidate_vectors`` (the bundle's ANN index,
            :func:`startup_recs.serving.ann.load`); default: ``build_index(candidate_vectors, index_kind)``.
    """

    def __init__(
        self,
        name: str,
        data: ServingData,
        entity_ids: Sequence[str],
        entity_vectors: np.ndarray,
        candidate_vectors: np.ndarray,
        *,
        encode_entities: Callable[[list[str]], np.ndarray] | None = None,
        can_encode: Callable[[str], bool] | None = None,
        index_kind: str = "exact",
        index: CandidateIndex | None = None,
        meta: dict | None = None,
    ) -> None:
        super().__init__(data)
        self.name = name
        self.entity_index = {str(e): i for i, e in enumerate(entity_ids)}
        self.entity_vectors = np.ascontiguousarray(entity_vectors, dtype=np.float32)
        if candidate_vectors.shape[0] != data.n_candidates:
            raise ModelMismatchError(
                f"{name}: {candidate_vectors.shape[0]} candidate vectors for {data.n_candidates} candidates"
            )
        if self.entity_vectors.shape[1] != candidate_vectors.shape[1]:
            raise ModelMismatchError(
                f"{name}: entity dim {self.entity_vectors.shape[1]} != candidate dim {candidate_vectors.shape[1]}"
            )
        if index is not None and (index.size != candidate_vectors.shape[0] or index.dim != candidate_vectors.shape[1]):
            raise ModelMismatchError(f"{name}: index over {index.size} x {index.dim} for "
                                     f"{candidate_vectors.shape[0]} x {candidate_vectors.shape[1]} candidate vectors")
        self.index: CandidateIndex = index if index is not None else build_index(candidate_vectors, index_kind)
        self._encode = encode_entities
        self._can_encode = can_encode
        self.meta = meta or {}

    @property
    def dim(self) -> int:
        return self.entity_vectors.shape[1]

    def knows(self, entity_id: str) -> bool:
        if entity_id in self.entity_index:
            return True
        return bool(self._can_encode is not None and self._can_encode(entity_id))

    def vectors(self, entity_ids: Sequence[str]) -> np.ndarray:
        """Entity vectors ``float32 [n, d]``: stored rows, the fallback encoder, else zeros."""
        out = np.zeros((len(entity_ids), self.dim), dtype=np.float32)
        unknown: list[int] = []
        for r, e in enumerate(entity_ids):
            i = self.entity_index.get(e)
            if i is None:
                unknown.append(r)
            else:
                out[r] = self.entity_vectors[i]
        if unknown and self._encode is not None:
            todo = [r for r in unknown if self._can_encode is None or self._can_encode(entity_ids[r])]
            if todo:
                out[todo] = self._encode([entity_ids[r] for r in todo])
        return out

    def score(self, entity_ids: Sequence[str]) -> np.ndarray:
        return self.index.scores(self.vectors(entity_ids))

    def score_at(self, entity_id: str, cand_idx: np.ndarray) -> np.ndarray:
        return self.index.scores_at(self.vectors([entity_id]), cand_idx)[0]

    def top(self, entity_ids: Sequence[str], n: int, *, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        excl = self.data.exclusion_lists(entity_ids) if exclude_seen else None
        return self.index.search(self.vectors(entity_ids), n, excl)

    @property
    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim, "entities": len(self.entity_index), **self.meta}


class PopularityRetriever(Retriever):
    """Fit-window popularity, the same for every entity: ``log1p(summed event weights)``."""

    name = "popularity"

    def __init__(self, data: ServingData) -> None:
        super().__init__(data)
        self._scores = np.log1p(np.maximum(data.popularity, 0)).astype(np.float32)

    def knows(self, entity_id: str) -> bool:
        return True

    def score(self, entity_ids: Sequence[str]) -> np.ndarray:
        return np.broadcast_to(self._scores, (len(entity_ids), self._scores.shape[0])).copy()

    def score_at(self, entity_id: str, cand_idx: np.ndarray) -> np.ndarray:
        return self._scores[np.asarray(cand_idx, dtype=np.int64)]


def align_rows(model_ids: Sequence[str], vectors: np.ndarray, data: ServingData) -> tuple[np.ndarray, np.ndarray]:
    """Re-order a model's candidate rows into ``data.candidate_ids`` order.

    Returns ``(matrix float32 [n_c, d], present bool [n_c])``; candidates the model lacks get
    zero rows and ``present=False``.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(model_ids) != vectors.shape[0]:
        raise ModelMismatchError(f"{len(model_ids)} ids for {vectors.shape[0]} vectors")
    pos = data.candidate_positions([str(c) for c in model_ids])
    out = np.zeros((data.n_candidates, vectors.shape[1]), dtype=np.float32)
    ok = pos >= 0
    out[pos[ok]] = vectors[ok]
    present = np.zeros(data.n_candidates, dtype=bool)
    present[pos[ok]] = True
    return out, present


def _check_use_case(name: str, config: dict, data: ServingData) -> None:
    uc = config.get("use_case")
    if uc is not None and uc != data.use_case:
        raise ModelMismatchError(f"{name} was trained for use case {uc!r}, the data is {data.use_case!r}")


# --- registry ------------------------------------------------------------------------------------
RetrieverLoader = Callable[[str, ServingData], "Retriever | None"]
_LOADERS: dict[str, RetrieverLoader] = {}


def register_retriever(name: str) -> Callable[[RetrieverLoader], RetrieverLoader]:
    """Decorator: ``@register_retriever("item2item") def load(models_dir, data) -> Retriever | None``."""

    def deco(fn: RetrieverLoader) -> RetrieverLoader:
        _LOADERS[name] = fn
        return fn

    return deco


def registered_retrievers() -> list[str]:
    return list(_LOADERS)


def load_retrievers(
    models_dir: str, data: ServingData, names: Sequence[str] | None = None
) -> dict[str, Retriever]:
    """Every registered retriever whose artifacts are in ``models_dir`` (``content`` and
    ``popularity`` always load). Raises :class:`ModelMismatchError` for a model of another use
    case or dimension."""
    _ensure_builtin_plugins()
    out: dict[str, Retriever] = {}
    for name in names or list(_LOADERS):
        if name not in _LOADERS:
            continue
        r = _LOADERS[name](models_dir, data)
        if r is not None:
            out[name] = r
            log.info("retriever %s loaded (%s)", name, r.info)
    return out


@register_retriever("two_tower")
def load_two_tower(models_dir: str, data: ServingData) -> Retriever | None:
    """Precomputed two-tower embeddings; the model itself (when loadable) encodes unknown ids
    from their features (new profiles created after training)."""
    from startup_recs.models.two_tower import load_embeddings

    cand_side = load_embeddings(models_dir, data.use_case, "candidate")
    if cand_side is None:
        return None
    cfg_uri = storage.join(models_dir, artifacts.two_tower_files(data.use_case).config)
    config = storage.read_json(cfg_uri) if storage.exists(cfg_uri) else {}
    _check_use_case("two_tower", config, data)
    cand_ids, cand = cand_side
    cand_mat, present = align_rows(cand_ids, cand, data)
    ent_ids: list[str] = []
    ent = np.zeros((0, cand.shape[1]), np.float32)
    ent_side = load_embeddings(models_dir, data.use_case, "entity")
    if ent_side is not None:
        ent_ids, ent = ent_side

    model = None
    try:
        from startup_recs.models.two_tower import TwoTowerModel

        model = TwoTowerModel.from_dir(models_dir, data.use_case)
    except Exception as exc:  # noqa: BLE001 - embeddings alone still serve known ids
        log.warning("two_tower: model not loadable (%s); unknown ids get no two-tower score", exc)

    encode = can_encode = None
    if model is not None:
        if not present.all() and data.candidate_features is not None:
            missing = data.candidate_ids[~present].tolist()
            try:
                cand_mat[~present] = np.asarray(
                    model.encode_candidates(missing, data.candidate_features.loc[missing]), np.float32)
            except Exception as exc:  # noqa: BLE001
                log.warning("two_tower: cannot encode %d new candidates (%s)", len(missing), exc)
        feats = data.entity_features

        def can_encode(e: str) -> bool:
            return feats is not None and e in feats.index

        def encode(ids: list[str]) -> np.ndarray:
            return np.asarray(model.encode_entities(ids, feats.loc[ids]), np.float32)

    index = ann.load(models_dir, "two_tower", cand_mat)  # the bundle's ANN index, if it has one
    return EmbeddingRetriever("two_tower", data, ent_ids, ent, cand_mat, encode_entities=encode,
                              can_encode=can_encode, index=index,
                              meta={"model": model is not None, "index": _index_label(index)})


@register_retriever("als")
def load_als(models_dir: str, data: ServingData) -> Retriever | None:
    """Implicit-ALS factors: entity (user-side) factors x candidate (item-side) factors."""
    name = artifacts.als_files(data.use_case).stem
    if not ALSModel.exists(models_dir, name):
        return None
    model = ALSModel.load(models_dir, name)
    config = model.config
    _check_use_case("als", config, data)
    cand_mat, _ = align_rows(model.item_ids, model.item_factors, data)
    index = ann.load(models_dir, "als", cand_mat)  # the bundle's ANN index, if it has one
    return EmbeddingRetriever("als", data, model.user_ids, model.user_factors, cand_mat, index=index,
                              meta={**{k: config[k] for k in ("factors", "alpha", "regularization") if k in config},
                                    "index": _index_label(index)})


def _index_label(index: CandidateIndex | None) -> str:
    """``exact`` or the ANN kind and search breadth, for the load log and ``info``."""
    info = getattr(index, "info", None)
    return "exact" if info is None else f"{info.kind} {info.search}"


@register_retriever("popularity")
def load_popularity(models_dir: str, data: ServingData) -> Retriever | None:
    return PopularityRetriever(data)


_PLUGINS = ("startup_recs.serving.content", "startup_recs.serving.item2item")


def _ensure_builtin_plugins() -> None:
    """Import the modules that register retrievers themselves (content, item2item)."""
    import importlib

    for mod in _PLUGINS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
