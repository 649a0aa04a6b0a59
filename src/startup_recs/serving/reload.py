"""Bundle sources and hot reload: one :class:`BundleSlot` per served use case.

A slot watches one source URI (a bundle ``.../<use_case>/v<N>``, a use-case folder holding a
``latest`` pointer, or the pointer itself). :meth:`BundleSlot.refresh` resolves the source; when
it names a bundle other than the one being served, the new bundle is fetched, verified against its
manifest checksums and loaded *beside* the old one, then swapped in with one reference
assignment. A request reads :attr:`BundleSlot.current` once and keeps that object to the end, so
in-flight requests finish on the old version while new ones see the new. A bad new bundle is
refused (one log line) and the old one keeps serving; the same broken target is retried only
after ``retry_after_s``, so a broken publish cannot flood the log or the CPU.

Fallback: when the bundle ``latest`` names is missing or fails verification, the slot tries the
older versions newest first (:func:`startup_recs.core.bundle_ops.serving_candidates`) and serves
the first that verifies, at start as on every reload; :attr:`BundleSlot.fallback` says so (the
predictor exports it as ``recs_bundle_fallback``). Without it a pod started while ``latest``
pointed at a broken publish stayed unready although the previous good version was right there.

Outages: :meth:`BundleSlot.refresh` never raises. A storage failure (S3 down, throttled, a
timeout) is not a verdict on the bundle: the current one keeps serving and the next attempt
waits an exponentially growing, jittered delay (``backoff_s`` doubling up to ``max_backoff_s``),
with one WARNING when the outage starts and one INFO line when it ends.

:class:`Poller` calls ``refresh`` on every slot every ``interval_s`` seconds in a daemon thread.
:func:`clean_cache` removes the download folders a previous process left in the cache folder.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from startup_recs.core import bundle, bundle_ops, storage
from startup_recs.core.errors import BundleError, ConfigError, RecsError, StorageError
from startup_recs.core.usecases import USE_CASES, get_use_case

log = logging.getLogger(__name__)


class Servable(Protocol):
    """What a slot serves: ``Recommender`` satisfies it (``recommend(entity_id, limit) -> dict``)."""

    def recommend(self, entity_id: str, limit: int) -> dict[str, Any]: ...


Loader = Callable[[Path], Servable]


def default_loader(local_dir: Path) -> Servable:
    """``Recommender.load`` of the serving core (imported here so the core import stays light)."""
    from startup_recs.serving.recommender import Recommender

    return Recommender.load(str(local_dir))


@dataclass(frozen=True)
class LoadedBundle:
    """A verified bundle in memory: what it is (``uri``, ``version``, ``manifest``) and the model."""

    uri: str
    version: str
    manifest: Mapping[str, Any]
    model: Servable
    local_dir: Path
    owned_dir: Path | None = None  # a download folder this process made; removed once swapped out
    loaded_at: float = field(default_factory=time.time)


def load_bundle(uri: str, *, use_case: str | None = None, loader: Loader = default_loader,
                cache_root: str | Path | None = None) -> LoadedBundle:
    """Resolve ``uri``, fetch (``s3://``) and verify the bundle, then load it with ``loader``.

    Raises :class:`BundleError` for a missing/corrupt bundle or one of another use case, and lets
    the loader's :class:`RecsError` through; anything else the loader raises (a truncated array
    that somehow passed its checksum) is wrapped in a :class:`BundleError` naming the type.
    """
    target = bundle.resolve(uri)
    root = Path(cache_root) if cache_root else None
    if root:
        root.mkdir(parents=True, exist_ok=True)
    # local bundles too: the loader reads a folder holding only the manifest's files (linked)
    owned = Path(tempfile.mkdtemp(prefix=CACHE_PREFIX, dir=root))
    try:
        local_dir, manifest = bundle.fetch_verified(target, owned)
        if use_case is not None and manifest.get("use_case") != use_case:
            raise BundleError(f"{target} is a {manifest.get('use_case')!r} bundle, expected {use_case!r}")
        try:
            model = loader(local_dir)
        except RecsError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken artifact must refuse the bundle, not crash
            raise BundleError(f"{target}: cannot load ({type(exc).__name__}: {exc})") from None
    except BaseException:
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)
        raise
    return LoadedBundle(uri=target, version=version_label(manifest.get("version")), manifest=manifest,
                        model=model, local_dir=Path(local_dir), owned_dir=owned)


CACHE_PREFIX = "bundle-"


def clean_cache(cache_root: str | Path) -> int:
    """Remove the download folders (``bundle-*``) a previous process left under ``cache_root``;
    returns how many. Call it once at start, before any slot loads: in a pod the cache is an
    emptyDir that survives container restarts, and each restart would otherwise leak a copy."""
    root = Path(cache_root)
    if not root.is_dir():
        return 0
    stale = [d for d in root.iterdir() if d.is_dir() and d.name.startswith(CACHE_PREFIX)]
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    if stale:
        log.info("removed %d stale bundle download folder(s) from %s", len(stale), root)
    return len(stale)


def version_label(version: object) -> str:
    """``"v3"`` for manifest version 3 (the label answers and metrics carry, as the Recommender's)."""
    return f"v{version}" if isinstance(version, int) or str(version).isdigit() else str(version)


def use_case_of(source: str) -> str:
    """The use case a source URI serves, from its path (``.../<use_case>[/v<N>|/latest]``) or,
    when the path does not say, from the manifest it resolves to."""
    parts = [p for p in str(source).rstrip("/").split("/") if p]
    for p in reversed(parts[-3:]):
        if p in USE_CASES:
            return p
    try:
        target = bundle.resolve(source)
        manifest = storage.read_json(storage.join(target, bundle.MANIFEST))
        return get_use_case(str(manifest.get("use_case"))).name
    except (RecsError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot tell the use case of {source}: name it as USE_CASE=URI ({exc})") from None


def expand_sources(specs: Iterable[str]) -> dict[str, str]:
    """``{use_case: source_uri}`` from ``--bundle`` values.

    A value is ``URI`` or ``USE_CASE=URI``. A URI that is neither a bundle nor a use-case folder
    but a models root (``<models_uri>`` holding ``<use_case>/latest`` folders) expands to every
    use case published there. Two sources for one use case are a :class:`ConfigError`.
    """
    out: dict[str, str] = {}

    def add(uc: str, uri: str) -> None:
        get_use_case(uc)
        if uc in out:
            raise ConfigError(f"two bundles given for use case {uc}: {out[uc]} and {uri}")
        out[uc] = uri

    for spec in specs:
        name, sep, uri = spec.partition("=")
        if sep and name in USE_CASES and "://" not in name:
            add(name, uri.rstrip("/"))
            continue
        uri = spec.rstrip("/")
        is_bundle = storage.exists(storage.join(uri, bundle.MANIFEST))
        is_uc_dir = is_bundle or uri.endswith("/" + bundle.LATEST) or storage.exists(storage.join(uri, bundle.LATEST))
        if not is_uc_dir:
            found = [uc for uc in USE_CASES if storage.exists(storage.join(uri, uc, bundle.LATEST))]
            if found:
                for uc in found:
                    add(uc, storage.join(uri, uc))
                continue
        add(use_case_of(uri), uri)
    if not out:
        raise ConfigError("no bundle given: pass --bundle URI at least once")
    return out


class BundleSlot:
    """The bundle currently served for one use case, and how to replace it."""

    def __init__(self, source: str, use_case: str, *, loader: Loader = default_loader,
                 cache_root: str | Path | None = None, retry_after_s: float = 60.0,
                 on_swap: Callable[[LoadedBundle | None, LoadedBundle], None] | None = None,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, max_fallback: int = 5) -> None:
        self.source = source
        self.use_case = get_use_case(use_case).name
        self._loader = loader
        self._cache_root = cache_root
        self._retry_after_s = retry_after_s
        self._on_swap = on_swap
        self._backoff_s, self._max_backoff_s = backoff_s, max(backoff_s, max_backoff_s)
        self._max_fallback = max_fallback
        self._current: LoadedBundle | None = None
        self._lock = threading.Lock()  # one refresh at a time; readers never take it
        self._failed: dict[str, float] = {}  # target uri -> time of the last failed load
        self._outages = 0  # consecutive storage failures
        self._next_try = 0.0  # time.monotonic() before which refresh() does not touch storage
        self.named: str | None = None  # the bundle 'latest' named at the last successful look
        self.last_error: str | None = None

    @property
    def current(self) -> LoadedBundle | None:
        """The bundle to answer with. Read it once per request and keep the object."""
        return self._current

    @property
    def fallback(self) -> bool:
        """True while the bundle served is not the one ``latest`` names (it failed to verify)."""
        cur = self._current
        return cur is not None and cur.uri != self.named

    def refresh(self) -> bool:
        """Load and swap in the best bundle the source offers now, if it is new. True when swapped.

        Never raises: a bad bundle goes to :attr:`last_error` and one log line (WARNING the first
        time a target fails, DEBUG on retries) and the next candidate is tried; a storage outage
        or anything unexpected keeps the current bundle and backs off.
        """
        with self._lock:
            if time.monotonic() < self._next_try:
                return False
            try:
                swapped = self._refresh()
            except Exception as exc:  # noqa: BLE001 - documented never to raise: S3, botocore, bugs
                self._outage(exc)
                return False
            if self._outages:
                log.info("%s: storage reachable again after %d failed attempt(s)", self.use_case, self._outages)
            self._outages, self._next_try = 0, 0.0
            return swapped

    def _refresh(self) -> bool:
        try:
            named, candidates = bundle_ops.serving_candidates(self.source, self._max_fallback)
        except BundleError as exc:
            return self._fail(self.source, str(exc))
        was_fallback, self.named = self.fallback, named
        cur = self._current
        for target in candidates:
            if cur is not None and cur.uri == target:
                self._note_fallback(was_fallback)
                return False
            failed_at = self._failed.get(target)
            if failed_at is not None and time.time() - failed_at < self._retry_after_s:
                continue
            try:
                new = load_bundle(target, use_case=self.use_case, loader=self._loader, cache_root=self._cache_root)
            except StorageError:
                raise  # an outage, not a verdict on this bundle
            except RecsError as exc:
                self._fail(target, str(exc))
                continue
            self._swap(cur, new)
            self._note_fallback(was_fallback)
            return True
        return False

    def _swap(self, cur: LoadedBundle | None, new: LoadedBundle) -> None:
        self._failed.pop(new.uri, None)
        self._current = new  # the atomic swap: one reference assignment
        if new.uri == self.named:
            self.last_error = None  # on a fallback it keeps why the named bundle was refused
        if cur is None:
            log.info("%s: serving %s from %s", self.use_case, new.version, new.uri)
        else:
            log.info("%s: hot-reloaded %s -> %s (%s)", self.use_case, cur.version, new.version, new.uri)
        if self._on_swap is not None:
            self._on_swap(cur, new)
        if cur is not None and cur.owned_dir is not None:
            # the old model is already in memory; in-flight requests keep using that object
            shutil.rmtree(cur.owned_dir, ignore_errors=True)

    def _note_fallback(self, was: bool) -> None:
        cur = self._current
        if self.fallback and not was and cur is not None:
            log.warning("%s: FALLBACK: serving %s (%s); latest names %s, which did not verify",
                        self.use_case, cur.version, cur.uri, self.named or "nothing readable")
        elif was and not self.fallback and cur is not None:
            log.info("%s: fallback over, serving %s as latest names", self.use_case, cur.version)

    def _fail(self, target: str, reason: str) -> bool:
        first = target not in self._failed
        self._failed[target] = time.time()
        self.last_error = reason
        keeps = f"keeps serving {self._current.version}" if self._current else "not ready"
        log.log(logging.WARNING if first else logging.DEBUG, "%s: bundle %s refused, %s: %s",
                self.use_case, target, keeps, reason)
        return False

    def _outage(self, exc: BaseException) -> None:
        self._outages += 1
        delay = min(self._max_backoff_s, self._backoff_s * 2 ** (self._outages - 1)) * random.uniform(0.8, 1.2)
        self._next_try = time.monotonic() + delay
        self.last_error = f"{type(exc).__name__}: {exc}"
        keeps = f"keeps serving {self._current.version}" if self._current else "not ready"
        log.log(logging.WARNING if self._outages == 1 else logging.DEBUG,
                "%s: cannot reach %s (%s), %s; next try in %.1f s (attempt %d)", self.use_case, self.source,
                self.last_error, keeps, delay, self._outages)

    def close(self) -> None:
        cur, self._current = self._current, None
        if cur is not None and cur.owned_dir is not None:
            shutil.rmtree(cur.owned_dir, ignore_errors=True)


class Poller:
    """Calls :meth:`BundleSlot.refresh` on each slot every ``interval_s`` seconds (daemon thread)."""

    def __init__(self, slots: Iterable[BundleSlot], interval_s: float) -> None:
        if interval_s <= 0:
            raise ConfigError(f"reload interval must be > 0 seconds, got {interval_s}")
        self.slots = list(slots)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bundle-poller", daemon=True)

    def start(self) -> Poller:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for slot in self.slots:
                try:
                    slot.refresh()
                except Exception as exc:  # noqa: BLE001 - the poller must outlive any one failure
                    log.warning("%s: reload poll failed: %s: %s", slot.use_case, type(exc).__name__, exc)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
