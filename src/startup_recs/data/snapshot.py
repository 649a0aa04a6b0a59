"""One view per use case over a Parquet snapshot, whichever source wrote it.

A snapshot (``recs extract``) comes from the app database (tables ``startups``, ``users``,
``startup_interactions``, ``user_interactions``, ``recommendation_sessions``, ``impressions``) or
from an imported log (``events`` plus optional ``entity_features`` / ``candidate_features``).
Every later step (datasets, training, evaluation) reads it only through :class:`Snapshot`, so it
never needs to know which source it was:

- :meth:`Snapshot.events` -> ``entity_id, candidate_id, event, ts, weight, session_id`` of one
  use case, weight = configured event weight x imported weight;
- :meth:`Snapshot.entity_features` / :meth:`Snapshot.candidate_features` -> the raw feature
  columns indexed by id, or ``None`` for an id-only import;
- :meth:`Snapshot.impressions` -> what sessions of that use case showed, or ``None``.

Tables are read once and cached (a 10M-event snapshot is read in seconds, not per call).

``extract_stats.json`` is the commit marker (written last by the extract): when it lists
``parts``, exactly those part files are read and a table it does not list is absent, so the
parts of an extract still running (or one that crashed before its commit) are invisible. A
folder of extract parts (``part-NNNNN.parquet``) without the marker is refused as uncommitted;
hand-written snapshots without the marker are read whole.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from startup_recs.core import config, storage
from startup_recs.core.errors import ConfigError, DataError, StorageError
from startup_recs.core.usecases import UseCase, get_use_case
from startup_recs.data.schema import SCHEMAS, validate

EVENT_COLUMNS = ["entity_id", "candidate_id", "event", "ts", "weight", "session_id"]
IMPRESSION_COLUMNS = ["session_id", "entity_id", "candidate_id", "position", "ts"]

# Raw feature columns of each kind, as the app database holds them (see features.SPECS).
KIND_COLUMNS: dict[str, list[str]] = {
    "startup": ["sector", "stage", "location", "skills_needed", "funding_usd"],
    "developer": ["skills", "location", "experience_years"],
    "investor": ["sectors", "stages", "location", "check_size_usd"],
}
# Events that only record that a profile was looked at: not an action on it.
PASSIVE_EVENTS: frozenset[str] = frozenset({"view"})


def positive_events(use_case: str | UseCase, present: Iterable[str], imported: bool) -> list[str]:
    """Event names that count as a positive: the platform's one definition.

    The ranker's labels (the ranker dataset's positives and the trainer's validation-window
    positives) and the evaluation's relevant items (test and validation targets,
    :func:`startup_recs.evaluation.protocol.target_events`) all come from here, so the ranker is
    scored on the target it learns. ``present``: the event names of the use case's whole log;
    ``imported``: ``Snapshot.source == "events"``.

    The use case's ``positive_events`` (contact, apply_received for startup_developer). An
    imported log without any of them: every event it has except plain views (all of them if
    it has nothing else), since its event names are the user's own. App data without any of
    them has no positives (``[]``).
    """
    uc = _ucase(use_case)
    present = sorted({str(e) for e in present})
    pos = [e for e in uc.positive_events if e in present]
    if pos or not imported:
        return pos
    return [e for e in present if e not in PASSIVE_EVENTS] or present


def exclusion_events(use_case: str | UseCase, present: Iterable[str], imported: bool) -> list[str]:
    """Event names after which a candidate is never recommended to that entity again: the one
    definition of "already contacted" for serving (``ServingData.excluded``) and evaluation (the
    rankings skip them, and a later positive on them is not a new relevant item).

    The use case's ``exclude_events`` (default: its positive events; contact and apply_received
    for startup_developer) present in the log; an imported log without any of them: its
    :func:`positive_events`. A plain view never excludes: the candidate may still be the answer.
    """
    uc = _ucase(use_case)
    present = sorted({str(e) for e in present})
    names = [e for e in uc.excluded_by if e in present]
    if names or not imported:
        return names
    return positive_events(uc, present, imported)


def _ucase(use_case: str | UseCase) -> UseCase:
    return use_case if isinstance(use_case, UseCase) else get_use_case(use_case)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    # deduplicate_objects keeps one Python str per distinct id (10M rows, ~100k ids).
    return table.to_pandas(deduplicate_objects=True, split_blocks=True, self_destruct=True)


@dataclass
class Snapshot:
    """A snapshot directory (local or ``s3://``) and its lazily loaded, cached tables.

    ``source`` is ``"db"`` (app tables) or ``"events"`` (imported log). ``stats`` is
    ``extract_stats.json`` when present (tests may write bare tables without it).
    ``event_weights`` is the weight of each event name used by :meth:`events`.
    """

    uri: str
    source: str
    stats: dict[str, Any]
    event_weights: dict[str, float]
    tables_present: frozenset[str]
    _tables: dict[str, pd.DataFrame | None] = field(default_factory=dict, repr=False)
    _views: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    # --- raw tables ------------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.tables_present

    def table(self, name: str) -> pd.DataFrame | None:
        """The whole table ``name`` as a DataFrame (validated against its contract), or None."""
        if name not in self._tables:
            if name not in self.tables_present:
                self._tables[name] = None
            else:
                tbl = _read_table(self.uri, name, self.stats)
                if name in SCHEMAS:
                    allowed = frozenset(self.event_weights) if name == "events" else None
                    tbl = validate(tbl, name, allowed_events=allowed)
                self._tables[name] = _to_pandas(tbl)
        return self._tables[name]

    def _require(self, name: str) -> pd.DataFrame:
        df = self.table(name)
        if df is None:
            raise DataError(f"snapshot {self.uri} has no {name!r} table")
        return df

    # --- metadata -----------------------------------------------------------------------------
    @property
    def watermark(self) -> pd.Timestamp | None:
        """The extract watermark (events newer than it are not in the snapshot), else the last event."""
        wm = self.stats.get("watermark")
        if wm:
            ts = pd.Timestamp(wm)
            return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        times = []
        for name in ("events", "startup_interactions", "user_interactions"):
            df = self.table(name) if self.has(name) else None
            if df is not None and len(df):
                times.append(df["ts"].max())
        return max(times) if times else None

    def use_cases(self) -> list[str]:
        """Use cases this snapshot can serve: all four for a DB snapshot, the imported one otherwise."""
        if self.source == "db":
            return list(_all_use_cases())
        uc = self.stats.get("use_case")
        return [uc] if uc else list(_all_use_cases())

    def check_use_case(self, use_case: str | UseCase) -> UseCase:
        uc = _ucase(use_case)
        if uc.name not in self.use_cases():
            raise ConfigError(
                f"snapshot {self.uri} was imported for use case {self.stats.get('use_case')!r}, not {uc.name!r}"
            )
        return uc

    # --- views per use case --------------------------------------------------------------------
    def _roles(self) -> pd.Series:
        """users.role indexed by user_id."""
        key = ("_roles", "")
        if key not in self._views:
            users = self._require("users").drop_duplicates("user_id", keep="last")
            self._views[key] = pd.Series(users["role"].to_numpy(), index=users["user_id"].to_numpy())
        return self._views[key]

    def events(self, use_case: str | UseCase) -> pd.DataFrame:
        """Interactions of one use case: ``entity_id, candidate_id, event, ts, weight, session_id``.

        Sorted by ``ts``. ``event`` is categorical; ``weight`` float64 = configured event weight
        x imported weight (imported logs) or the configured event weight (app database). For a DB
        snapshot only users of the use case's role appear: startup_developer reads
        startup_interactions whose user is a developer; developer_startup reads
        user_interactions of developers. ``session_id`` is null where unknown. Cached: treat the
        returned frame as read-only.
        """
        uc = self.check_use_case(use_case)
        key = ("events", uc.name)
        if key in self._views:
            return self._views[key]
        if self.source == "events":
            ev = self._require("events")
            out = pd.DataFrame({
                "entity_id": ev["entity_id"],
                "candidate_id": ev["candidate_id"],
                "event": ev["event"],
                "ts": ev["ts"],
                "weight": ev["weight"].astype("float64") * self._event_weight(ev["event"]),
                "session_id": pd.Series(None, index=ev.index, dtype=object),
            })
        else:
            tbl = self._require(uc.interactions_table)
            roles = self._roles()
            if uc.entity_is_startup:
                ent, cand, user_col = tbl["startup_id"], tbl["user_id"], "user_id"
            else:
                ent, cand, user_col = tbl["user_id"], tbl["startup_id"], "user_id"
            keep = tbl[user_col].map(roles).to_numpy() == uc.user_role
            out = pd.DataFrame({
                "entity_id": ent[keep],
                "candidate_id": cand[keep],
                "event": tbl["event"][keep],
                "ts": tbl["ts"][keep],
                "weight": self._event_weight(tbl["event"][keep]),
                "session_id": tbl["session_id"][keep],
            })
        out["event"] = out["event"].astype("category")
        out = out.sort_values("ts", kind="stable").reset_index(drop=True)
        self._views[key] = out
        return out

    def _event_weight(self, events: pd.Series) -> np.ndarray:
        unknown = set(pd.unique(events)) - set(self.event_weights)
        if unknown:
            raise DataError(
                f"event {sorted(unknown)[0]!r} has no configured weight "
                f"(known: {', '.join(sorted(self.event_weights))}); set RECS_EVENT_WEIGHTS"
            )
        return events.map(self.event_weights).astype("float64").to_numpy()

    def entity_features(self, use_case: str | UseCase) -> pd.DataFrame | None:
        """Raw feature columns of the use case's entities, indexed by ``entity_id``; None if id-only."""
        uc = self.check_use_case(use_case)
        return self._features(uc, "entity")

    def candidate_features(self, use_case: str | UseCase) -> pd.DataFrame | None:
        """Raw feature columns of the use case's candidates, indexed by ``candidate_id``; None if id-only."""
        uc = self.check_use_case(use_case)
        return self._features(uc, "candidate")

    def _features(self, uc: UseCase, side: str) -> pd.DataFrame | None:
        key = (f"{side}_features", uc.name)
        if key in self._views:
            return self._views[key]
        index_name = f"{side}_id"
        if self.source == "events":
            df = self.table(f"{side}_features")
            if df is not None:
                id_col = index_name if index_name in df.columns else df.columns[0]
                if df[id_col].isna().any():
                    raise DataError(f"{side}_features.{id_col}: null id")
                df = df.assign(**{id_col: df[id_col].astype(str)}).drop_duplicates(id_col, keep="last")
                df = df.set_index(id_col)
                df.index.name = index_name
        else:
            kind = uc.entity_kind if side == "entity" else uc.candidate_kind
            if kind == "startup":
                src = self._require("startups")
                df = src.set_index("startup_id")[KIND_COLUMNS["startup"]]
            else:
                src = self._require("users")
                df = src[src["role"] == kind].set_index("user_id")[KIND_COLUMNS[kind]]
            df = df[~df.index.duplicated(keep="last")]
            df.index.name = index_name
        self._views[key] = df
        return df

    def impressions(self, use_case: str | UseCase) -> pd.DataFrame | None:
        """What sessions of this use case showed: ``session_id, entity_id, candidate_id, position, ts``.

        ``ts`` is the session time; ``position`` is 0-based (0 = top). None when the snapshot has
        no sessions (an imported log) or none for this use case.
        """
        uc = self.check_use_case(use_case)
        key = ("impressions", uc.name)
        if key in self._views:
            return self._views[key]
        out = None
        if self.has("recommendation_sessions") and self.has("impressions"):
            sess = self._require("recommendation_sessions")
            sess = sess.loc[sess["use_case"] == uc.name, ["session_id", "entity_id", "ts"]]
            if len(sess):
                imp = self._require("impressions")[["session_id", "candidate_id", "position"]]
                out = imp.merge(sess, on="session_id", how="inner")[IMPRESSION_COLUMNS]
                out["position"] = out["position"].astype("int32")
                out = out.sort_values(["ts", "session_id", "position"], kind="stable").reset_index(drop=True)
                if not len(out):
                    out = None
        self._views[key] = out
        return out

    def known_ids(self, use_case: str | UseCase, side: str) -> np.ndarray:
        """Every id of one side (``"entity"``/``"candidate"``): the feature table's and the events'."""
        uc = self.check_use_case(use_case)
        feats = self._features(uc, side)
        ids = pd.unique(self.events(uc)[f"{side}_id"])
        if feats is not None:
            ids = pd.unique(np.concatenate([feats.index.to_numpy(dtype=object), ids.astype(object)]))
        return np.sort(ids.astype(object))


_EXTRACT_PART = re.compile(r"^part-\d{5}\.parquet$")


def _listed_parts(stats: dict[str, Any]) -> dict[str, list[str]] | None:
    parts = stats.get("parts")
    if not isinstance(parts, dict):
        return None
    return {str(t): [str(p) for p in (ps or [])] for t, ps in parts.items()}


def _read_table(uri: str, name: str, stats: dict[str, Any]) -> pa.Table:
    """The table ``name``: only its committed parts when the marker lists them."""
    parts = _listed_parts(stats)
    if parts is None:
        return storage.read_table(storage.join(uri, name))
    listed = parts.get(name, [])
    if not listed:
        if name in SCHEMAS:
            return SCHEMAS[name].empty_table()
        raise DataError(f"snapshot {uri}: table {name!r} has no committed part")
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(storage.join(uri, name))
    try:
        return pq.read_table([f"{path}/{_part_name(uri, p)}" for p in listed], filesystem=fs)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StorageError(f"cannot read {storage.join(uri, name)}: {str(exc).splitlines()[0]}") from None


def _part_name(uri: str, name: str) -> str:
    """A listed part is a plain file name inside its table folder, nothing else."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise DataError(f"snapshot {uri}: extract_stats.json lists a bad part name {name!r}")
    return name


def _uncommitted(uri: str, tables: frozenset[str]) -> bool:
    """True when a table folder holds extract parts although no marker was written yet."""
    return any(_EXTRACT_PART.match(f) for t in sorted(tables) for f in storage.listdir(storage.join(uri, t)))


def _all_use_cases() -> tuple[str, ...]:
    from startup_recs.core.usecases import USE_CASES

    return tuple(USE_CASES)


def _weights(recorded: dict[str, float], override: dict[str, float] | str | None) -> dict[str, float]:
    """Defaults, then the weights the snapshot was extracted with, then RECS_EVENT_WEIGHTS/override."""
    weights = dict(config.DEFAULT_EVENT_WEIGHTS)
    weights.update({str(k): float(v) for k, v in recorded.items()})
    if override is not None or os.environ.get("RECS_EVENT_WEIGHTS"):
        active = config.event_weights(override)
        # config.event_weights starts from the defaults: keep recorded names it does not know.
        weights.update(active)
    return weights


def load_snapshot(uri: str, *, event_weights: dict[str, float] | str | None = None) -> Snapshot:
    """Open a snapshot directory (local path, ``file://`` or ``s3://``); tables load on first use.

    Raises :class:`DataError` when ``uri`` holds neither app tables nor an ``events`` table.
    """
    uri = str(uri)
    try:
        names = set(storage.listdir(uri))
    except (OSError, StorageError) as exc:
        raise DataError(f"cannot list snapshot {uri}: {exc}") from None
    if not names and not storage.exists(uri):
        raise DataError(f"snapshot {uri} does not exist")
    stats: dict[str, Any] = {}
    if "extract_stats.json" in names:
        try:
            stats = storage.read_json(storage.join(uri, "extract_stats.json"))
        except (StorageError, json.JSONDecodeError) as exc:
            raise DataError(f"snapshot {uri}: bad extract_stats.json ({exc})") from None
    tables = frozenset(n for n in names if not n.endswith(".json") and not n.startswith("."))
    parts = _listed_parts(stats)
    if parts is not None:
        tables = tables & frozenset(parts)  # a table folder the marker does not list is not committed
    elif not stats and _uncommitted(uri, tables):
        raise DataError(f"snapshot {uri} is not committed yet: part files but no extract_stats.json "
                        "(an extract is running, or crashed before its commit)")
    if "events" in tables:
        source = "events"
    elif {"startups", "users"} <= tables and tables & {"startup_interactions", "user_interactions"}:
        source = "db"
    else:
        raise DataError(
            f"snapshot {uri} holds neither app tables (startups, users, *_interactions) nor an events table"
        )
    source = stats.get("source", source)
    return Snapshot(uri=uri, source=source, stats=stats,
                    event_weights=_weights(stats.get("event_weights") or {}, event_weights),
                    tables_present=tables)
