"""Every artifact file name the platform writes or reads, and the legacy naming rule.

The names are a public contract (published bundles, the legacy scripts, docs/contracts.md):
nothing here may change a name. Model files follow ``{family}{sfx}_v1_<part>`` where ``{sfx}``
is :attr:`UseCase.suffix` (``"_reverse"`` for reverse use cases, ``""`` for forward ones), e.g.
``two_tower_reverse_v1_best.pth``, ``als_v1_item_factors.npy``; dataset files drop the version
(``two_tower_reverse.parquet``, ``als_interactions_reverse.npz``).

Each model family gets a small frozen dataclass of its file names (``two_tower_files``,
``als_files``, ``item2item_files``, ``ranker_files``, ``als_dataset_files``); folder-level files
(serving data, routing, bundle manifest, evaluation outputs) are module constants. All functions
are pure: names only, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from startup_recs.core.usecases import UseCase, get_use_case

VERSION = "v1"

# --- model families ------------------------------------------------------------------------------
TWO_TOWER = "two_tower"
ALS = "als"
ITEM2ITEM = "item2item"
RANKER = "ranker"

# --- name parts shared by several families (also used to recognise files in a folder) ------------
CONFIG_SUFFIX = "_config.json"
HISTORY_SUFFIX = "_history.json"
META_SUFFIX = "_meta.json"
USER_MAPPING_SUFFIX = "_user_mapping.json"
ITEM_MAPPING_SUFFIX = "_item_mapping.json"

# --- dataset sidecars: ``X.parquet`` -> ``X_<name>`` (see :func:`sidecar`) -------------------------
ENTITIES_SIDECAR = "entities.parquet"
CANDIDATES_SIDECAR = "candidates.parquet"
VOCAB_SIDECAR = "vocab.json"
META_SIDECAR = "meta.json"
PROPENSITY_SIDECAR = "propensity.json"
DATASET_EXTENSIONS = (".parquet", ".csv")

# --- serving data folder (``<models>/serving/``, :class:`startup_recs.serving.data.ServingData`) ---
SERVING_DIR = "serving"
SERVING_META = "serving_data.json"
SERVING_CANDIDATES = "candidates.parquet"
SERVING_ENTITIES = "entities.parquet"
SERVING_SEEN = "seen.parquet"
SERVING_EXCLUDED = "excluded.parquet"  # the pairs never recommended again (already contacted)
ENTITY_FEATURES = "entity_features"
CANDIDATE_FEATURES = "candidate_features"

# --- models folder, bundle, evaluation and tuning outputs ----------------------------------------
ROUTING = "routing.json"
REFIT = "refit.json"  # the published refit's record: fit_until, the choices it reused (pipeline/refit_steps)
MANIFEST = "manifest.json"
LATEST = "latest"
METRICS = "metrics.json"
REPORT = "report.md"
TRAINING_CURVES_PLOT = "training_curves.png"
BEST_PARAMS = "best_params.json"
TRIALS = "trials.csv"
TUNING_DIR = "tuning"
TUNING_REPORT = "tuning.md"
EXTRACT_STATS = "extract_stats.json"

UseCaseLike = str | UseCase


def _uc(use_case: UseCaseLike) -> UseCase:
    return use_case if isinstance(use_case, UseCase) else get_use_case(use_case)


def suffix(use_case: UseCaseLike) -> str:
    """``"_reverse"`` for reverse use cases, ``""`` for forward ones."""
    return _uc(use_case).suffix


def dataset_stem(family: str, use_case: UseCaseLike) -> str:
    """Unversioned legacy name: ``dataset_stem("two_tower", "startup_developer") -> "two_tower_reverse"``."""
    return f"{family}{suffix(use_case)}"


def model_stem(family: str, use_case: UseCaseLike) -> str:
    """Versioned model name: ``model_stem("als", "startup_developer") -> "als_reverse_v1"``."""
    return f"{dataset_stem(family, use_case)}_{VERSION}"


class _Files:
    """Mixin: the file-name fields of a dataclass as a ``{field: name}`` dict, in field order."""

    def as_dict(self) -> dict[str, str]:
        """``{part: file name}`` for every file (the ``stem`` field is not a file)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stem"}  # type: ignore[arg-type]

    def names(self) -> tuple[str, ...]:
        """Every file name, in field order."""
        return tuple(self.as_dict().values())


# --- two-tower -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TwoTowerFiles(_Files):
    """``two_tower{sfx}_v1_*``: weights, encoder, history, precomputed embeddings, config (last)."""

    stem: str
    best: str
    latest: str
    config: str
    encoder: str
    history: str
    candidate_embeddings: str
    candidate_ids: str
    entity_embeddings: str
    entity_ids: str


def two_tower_files(use_case: UseCaseLike) -> TwoTowerFiles:
    """File names of one use case's two-tower model (``as_dict()`` is its config's ``"files"``)."""
    s = model_stem(TWO_TOWER, use_case)
    return TwoTowerFiles(
        stem=s, best=f"{s}_best.pth", latest=f"{s}_latest.pth", config=f"{s}{CONFIG_SUFFIX}",
        encoder=f"{s}_encoder.json", history=f"{s}{HISTORY_SUFFIX}",
        candidate_embeddings=f"{s}_candidate_embeddings.npy", candidate_ids=f"{s}_candidate_ids.json",
        entity_embeddings=f"{s}_entity_embeddings.npy", entity_ids=f"{s}_entity_ids.json",
    )


