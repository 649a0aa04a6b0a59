"""What the ranker trains on, checked for leaks: the dataset's validation rows, the stage-1
serving data and retrievers, the validation window's positive events, and the routing.

What: :func:`training_lists` (shared by :func:`startup_recs.train.ranker.train` and the tuner)
reads the ranker dataset (``REQUIRED_COLUMNS``; only ``split == "val"`` rows), loads the stage-1
serving data (:func:`load_stage1`) and retrievers, refuses any that saw the validation window
(:func:`check_fit_window`), adds the window's positive events (:func:`val_positive_events`, the
definition of :func:`startup_recs.data.snapshot.positive_events` that the evaluation uses too),
picks the routing serving will use and builds the lists
(:func:`startup_recs.train.ranker_lists.make_lists`). Times are UTC ``pandas.Timestamp``.

Why (docs/contracts.md "Fitting windows"): the ranker learns from retrieval scores, so those
scores must come from retrievers fit strictly before the validation start; a retrieval score
never sees the label it is asked to predict.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pandas as pd

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import ConfigError, DataError
from startup_recs.serving.data import ServingData
from startup_recs.train.ranker_lists import ListData, make_lists

if TYPE_CHECKING:
    from startup_recs.train.ranker import RankerTrainConfig

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("entity_id", "candidate_id", "label", "weight", "split")
TIME_KEYS = ("fit_until", "until", "data_until", "train_until", "cutoff")
WINDOW_KEYS = ("fit_on", "fit_window")
STAGE1_WINDOWS = ("train",)


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _leaks(obj: Any, val_start: pd.Timestamp) -> str | None:
    """The first recorded fit window of a (nested) config that reaches past ``val_start``, described.

    A recorded fit end (:data:`TIME_KEYS`) after ``val_start`` leaks. A window *name* other than
    ``train`` (:data:`WINDOW_KEYS`) leaks unless the same config also records a fit end, all of
    them ``<= val_start``: the time is the authority. So the final retrievers (``trainval``, fit
    until ``split_at``) are valid features for a ranker that learns on the window after
    ``split_at`` (the published refit, :mod:`startup_recs.pipeline.refit_steps`), never for one
    that learns on validation.
    """
    times: list[tuple[str, pd.Timestamp]] = []
    windows: list[tuple[str, str]] = []
    _recorded(obj, "", times, windows)
    late = next((f"{p} = {t.isoformat()}" for p, t in times if t > val_start), None)
    if late:
        return late
    if windows and not times:
        return next((f"{p} = {w!r}" for p, w in windows), None)
    return None


def _recorded(obj: Any, path: str, times: list[tuple[str, pd.Timestamp]], windows: list[tuple[str, str]]) -> None:
    """Collect every fit end (parsed) and every non-``train`` window name under ``obj``."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, val in items:
        here = (f"{path}.{key}" if path else str(key)) if isinstance(obj, dict) else f"{path}[{key}]"
        if isinstance(obj, dict) and key in TIME_KEYS and isinstance(val, str) and val:
            try:
                times.append((here, _utc(val)))
            except (ValueError, TypeError):
                continue
        elif isinstance(obj, dict) and key in WINDOW_KEYS and isinstance(val, str) and val not in STAGE1_WINDOWS:
            windows.append((here, val))
        elif isinstance(val, dict | list):
            _recorded(val, here, times, windows)


