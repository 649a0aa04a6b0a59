"""What the three dataset builders share: the prepared use-case view, pair aggregation, the
random-negative sampler and atomic writes (sidecar names: :func:`startup_recs.core.artifacts.sidecar`).

Ids are factorised once into int codes; since the events are sorted by time, a candidate's code
orders candidates by first appearance, so the candidates known by the end of part ``p`` are
exactly the codes ``< pool_size[p]``: each part's sampling pool is a prefix, no set building.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from startup_recs.core import storage
from startup_recs.core.errors import DataError
from startup_recs.core.usecases import UseCase, get_use_case
from startup_recs.data.snapshot import PASSIVE_EVENTS, Snapshot, load_snapshot, positive_events
from startup_recs.data.split import PARTS, TimeSplit, ts_values

log = logging.getLogger(__name__)


def check_output(output: str) -> None:
    if not str(output).endswith((".parquet", ".csv")):
        raise DataError(f"output {output!r} must end with .parquet or .csv")


@dataclass
class Prepared:
    """A use case's events with int codes and parts, and its split.

    ``ent`` / ``cand`` int64 [n_events] codes into ``entity_ids`` / ``candidate_ids`` (object
    arrays, in order of first appearance); ``part`` int8 [n_events] (0 train, 1 val, 2 test).
    ``pool_size[p]`` = number of candidates with an event in parts ``<= p``.
    """

    snapshot: Snapshot
    uc: UseCase
    events: pd.DataFrame
    split: TimeSplit
    ent: np.ndarray
    cand: np.ndarray
    part: np.ndarray
    entity_ids: np.ndarray
    candidate_ids: np.ndarray
    pool_size: np.ndarray
    ts: np.ndarray  # datetime64[us] [n_events], UTC without tz (fast to compare and group)
    started: float = field(default_factory=time.perf_counter)

    @property
    def n_entities(self) -> int:
        return len(self.entity_ids)

    @property
    def n_candidates(self) -> int:
        return len(self.candidate_ids)

    def candidate_codes(self, ids: pd.Series | np.ndarray) -> np.ndarray:
        """Codes of candidate ids, extending the candidate list with ids not seen in events
        (e.g. only ever shown in a session)."""
        idx = pd.Index(self.candidate_ids)
        codes = idx.get_indexer(np.asarray(ids, dtype=object))
        new = codes < 0
        if new.any():
            extra = pd.unique(np.asarray(ids, dtype=object)[new])
            self.candidate_ids = np.concatenate([self.candidate_ids, extra]).astype(object)
            codes = pd.Index(self.candidate_ids).get_indexer(np.asarray(ids, dtype=object))
        return codes.astype(np.int64)

    def entity_codes(self, ids: pd.Series | np.ndarray) -> np.ndarray:
        """Codes of entity ids; -1 for an entity without events."""
        return pd.Index(self.entity_ids).get_indexer(np.asarray(ids, dtype=object)).astype(np.int64)

    def positive_mask(self) -> np.ndarray:
        """Events that count as a positive (ranker labels): :func:`snapshot.positive_events`."""
        ev = self.events["event"]
        names = positive_events(self.uc, ev.cat.categories if hasattr(ev, "cat") else ev.unique(),
                                imported=self.snapshot.source == "events")
        return ev.isin(names).to_numpy()

    def engaged_mask(self) -> np.ndarray:
        """Events that act on a shown candidate (everything but a plain view)."""
        return ~self.events["event"].isin(PASSIVE_EVENTS).to_numpy()

    def provenance(self) -> dict[str, Any]:
        wm = self.snapshot.watermark
        return {
            "use_case": self.uc.name,
            "snapshot": self.snapshot.uri,
            "source": self.snapshot.source,
            "watermark": None if wm is None else wm.isoformat(),
            "split": self.split.to_dict(),
            "event_weights": self.snapshot.event_weights,
            "events_by_split": {p: int(n) for p, n in zip(PARTS, np.bincount(self.part, minlength=3), strict=True)},
        }


def prepare(snapshot_uri: str | Snapshot, use_case: str | UseCase, split: TimeSplit | None = None, *,
            split_at: Any = None, test_days: float = 14.0, val_days: float = 14.0) -> Prepared:
    """Load the use case's events, resolve the split (:class:`DataError` if it is bad) and code ids."""
    started = time.perf_counter()
    uc = use_case if isinstance(use_case, UseCase) else get_use_case(use_case)
    snap = snapshot_uri if isinstance(snapshot_uri, Snapshot) else load_snapshot(snapshot_uri)
    events = snap.events(uc)
    if not len(events):
        raise DataError(f"snapshot {snap.uri} has no events for use case {uc.name}")
    if split is None:
        split = TimeSplit.resolve(events["ts"], split_at or None, test_days, val_days)
    else:
        split.check(events["ts"])
    part = split.codes(events["ts"])
    ent, entity_ids = pd.factorize(events["entity_id"], sort=False)
    cand, candidate_ids = pd.factorize(events["candidate_id"], sort=False)
    # Events are sorted by ts, so codes follow first appearance; the pool of part p is a prefix.
    pool = np.array([int(cand[part <= p].max()) + 1 if (part <= p).any() else 0 for p in range(3)], np.int64)
    return Prepared(snap, uc, events, split, ent.astype(np.int64), cand.astype(np.int64), part,
                    np.asarray(entity_ids, dtype=object), np.asarray(candidate_ids, dtype=object), pool,
                    ts_values(events["ts"]), started)