# --- ALS -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ALSFiles(_Files):
    """``<stem>_*`` of a fitted ALS model (stem ``als{sfx}_v1`` unless ``--model-name`` says)."""

    stem: str
    user_factors: str
    item_factors: str
    user_mapping: str
    item_mapping: str
    config: str

    def data_files(self) -> dict[str, str]:
        """The four files the config's ``"files"`` lists (everything but the config itself)."""
        return {k: v for k, v in self.as_dict().items() if k != "config"}


def als_files_named(stem: str) -> ALSFiles:
    """ALS file names under an explicit model name (``recs train als --model-name``)."""
    return ALSFiles(stem=stem, user_factors=f"{stem}_user_factors.npy", item_factors=f"{stem}_item_factors.npy",
                    user_mapping=f"{stem}{USER_MAPPING_SUFFIX}", item_mapping=f"{stem}{ITEM_MAPPING_SUFFIX}",
                    config=f"{stem}{CONFIG_SUFFIX}")


def als_files(use_case: UseCaseLike) -> ALSFiles:
    """``als{sfx}_v1_{user,item}_factors.npy``, ``_{user,item}_mapping.json``, ``_config.json``."""
    return als_files_named(model_stem(ALS, use_case))


@dataclass(frozen=True)
class ALSDatasetFiles(_Files):
    """The ALS dataset (``recs dataset als``), shared by ALS and item2item training."""

    matrix: str
    user_mapping: str
    item_mapping: str
    meta: str

    @classmethod
    def for_suffix(cls, sfx: str) -> ALSDatasetFiles:
        """The names for a use-case suffix (``"_reverse"`` or ``""``)."""
        return cls(matrix=f"als_interactions{sfx}.npz", user_mapping=f"{ALS}{sfx}{USER_MAPPING_SUFFIX}",
                   item_mapping=f"{ALS}{sfx}{ITEM_MAPPING_SUFFIX}", meta=f"{ALS}{sfx}{META_SUFFIX}")


def als_dataset_files(use_case: UseCaseLike) -> ALSDatasetFiles:
    """``als_interactions{sfx}.npz``, ``als{sfx}_{user,item}_mapping.json``, ``als{sfx}_meta.json``."""
    return ALSDatasetFiles.for_suffix(suffix(use_case))


def is_als_dataset_meta(name: str) -> bool:
    """Whether a file name in a dataset folder is an ALS dataset's ``als{sfx}_meta.json``."""
    return name.startswith(ALS) and name.endswith(META_SUFFIX)


# --- item-to-item ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item2ItemFiles(_Files):
    """``<stem>_*``: config, candidate mapping, and EASE ``weights`` or kNN ``similarity``."""

    stem: str
    config: str
    item_mapping: str
    weights: str
    similarity: str


def item2item_files_named(stem: str) -> Item2ItemFiles:
    """Item-to-item file names under an explicit model name."""
    return Item2ItemFiles(stem=stem, config=f"{stem}{CONFIG_SUFFIX}", item_mapping=f"{stem}{ITEM_MAPPING_SUFFIX}",
                          weights=f"{stem}_weights.npy", similarity=f"{stem}_similarity.npz")


def item2item_files(use_case: UseCaseLike) -> Item2ItemFiles:
    """``item2item{sfx}_v1_config.json``, ``_item_mapping.json``, ``_weights.npy`` | ``_similarity.npz``."""
    return item2item_files_named(model_stem(ITEM2ITEM, use_case))


# --- ranker ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RankerFiles(_Files):
    """``ranker{sfx}_v1.pth`` (final), ``_best.pth`` (MLP weights), ``_booster.txt`` (LightGBM
    text model), ``_config.json`` (names the learner, so only one of the weight kinds is written)."""

    stem: str
    final: str
    best: str
    booster: str
    config: str


def ranker_files(use_case: UseCaseLike) -> RankerFiles:
    """File names of one use case's ranker (``as_dict()`` is its config's ``"files"``)."""
    s = model_stem(RANKER, use_case)
    return RankerFiles(stem=s, final=f"{s}.pth", best=f"{s}_best.pth", booster=f"{s}_booster.txt",
                       config=f"{s}{CONFIG_SUFFIX}")


# --- datasets --------------------------------------------------------------------------------------
def two_tower_dataset(use_case: UseCaseLike) -> str:
    """The pipeline's two-tower dataset file: ``two_tower{sfx}.parquet``."""
    return f"{dataset_stem(TWO_TOWER, use_case)}.parquet"


def ranker_dataset(use_case: UseCaseLike) -> str:
    """The pipeline's ranker dataset file: ``ranker{sfx}.parquet``."""
    return f"{dataset_stem(RANKER, use_case)}.parquet"


def sidecar(output: str, name: str) -> str:
    """``X.parquet`` / ``X.csv`` -> ``X_<name>`` (``X_entities.parquet``, ``X_meta.json`` ...)."""
    stem = str(output)
    for ext in DATASET_EXTENSIONS:
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    return f"{stem}_{name}"


# --- serving data and evaluation -------------------------------------------------------------------
def serving_feature_table(name: str) -> str:
    """``entity_features`` / ``candidate_features`` -> its Parquet file name in the serving folder."""
    return f"{name}.parquet"


def ndcg_plot(k: int) -> str:
    """The evaluation plot of NDCG@``k`` per model and segment: ``ndcg_at_<k>.png``."""
    return f"ndcg_at_{k}.png"