def check_fit_window(data: ServingData, val_start: Any, retrievers_dir: str | None = None) -> None:
    """Refuse retrieval inputs that saw the validation window the ranker learns from.

    ``data.until`` (the serving data's fit-window end) must be ``<= val_start`` (``None``, "all
    events", is refused). In ``retrievers_dir``, every JSON config (and ``serving/``) that records
    a fit window must record one inside the train window: every time under :data:`TIME_KEYS`
    ``<= val_start``, and a window name under :data:`WINDOW_KEYS` equal to ``train`` unless a
    fit end is recorded too (the two-tower writes ``fit_on`` and ``data.fit_until``, the ALS
    dataset ``fit_window``/``cutoff``). Raises :class:`DataError`.
    """
    val_start = _utc(val_start)
    if data.until is None or data.until > val_start:
        raise DataError(
            f"ranker features would leak: the stage-1 serving data runs until {data.until}, past the "
            f"validation start {val_start.isoformat()}; use retrievers fit on the train window"
        )
    if retrievers_dir is None or not storage.exists(retrievers_dir):
        return
    for rel in storage.walk_files(retrievers_dir):
        if not rel.endswith(".json") or ("/" in rel and not rel.startswith(f"{artifacts.SERVING_DIR}/")):
            continue
        if rel.rsplit("/", 1)[-1].startswith(artifacts.RANKER):
            continue  # our own output from an earlier run
        try:
            obj = storage.read_json(storage.join(retrievers_dir, rel))
        except Exception:  # noqa: BLE001 - a JSON that does not parse records no window
            continue
        found = _leaks(obj, val_start)
        if found:
            raise DataError(
                f"ranker features would leak: {rel} records {found}, beyond the validation start "
                f"{val_start.isoformat()}; the ranker needs stage-1 retrievers fit on the train window"
            )
        _check_cf_ids(rel, obj, data)


def _check_cf_ids(rel: str, obj: Any, data: ServingData) -> None:
    """A collaborative model's id mappings (ALS ``*_user_mapping.json`` / ``*_item_mapping.json``)
    hold only ids with events in its fit window, so an id without any event before ``data.until``
    means the model saw later events (its config may not record its window). Feature-based models
    (the two-tower encodes every profile) are not checked this way."""
    name = rel.rsplit("/", 1)[-1]
    if not (name.startswith(artifacts.ALS) and isinstance(obj, dict)):
        return
    if name.endswith(artifacts.USER_MAPPING_SUFFIX):
        later = [e for e in obj if str(e) not in data.entity_counts]
        side = "entities"
    elif name.endswith(artifacts.ITEM_MAPPING_SUFFIX):
        active = set(data.candidate_ids[data.popularity > 0].tolist())
        later = [c for c in obj if str(c) not in active]
        side = "candidates"
    else:
        return
    if later:
        raise DataError(
            f"ranker features would leak: {rel} knows {len(later)} {side} without any event before "
            f"{data.until.isoformat() if data.until is not None else '?'} (e.g. {later[0]!r}); it was fit past "
            "the validation start"
        )


def dataset_sidecar(data_uri: str) -> dict[str, Any]:
    """The dataset's ``X_meta.json`` merged over ``X_propensity.json`` (``{}`` when absent)."""
    stem = data_uri.rsplit(".", 1)[0]
    out: dict[str, Any] = {}
    for side in (f"{stem}_{artifacts.PROPENSITY_SIDECAR}", f"{stem}_{artifacts.META_SIDECAR}"):
        if storage.exists(side):
            obj = storage.read_json(side)
            if isinstance(obj, dict):
                out.update(obj)
    return out


def dataset_split_at(rows: pd.DataFrame, data_uri: str) -> pd.Timestamp:
    """End of the validation window: the recorded split, else the first test row's time."""
    split = dataset_sidecar(data_uri).get("split")
    if isinstance(split, dict) and split.get("split_at"):
        return _utc(split["split_at"])
    test = pd.to_datetime(rows.loc[rows["split"] == "test", "ts"], utc=True)
    return test.min() if len(test) else pd.Timestamp.max.tz_localize("UTC")