def entity_filter(prep: Prepared, min_interactions: int, window_part: int = 0) -> np.ndarray:
    """Bool [n_entities]: entities with at least ``min_interactions`` events in parts ``<= window_part``.

    Raises a one-line :class:`DataError` when none is left.
    """
    counts = np.bincount(prep.ent[prep.part <= window_part], minlength=prep.n_entities)
    keep = counts >= max(int(min_interactions), 0)
    if min_interactions <= 0:
        keep[:] = True
    if not keep.any():
        window = "+".join(PARTS[: window_part + 1])
        raise DataError(
            f"no entity of {prep.uc.name} has at least {min_interactions} interaction(s) in the "
            f"{window} window (--min-interactions); nothing to build"
        )
    return keep


def pair_table(prep: Prepared, event_mask: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (entity, candidate) pair: ``e, c`` codes, ``part`` of its first event, ``ts``
    of its first event and ``weight`` = summed event weights within that part (later events of
    the pair belong to a later window and would leak into this one)."""
    m = np.ones(len(prep.ent), bool) if event_mask is None else event_mask
    nc = max(prep.n_candidates, 1)
    key = prep.ent[m] * nc + prep.cand[m]
    df = pd.DataFrame({"key": key, "part": prep.part[m], "ts": prep.ts[m],
                       "w": prep.events["weight"].to_numpy()[m]})
    first = df.groupby("key", sort=True).agg(part=("part", "min"), ts=("ts", "min"))
    own = df[df["part"].to_numpy() == first["part"].reindex(df["key"]).to_numpy()]
    w = own.groupby("key", sort=True)["w"].sum()
    out = first.assign(weight=w.reindex(first.index).to_numpy())
    keys = out.index.to_numpy()
    return pd.DataFrame({"e": keys // nc, "c": keys % nc, "part": out["part"].to_numpy(np.int8),
                         "ts": out["ts"].to_numpy(), "weight": out["weight"].to_numpy(np.float64)})


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort + diff: numpy 2.4's hash-based ``np.unique`` is ~100x slower
    on int64 pair keys)."""
    s = np.sort(np.asarray(a))
    if len(s) < 2:
        return s
    return s[np.concatenate([[True], s[1:] != s[:-1]])]


def _in_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if not len(sorted_keys):
        return np.zeros(len(keys), bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def sample_unseen(entities: np.ndarray, need: np.ndarray, pool_size: int, forbidden: np.ndarray,
                  n_candidates: int, rng: np.random.Generator, max_rounds: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``need[i]`` distinct candidates uniformly from codes ``[0, pool_size)`` for entity
    ``entities[i]``, none of whose pair key (``e * n_candidates + c``) is in ``forbidden``.

    Vectorised rejection sampling (oversample, drop forbidden and duplicates, keep the first
    ``need``); an entity that has seen almost the whole pool may get fewer. Returns
    (entity codes, candidate codes) of the drawn pairs.
    """
    forbidden = sorted_unique(forbidden.astype(np.int64))
    remaining = need.astype(np.int64).copy()
    out_e, out_c = [], []
    if pool_size <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    for _round in range(max_rounds):
        active = remaining > 0
        if not active.any():
            break
        ents = entities[active]
        draws = np.ceil(remaining[active] * 1.3).astype(np.int64) + 2
        e_rep = np.repeat(ents, draws)
        c = rng.integers(0, pool_size, size=len(e_rep), dtype=np.int64)
        key = e_rep * n_candidates + c
        ok = ~_in_sorted(key, forbidden)
        e_rep, c, key = e_rep[ok], c[ok], key[ok]
        first = ~pd.Series(key).duplicated().to_numpy()  # keep each pair's first draw, in draw order
        e_rep, c, key = e_rep[first], c[first], key[first]
        # keep at most `remaining` per entity, in draw order
        need_of = pd.Series(remaining[active], index=ents)
        rank = pd.Series(e_rep).groupby(e_rep).cumcount().to_numpy()
        take = rank < need_of.reindex(e_rep).to_numpy()
        e_rep, c, key = e_rep[take], c[take], key[take]
        out_e.append(e_rep)
        out_c.append(c)
        got = pd.Series(np.ones(len(e_rep), np.int64)).groupby(e_rep).sum()
        remaining[active] -= got.reindex(ents, fill_value=0).to_numpy()
        forbidden = sorted_unique(np.concatenate([forbidden, key]))
    if not out_e:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_e), np.concatenate(out_c)


def row_keys(seed: int, *columns: np.ndarray | pd.Series) -> np.ndarray:
    """A pseudo-random uint64 per row from its own values and ``seed`` only.

    Sorting by it draws a random subset whose membership does not depend on any other row, so
    adding later (test-window) data never changes which train rows were drawn.
    """
    frame = pd.DataFrame({f"c{i}": np.asarray(c) for i, c in enumerate(columns)})
    frame["seed"] = np.int64(seed)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(np.uint64)


def part_rng(seed: int, part: int) -> np.random.Generator:
    """An independent random stream per (seed, part): a part's draws never depend on later parts."""
    return np.random.default_rng([int(seed), int(part)])


def write_frame(df: pd.DataFrame, uri: str, schema: pa.Schema | None = None) -> None:
    """A DataFrame -> Parquet (or CSV for ``.csv``) through storage, atomically."""
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    storage.write_table(table, uri)


def feature_sidecar(ids: np.ndarray, features: pd.DataFrame | None, id_col: str) -> pd.DataFrame:
    """``id_col`` + raw feature columns for every id (rows without features keep nulls)."""
    ids = np.sort(pd.unique(np.asarray(ids, dtype=object)).astype(object))
    if features is None:
        return pd.DataFrame({id_col: ids.astype(str)})
    feats = features.reindex(ids)
    feats.index.name = id_col
    return feats.reset_index()


def elapsed(prep: Prepared) -> float:
    return round(time.perf_counter() - prep.started, 3)
