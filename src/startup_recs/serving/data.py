"""ServingData: everything serving and evaluation need besides the model weights.

One object holds the shared candidate space (``candidate_ids``; every retriever scores over it,
in this order), the feature tables, and the statistics of the *fit window* (events with
``ts < until``): candidate popularity and recency, the training interaction count of every entity
(which picks its routing segment), the candidates each entity interacted with (its history, which
item-to-item scoring reads) and those it already *contacted* (a positive event of the use case:
excluded from its answers, and from the evaluation's rankings and relevant items; a plain view
does not exclude, :func:`startup_recs.data.snapshot.exclusion_events`). Events at or after
``until`` never enter it, so evaluation on the test window cannot leak through popularity, counts
or exclusions.

Saved as plain files (no pickle) in one folder, by convention ``<models_dir>/serving/`` (names in
:mod:`startup_recs.core.artifacts`)::

    serving_data.json       use case, until, counts, file list
    candidates.parquet      candidate_id, popularity, recency_days          [n_c rows, index order]
    entities.parquet        entity_id, interaction_count                    [n_e rows]
    seen.parquet            entity_id, candidate_idx                        (long format: every interaction)
    excluded.parquet        entity_id, candidate_idx                        (long format: already contacted)
    entity_features.parquet / candidate_features.parquet   (optional; id column + feature columns)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from startup_recs.core import artifacts, storage
from startup_recs.core.errors import DataError
from startup_recs.core.usecases import get_use_case

FORMAT_VERSION = 1
META_FILE = artifacts.SERVING_META
# Recency of a candidate without any event in the fit window (days); finite so it can be a feature.
NEVER_SEEN_DAYS = 3650.0
_NONE = np.empty(0, dtype=np.int64)  # read-only: an entity with nothing excluded
_NONE.setflags(write=False)


def _as_utc(ts: Any) -> pd.Timestamp | None:
    if ts is None:
        return None
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


@dataclass
class ServingData:
    """Candidate space, features and fit-window statistics of one use case.

    Attributes:
        use_case: use case name (``startup_developer`` ...).
        until: end of the fit window (exclusive, UTC) or ``None`` for "all events".
        candidate_ids: ``np.str_`` array ``[n_c]``; the column order of every retriever's scores.
        popularity: ``float32 [n_c]``, summed event weights per candidate in the fit window.
        recency_days: ``float32 [n_c]``, days from the candidate's last fit-window event to
            ``until`` (:data:`NEVER_SEEN_DAYS` without events).
        entity_counts: entity id -> number of fit-window events (routing segment).
        seen: entity id -> ``int64`` candidate indices it interacted with in the fit window.
        entity_features / candidate_features: DataFrames indexed by id, or ``None`` (id-only log).
            ``candidate_features`` is aligned with ``candidate_ids`` (missing rows are NaN).
        excluded: entity id -> ``int64`` candidate indices never to recommend to it (fit-window
            events in ``exclude_events``); ``None`` = ``seen`` (every interaction excludes: data
            without event names, and serving folders written before the rule).
        exclude_events: the event names ``excluded`` was built from (``None``: every event).
    """

    use_case: str
    until: pd.Timestamp | None
    candidate_ids: np.ndarray
    popularity: np.ndarray
    recency_days: np.ndarray
    entity_counts: dict[str, int]
    seen: dict[str, np.ndarray]
    entity_features: pd.DataFrame | None = None
    candidate_features: pd.DataFrame | None = None
    excluded: dict[str, np.ndarray] | None = None
    exclude_events: tuple[str, ...] | None = None
    candidate_index: dict[str, int] = field(init=False, repr=False)
    _fresh: Callable[[str], tuple[str, ...]] | None = field(default=None, init=False, repr=False)
    _fresh_cache: dict[str, tuple[tuple[str, ...], np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.candidate_ids = np.asarray(self.candidate_ids, dtype=np.str_)
        self.popularity = np.asarray(self.popularity, dtype=np.float32)
        self.recency_days = np.asarray(self.recency_days, dtype=np.float32)
        n_c = len(self.candidate_ids)
        if self.popularity.shape != (n_c,) or self.recency_days.shape != (n_c,):
            raise DataError("ServingData: popularity/recency_days must have one value per candidate")
        self.candidate_index = {c: i for i, c in enumerate(self.candidate_ids.tolist())}
        if len(self.candidate_index) != n_c:
            raise DataError("ServingData: duplicate candidate ids")
        if self.candidate_features is not None:
            self.candidate_features = self.candidate_features.reindex(self.candidate_ids.tolist())
        self.until = _as_utc(self.until)
        if self.excluded is None:
            self.excluded = self.seen

    # --- queries --------------------------------------------------------------------------------
    @property
    def n_candidates(self) -> int:
        return len(self.candidate_ids)

    @property
    def has_features(self) -> bool:
        """True when both feature tables exist (content-based scoring is possible)."""
        return self.entity_features is not None and self.candidate_features is not None

    def knows_entity(self, entity_id: str) -> bool:
        """An entity is known if it has fit-window events or a row in the entity feature table."""
        if entity_id in self.entity_counts:
            return True
        return self.entity_features is not None and entity_id in self.entity_features.index

    def interaction_count(self, entity_id: str) -> int:
        return int(self.entity_counts.get(entity_id, 0))

    def seen_of(self, entity_id: str) -> np.ndarray:
        """Candidate indices the entity already interacted with (``int64 [m]``, maybe empty)."""
        return self.seen.get(entity_id, np.empty(0, dtype=np.int64))

    def excluded_of(self, entity_id: str) -> np.ndarray:
        """Candidate indices the entity already contacted (``int64 [m]``, maybe empty): in the
        fit window, plus since it (:meth:`attach_fresh`) when the server reads fresh ones."""
        done = self.excluded.get(entity_id, _NONE)
        got = self._fresh_entry(entity_id, done)
        return done if got is None else got[2]

    def attach_fresh(self, lookup: Callable[[str], tuple[str, ...]] | None) -> None:
        """Exclude, beside the fit window's, the candidate ids ``lookup(entity_id)`` names (the
        predictor's :class:`~startup_recs.serving.fresh.FreshExclusions`: events after ``until``;
        it returns the same tuple until new events arrive, so the indices are mapped once)."""
        self._fresh, self._fresh_cache = lookup, {}

    def fresh_of(self, entity_id: str) -> np.ndarray:
        """Indices of the candidates excluded since ``until`` only (``int64 [m]``, maybe empty)."""
        got = self._fresh_entry(entity_id, self.excluded.get(entity_id, _NONE))
        return _NONE if got is None else got[1]

    def _fresh_entry(self, entity_id: str, done: np.ndarray) -> tuple[tuple[str, ...], np.ndarray, np.ndarray] | None:
        """``(ids, their indices, done + them)`` of ``entity_id``'s fresh exclusions, cached per
        ids tuple (a request asks once per retriever); ``None`` when it has none."""
        if self._fresh is None:
            return None
        ids = self._fresh(entity_id)
        if not ids:
            return None
        got = self._fresh_cache.get(entity_id)
        if got is None or got[0] is not ids:
            idx = np.asarray(sorted({self.candidate_index[c] for c in ids if c in self.candidate_index}), np.int64)
            got = (ids, idx, np.union1d(done, idx) if len(idx) else done)
            self._fresh_cache[entity_id] = got
        return got

    def exclusions(self, entity_id: str) -> np.ndarray:
        """Indices never to recommend to ``entity_id``: already-contacted candidates and itself."""
        own = self.candidate_index.get(entity_id)
        done = self.excluded_of(entity_id)
        return done if own is None else np.append(done, own)

    def entity_row(self, entity_id: str) -> pd.Series | None:
        """The entity's feature row, or ``None`` (id-only data or an entity without features)."""
        if self.entity_features is None or entity_id not in self.entity_features.index:
            return None
        return self.entity_features.loc[entity_id]

    def known_entities(self) -> list[str]:
        ids = set(self.entity_counts)
        if self.entity_features is not None:
            ids.update(self.entity_features.index.astype(str))
        return sorted(ids)

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_events(
        cls,
        events: pd.DataFrame,
        use_case: str,
        until: Any = None,
        *,
        entity_features: pd.DataFrame | None = None,
        candidate_features: pd.DataFrame | None = None,
        exclude_events: Sequence[str] | None = None,
        imported: bool | None = None,
    ) -> ServingData:
        """Build from an events frame (``entity_id, candidate_id, ts, weight`` at least).

        Events at or after ``until`` are dropped before anything is computed. The candidate
        space is the candidate feature table's ids (all known profiles, in table order) followed
        by any other candidate with a fit-window event (sorted). ``excluded`` holds the pairs with
        an event in ``exclude_events`` (default: :func:`~startup_recs.data.snapshot.exclusion_events`
        of the log; ``imported`` as for it, ``None`` = unknown source); a frame without an
        ``event`` column excludes every interaction.
        """
        get_use_case(use_case)
        missing = {"entity_id", "candidate_id", "ts", "weight"} - set(events.columns)
        if missing:
            raise DataError(f"events: missing column(s) {sorted(missing)}")
        until_ts = _as_utc(until)
        ev = events
        if until_ts is not None:
            ts = pd.to_datetime(ev["ts"], utc=True)
            ev = ev.loc[ts < until_ts]
        has_event = "event" in ev.columns
        ev = ev[["entity_id", "candidate_id", "ts", "weight", *(["event"] if has_event else [])]].copy()
        ev["entity_id"] = ev["entity_id"].astype(str)
        ev["candidate_id"] = ev["candidate_id"].astype(str)
        ev["ts"] = pd.to_datetime(ev["ts"], utc=True)

        ids: list[str] = []
        if candidate_features is not None:
            ids = [str(c) for c in candidate_features.index]
        known = set(ids)
        extra = sorted(set(ev["candidate_id"].unique()) - known)
        candidate_ids = np.asarray(ids + extra, dtype=np.str_)
        index = pd.Index(candidate_ids)
        cidx = index.get_indexer(ev["candidate_id"])

        n_c = len(candidate_ids)
        popularity = np.bincount(cidx, weights=ev["weight"].to_numpy(np.float64), minlength=n_c)
        recency = np.full(n_c, NEVER_SEEN_DAYS, dtype=np.float32)
        if len(ev):
            ref = until_ts if until_ts is not None else ev["ts"].max()
            last = ev.assign(c=cidx).groupby("c")["ts"].max()
            days = (ref - last).dt.total_seconds().to_numpy() / 86400.0
            recency[last.index.to_numpy()] = np.clip(days, 0.0, NEVER_SEEN_DAYS)

        counts = ev.groupby("entity_id").size()
        pairs = pd.DataFrame({"e": ev["entity_id"].to_numpy(), "c": cidx}).drop_duplicates()
        pairs = pairs.sort_values(["e", "c"])
        seen = {
            e: g.to_numpy(np.int64) for e, g in pairs.groupby("e", sort=False)["c"]
        }
        excluded, names = None, None
        if has_event:
            from startup_recs.data.snapshot import exclusion_events

            present = events["event"].astype(str).unique()  # the whole log's names, as positive_events reads them
            names = tuple(exclude_events) if exclude_events is not None else tuple(
                exclusion_events(use_case, present, True if imported is None else imported))
            hit = ev["event"].astype(str).isin(names).to_numpy()
            done = pd.DataFrame({"e": ev["entity_id"].to_numpy()[hit], "c": cidx[hit]}).drop_duplicates()
            excluded = {e: g.to_numpy(np.int64) for e, g in done.sort_values(["e", "c"]).groupby("e", sort=False)["c"]}
        if candidate_features is not None:
            candidate_features = candidate_features.copy()
            candidate_features.index = candidate_features.index.astype(str)
        if entity_features is not None:
            entity_features = entity_features.copy()
            entity_features.index = entity_features.index.astype(str)
        return cls(
            use_case=use_case,
            until=until_ts,
            candidate_ids=candidate_ids,
            popularity=popularity.astype(np.float32),
            recency_days=recency,
            entity_counts={str(k): int(v) for k, v in counts.items()},
            seen=seen,
            entity_features=entity_features,
            candidate_features=candidate_features,
            excluded=excluded,
            exclude_events=names,
        )

    @classmethod
    def from_snapshot(cls, snapshot: Any, use_case: str, until: Any = None, *,
                      events: pd.DataFrame | None = None) -> ServingData:
        """Build from a snapshot (a URI or a loaded ``startup_recs.data.snapshot`` object); pass
        ``events`` when the caller already holds ``snapshot.events(use_case)``."""
        if isinstance(snapshot, str):
            from startup_recs.data.snapshot import load_snapshot

            snapshot = load_snapshot(snapshot)
        return cls.from_events(
            snapshot.events(use_case) if events is None else events,
            use_case,
            until,
            entity_features=snapshot.entity_features(use_case),
            candidate_features=snapshot.candidate_features(use_case),
            imported=snapshot.source == "events",
        )

    # --- persistence ----------------------------------------------------------------------------
    def save(self, uri: str) -> None:
        """Write the folder described in the module docstring (meta JSON written last)."""
        storage.write_table(
            pa.table({
                "candidate_id": pa.array(self.candidate_ids.tolist(), pa.string()),
                "popularity": pa.array(self.popularity, pa.float32()),
                "recency_days": pa.array(self.recency_days, pa.float32()),
            }),
            storage.join(uri, artifacts.SERVING_CANDIDATES),
        )
        ents = sorted(self.entity_counts)
        storage.write_table(
            pa.table({
                "entity_id": pa.array(ents, pa.string()),
                "interaction_count": pa.array([self.entity_counts[e] for e in ents], pa.int64()),
            }),
            storage.join(uri, artifacts.SERVING_ENTITIES),
        )
        for pairs, name in ((self.seen, artifacts.SERVING_SEEN), (self.excluded, artifacts.SERVING_EXCLUDED)):
            storage.write_table(_long_table(pairs), storage.join(uri, name))
        files = [artifacts.SERVING_CANDIDATES, artifacts.SERVING_ENTITIES, artifacts.SERVING_SEEN,
                 artifacts.SERVING_EXCLUDED]
        for name, df, col in ((artifacts.ENTITY_FEATURES, self.entity_features, "entity_id"),
                              (artifacts.CANDIDATE_FEATURES, self.candidate_features, "candidate_id")):
            if df is None:
                continue
            out = df.copy()
            out.index = out.index.astype(str).rename(col)
            storage.write_table(pa.Table.from_pandas(out.reset_index(), preserve_index=False),
                                storage.join(uri, artifacts.serving_feature_table(name)))
            files.append(artifacts.serving_feature_table(name))
        storage.write_json(storage.join(uri, META_FILE), {
            "format_version": FORMAT_VERSION,
            "use_case": self.use_case,
            "until": None if self.until is None else self.until.isoformat(),
            "n_candidates": self.n_candidates,
            "n_entities": len(self.entity_counts),
            "exclude_events": None if self.exclude_events is None else list(self.exclude_events),
            "files": files,
        })

    @classmethod
    def load(cls, uri: str) -> ServingData:
        """Read a folder written by :meth:`save`; raises :class:`DataError` if it is not one."""
        meta_uri = storage.join(uri, META_FILE)
        if not storage.exists(meta_uri):
            raise DataError(f"{uri}: not a serving data folder (no {META_FILE})")
        meta = storage.read_json(meta_uri)
        cands = storage.read_table(storage.join(uri, artifacts.SERVING_CANDIDATES)).to_pandas()
        ents = storage.read_table(storage.join(uri, artifacts.SERVING_ENTITIES)).to_pandas()
        seen = _read_long(storage.join(uri, artifacts.SERVING_SEEN))
        excluded = (_read_long(storage.join(uri, artifacts.SERVING_EXCLUDED))
                    if artifacts.SERVING_EXCLUDED in meta.get("files", []) else None)  # older folders: seen
        names = meta.get("exclude_events")
        feats: dict[str, pd.DataFrame | None] = {artifacts.ENTITY_FEATURES: None, artifacts.CANDIDATE_FEATURES: None}
        for name, col in ((artifacts.ENTITY_FEATURES, "entity_id"), (artifacts.CANDIDATE_FEATURES, "candidate_id")):
            table = artifacts.serving_feature_table(name)
            if table in meta.get("files", []):
                feats[name] = storage.read_table(storage.join(uri, table)).to_pandas().set_index(col)
        return cls(
            use_case=meta["use_case"],
            until=meta.get("until"),
            candidate_ids=cands["candidate_id"].to_numpy(dtype=np.str_),
            popularity=cands["popularity"].to_numpy(np.float32),
            recency_days=cands["recency_days"].to_numpy(np.float32),
            entity_counts=dict(zip(ents["entity_id"].astype(str), ents["interaction_count"].astype(int), strict=True)),
            seen=seen,
            entity_features=feats[artifacts.ENTITY_FEATURES],
            candidate_features=feats[artifacts.CANDIDATE_FEATURES],
            excluded=excluded,
            exclude_events=None if names is None or excluded is None else tuple(names),
        )

    # --- helpers for batch scoring --------------------------------------------------------------
    def exclusion_lists(self, entity_ids: Iterable[str]) -> list[np.ndarray]:
        return [self.exclusions(e) for e in entity_ids]

    def candidate_positions(self, ids: Sequence[str]) -> np.ndarray:
        """Indices of ``ids`` in the candidate space, ``-1`` where unknown (``int64 [len(ids)]``)."""
        return pd.Index(self.candidate_ids).get_indexer(list(ids)).astype(np.int64)


def _long_table(pairs: dict[str, np.ndarray]) -> pa.Table:
    """``entity -> candidate indices`` as a long table ``entity_id, candidate_idx`` (sorted by entity)."""
    ents = sorted(pairs)
    return pa.table({
        "entity_id": pa.array([e for e in ents for _ in range(len(pairs[e]))], pa.string()),
        "candidate_idx": pa.array(np.concatenate([pairs[e] for e in ents]).astype(np.int64) if ents
                                  else np.empty(0, np.int64), pa.int64()),
    })


def _read_long(uri: str) -> dict[str, np.ndarray]:
    df = storage.read_table(uri).to_pandas()
    return {e: g.to_numpy(np.int64) for e, g in df.groupby("entity_id", sort=False)["candidate_idx"]}