def val_positive_events(snapshot: str | None, use_case: str, val_start: pd.Timestamp,
                        split_at: pd.Timestamp) -> pd.DataFrame | None:
    """``entity_id, candidate_id`` of the use case's positive events in ``[val_start, split_at)``
    (:func:`startup_recs.data.snapshot.positive_events`, the ranker dataset's and the evaluation's
    definition), or ``None`` without a snapshot. These are *labels* of the window the ranker learns from, never features."""
    from startup_recs.data.snapshot import load_snapshot, positive_events

    if not snapshot or not storage.exists(snapshot):
        log.warning("ranker: snapshot %r not reachable; learning from the dataset's positives only "
                    "(pass --snapshot)", snapshot)
        return None
    snap = load_snapshot(snapshot)
    ev = snap.events(use_case)
    ts = pd.to_datetime(ev["ts"], utc=True)
    kinds = positive_events(use_case, ev["event"].astype(str).unique(), snap.source == "events")
    mask = (ts >= val_start) & (ts < split_at) & ev["event"].astype(str).isin(kinds)
    out = ev.loc[mask, ["entity_id", "candidate_id"]].astype(str).drop_duplicates()
    log.info("ranker: %d validation-window positive pairs from %s", len(out), snapshot)
    return out


def val_graded_events(snapshot: str | None, use_case: str, val_start: pd.Timestamp, split_at: pd.Timestamp,
                      grades: dict[str, int], positive_grade: int) -> pd.DataFrame | None:
    """``entity_id, candidate_id, grade`` of the window ``[val_start, split_at)``: the highest grade
    of each pair's events (the use case's positive events, :func:`startup_recs.data.snapshot.positive_events`,
    are ``positive_grade``; other events as ``grades`` says, unlisted ones 0 and dropped).
    Labels of the window the ranker learns from, never features; ``None`` without a snapshot."""
    from startup_recs.data.snapshot import load_snapshot, positive_events

    if not snapshot or not storage.exists(snapshot):
        log.warning("ranker: snapshot %r not reachable; learning from the dataset's positives only "
                    "(pass --snapshot)", snapshot)
        return None
    snap = load_snapshot(snapshot)
    ev = snap.events(use_case)
    ts = pd.to_datetime(ev["ts"], utc=True)
    names = ev["event"].astype(str)
    kinds = set(positive_events(use_case, names.unique(), snap.source == "events"))
    grade = names.map(lambda e: positive_grade if e in kinds else int(grades.get(e, 0))).to_numpy()
    mask = ((ts >= val_start) & (ts < split_at)).to_numpy() & (grade > 0)
    out = pd.DataFrame({"entity_id": ev.loc[mask, "entity_id"].astype(str).to_numpy(),
                        "candidate_id": ev.loc[mask, "candidate_id"].astype(str).to_numpy(), "grade": grade[mask]})
    out = out.groupby(["entity_id", "candidate_id"], as_index=False, sort=True)["grade"].max()
    log.info("ranker: %d graded validation-window pairs (%d positive) from %s", len(out),
             int((out["grade"] >= positive_grade).sum()), snapshot)
    return out


def dataset_val_start(rows: pd.DataFrame, data_uri: str) -> pd.Timestamp:
    """The validation start: the dataset's recorded split, else the earliest val row's time."""
    split = dataset_sidecar(data_uri).get("split")
    if isinstance(split, dict) and split.get("val_start"):
        return _utc(split["val_start"])
    return pd.to_datetime(rows.loc[rows["split"] == "val", "ts"], utc=True).min()


def load_stage1(retrievers_dir: str, use_case: str, *, serving_data: str | None = None,
                snapshot: str | None = None, until: pd.Timestamp | None = None) -> ServingData:
    """Stage-1 serving data: ``serving_data`` folder, else ``<retrievers_dir>/serving``, else
    built from ``snapshot`` up to ``until`` (the validation start)."""
    for uri in (serving_data, storage.join(retrievers_dir, artifacts.SERVING_DIR)):
        if uri and storage.exists(storage.join(uri, artifacts.SERVING_META)):
            data = ServingData.load(uri)
            if data.use_case != use_case:
                from startup_recs.core.errors import ModelMismatchError

                raise ModelMismatchError(f"serving data {uri} is for {data.use_case!r}, not {use_case!r}")
            return data
    if snapshot:
        log.info("ranker: stage-1 serving data from %s, events before %s", snapshot, until)
        return ServingData.from_snapshot(snapshot, use_case, until)
    raise ConfigError(
        f"no stage-1 serving data: none at {retrievers_dir}/serving, and no snapshot recorded in the "
        "dataset's meta; pass --serving-data DIR or --snapshot DIR"
    )


def _validation_routing(retrievers_dir: str, use_case: str, snapshot: str | None, val_start: pd.Timestamp,
                        split_at: pd.Timestamp) -> Any:
    """The routing serving will use: each segment's retriever chosen on validation with these
    stage-1 models (:func:`startup_recs.evaluation.routing.choose_routing`, deterministic, so the
    evaluation picks the same),
    so the ranker trains on the very pools it will re-rank. Falls back to ``routing.json`` in
    ``retrievers_dir`` (or the defaults) without a readable snapshot."""
    from startup_recs.serving.router import Routing

    saved = Routing.load(retrievers_dir)
    if saved.chosen_on == "validation" or not snapshot or not storage.exists(snapshot):
        return saved
    from startup_recs.data.snapshot import load_snapshot
    from startup_recs.data.split import TimeSplit
    from startup_recs.evaluation.protocol import DEFAULT_K
    from startup_recs.evaluation.routing import choose_routing

    snap = load_snapshot(snapshot)
    try:
        routing, _ = choose_routing(snap.events(use_case), snap, use_case, TimeSplit(val_start, split_at),
                                    retrievers_dir, list(DEFAULT_K))
    except DataError as exc:
        log.warning("ranker: routing not chosen on validation (%s); default chains", exc)
        return saved
    return routing


def training_lists(cfg: RankerTrainConfig, data_uri: str, retrievers_dir: str, *,
                   serving_data: str | None = None, snapshot: str | None = None) -> tuple[ListData, dict[str, Any]]:
    """Everything before the fit (shared by :func:`startup_recs.train.ranker.train` and the tuner): read the dataset's
    validation rows, load and leak-check the stage-1 serving data and retrievers, and build the
    lists. Returns ``(lists, provenance)``."""
    from startup_recs.serving.retrievers import load_retrievers

    rows = storage.read_table(data_uri).to_pandas()
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing:
        raise DataError(f"{data_uri}: not a ranker dataset (missing column(s) {missing})")
    val = rows[rows["split"] == "val"]
    if val.empty:
        raise DataError(f"{data_uri}: empty validation set (the ranker learns from split == 'val' rows)")
    val_start = dataset_val_start(rows, data_uri)
    snapshot = snapshot or dataset_sidecar(data_uri).get("snapshot")
    data = load_stage1(retrievers_dir, cfg.use_case, serving_data=serving_data, snapshot=snapshot, until=val_start)
    check_fit_window(data, val_start, retrievers_dir)
    retrievers = load_retrievers(retrievers_dir, data)
    used = [n for n in cfg.retrievers if n in retrievers]
    log.info("ranker: %d val rows, %d entities; stage-1 retrievers %s (fit until %s)", len(val),
             val["entity_id"].nunique(), used or "none", data.until)
    extra = None
    if cfg.lists == "pool":
        extra = val_graded_events(snapshot, cfg.use_case, val_start, dataset_split_at(rows, data_uri),
                                  cfg.grades, cfg.positive_grade)
    elif cfg.positives == "both":
        extra = val_positive_events(snapshot, cfg.use_case, val_start, dataset_split_at(rows, data_uri))
    routing = _validation_routing(retrievers_dir, cfg.use_case, snapshot, val_start, dataset_split_at(rows, data_uri))
    lists = make_lists(val, data, retrievers, cfg, extra, routing)
    info = {"data": data_uri, "retrievers_dir": retrievers_dir, "retrievers_used": used,
            "routing": routing.to_dict() if hasattr(routing, "to_dict") else None,
            "val_start": pd.Timestamp(val_start).isoformat(),
            "features_fit_until": data.until.isoformat() if data.until is not None else None}
    return lists, info
