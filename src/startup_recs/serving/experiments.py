"""A/B experiments in the predictor: a share of a use case's entities answered by a treatment bundle.

``recs serve --bundle startup_developer=URI_A --experiment startup_developer=URI_B:20`` answers 20 %
of the startups from ``URI_B`` and the rest from ``URI_A``. The assignment is *sticky per entity*:
:func:`bucket` hashes the experiment name and the entity id with SHA-256 (stable across
processes, replicas and restarts, unlike Python's ``hash``), so one startup always sees one arm
and every replica agrees. Every answer carries ``model_version`` (the bundle that answered it) and
``experiment`` = ``{"name": ..., "arm": "control"|"treatment"}``.

The treatment is a :class:`~startup_recs.serving.reload.BundleSlot` of its own, polled and
hot-reloaded like the control's. The control's model is wrapped by :class:`ExperimentModel` (the
slot's loader does it, so a hot-reloaded control is wrapped too); the wrapper reads the treatment
slot's current bundle once per answer. While the treatment has no good bundle (still loading, or
refused), its entities get the control's answer with ``"arm": "control"`` and
``"fallback": true``: what was *served* is what the answer and the logs say.

Spec syntax (one ``--experiment`` per use case): ``USE_CASE=URI:PERCENT`` or
``USE_CASE=URI:PERCENT:NAME``. The default name is ``<use_case>:<last path part of URI>`` (e.g.
``startup_developer:v2``); give a NAME when the URI is a moving ``latest`` folder, and a new NAME
for a new experiment, so that it reshuffles the entities instead of reusing the last split.
Removing the flag (a restart without it) ends the experiment.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from startup_recs.core.errors import ConfigError
from startup_recs.core.usecases import USE_CASES, get_use_case
from startup_recs.serving.reload import BundleSlot, Loader, Servable

log = logging.getLogger(__name__)

CONTROL, TREATMENT = "control", "treatment"


def bucket(name: str, entity_id: str) -> float:
    """The entity's place in ``[0, 1)`` for experiment ``name``: the first 8 bytes of
    ``sha256(name + NUL + entity_id)`` as a fraction of 2**64 (uniform, stable everywhere)."""
    digest = hashlib.sha256(f"{name}\x00{entity_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(name: str, entity_id: str, share: float) -> str:
    """``"treatment"`` for the ``share`` (0..1) of entities whose bucket is below it, else ``"control"``."""
    return TREATMENT if bucket(name, entity_id) < share else CONTROL


@dataclass(frozen=True)
class ExperimentSpec:
    """One ``--experiment``: the use case, the treatment's source URI, its share of entities
    (percent, 0 < percent < 100) and the experiment's name (the hash salt)."""

    use_case: str
    source: str
    percent: float
    name: str

    @property
    def share(self) -> float:
        return self.percent / 100.0


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None  # NaN is not a share


def parse_experiment(spec: str) -> ExperimentSpec:
    """``USE_CASE=URI:PERCENT[:NAME]`` -> :class:`ExperimentSpec` (a :class:`ConfigError` names
    what is wrong). The URI may itself hold colons (``s3://...``): the share is the last
    numeric ``:``-part, the name (optional) what follows it."""
    uc, sep, rest = spec.partition("=")
    if not sep or uc not in USE_CASES:
        raise ConfigError(f"bad --experiment {spec!r}: expected USE_CASE=URI:PERCENT[:NAME] "
                          f"with USE_CASE one of {', '.join(USE_CASES)}")
    parts = rest.rsplit(":", 2)
    name = ""
    if len(parts) >= 2 and _number(parts[-1]) is not None:
        uri, pct = ":".join(parts[:-1]), _number(parts[-1])
    elif len(parts) == 3 and _number(parts[1]) is not None:
        uri, pct, name = parts[0], _number(parts[1]), parts[2]
    else:
        raise ConfigError(f"bad --experiment {spec!r}: no PERCENT after the URI (USE_CASE=URI:PERCENT[:NAME])")
    uri = uri.rstrip("/")
    if not uri:
        raise ConfigError(f"bad --experiment {spec!r}: empty treatment URI")
    assert pct is not None
    if not 0.0 < pct < 100.0:
        raise ConfigError(f"bad --experiment {spec!r}: PERCENT must be between 0 and 100 (exclusive), got {pct:g}")
    if not name:
        name = f"{uc}:{Path(uri).name or uri}"
    if any(ord(ch) < 32 for ch in name) or len(name) > 128:
        raise ConfigError(f"bad --experiment {spec!r}: the name must be printable and at most 128 characters")
    return ExperimentSpec(use_case=get_use_case(uc).name, source=uri, percent=pct, name=name)


def parse_experiments(specs: Iterable[str] | None, served: Iterable[str]) -> dict[str, ExperimentSpec]:
    """``{use_case: spec}`` from the ``--experiment`` values; one experiment per use case, and
    only for a use case that ``--bundle`` serves (the control)."""
    out: dict[str, ExperimentSpec] = {}
    served = set(served)
    for text in specs or []:
        spec = parse_experiment(text)
        if spec.use_case in out:
            raise ConfigError(f"two experiments given for use case {spec.use_case}: one at a time")
        if spec.use_case not in served:
            raise ConfigError(f"--experiment for {spec.use_case}, which no --bundle serves "
                              f"(served: {', '.join(sorted(served)) or 'none'})")
        out[spec.use_case] = spec
    return out


class Experiment:
    """A running experiment: its spec and the treatment's bundle slot."""

    def __init__(self, spec: ExperimentSpec, treatment: BundleSlot) -> None:
        if treatment.use_case != spec.use_case:
            raise ConfigError(f"treatment slot serves {treatment.use_case}, experiment is for {spec.use_case}")
        self.spec = spec
        self.treatment = treatment
        self._warned = threading.Event()

    @property
    def name(self) -> str:
        return self.spec.name

    def arm(self, entity_id: str) -> str:
        """The arm the entity is assigned to (sticky)."""
        return assign(self.spec.name, entity_id, self.spec.share)

    def wrap(self, loader: Loader) -> Loader:
        """A loader whose models answer through this experiment (used for the control slot)."""
        def load(local_dir: Path) -> Servable:
            return ExperimentModel(loader(local_dir), self)

        return load

    def treatment_model(self) -> Servable | None:
        """The treatment's current model, or None (not loaded yet, or refused): read once per answer."""
        b = self.treatment.current
        if b is None:
            if not self._warned.is_set():
                self._warned.set()
                log.warning("experiment %s: treatment %s not ready (%s); its entities get the control's answers",
                            self.name, self.spec.source, self.treatment.last_error or "not loaded yet")
            return None
        self._warned.clear()
        return b.model

    def describe(self) -> dict[str, Any]:
        b = self.treatment.current
        return {"name": self.name, "use_case": self.spec.use_case, "treatment": self.spec.source,
                "percent": self.spec.percent, "treatment_version": b.version if b else None}


class ExperimentModel:
    """The control's model, answering each entity from the arm it is assigned to."""

    def __init__(self, control: Servable, experiment: Experiment) -> None:
        self.control = control
        self.experiment = experiment

    def _tag(self, answer: dict[str, Any], arm: str, fallback: bool) -> dict[str, Any]:
        tag: dict[str, Any] = {"name": self.experiment.name, "arm": CONTROL if fallback else arm}
        if fallback:
            tag["fallback"] = True
        return {**answer, "experiment": tag}

    def recommend(self, entity_id: str, limit: int, **options: Any) -> dict[str, Any]:
        """The assigned arm's answer; ``options`` (filters, forward) go to that arm's model."""
        arm = self.experiment.arm(entity_id)
        model = self.experiment.treatment_model() if arm == TREATMENT else None
        answer = (model or self.control).recommend(entity_id, limit, **options)
        return self._tag(answer, arm, arm == TREATMENT and model is None)

    def recommend_batch(self, entity_ids: Sequence[str], limit: int | Sequence[int] = 10) -> list[dict[str, Any]]:
        """:meth:`recommend` for many entities: each arm's entities in one batch of its model."""
        ids = [str(e) for e in entity_ids]
        limits = [int(limit)] * len(ids) if isinstance(limit, int) else [int(x) for x in limit]
        treatment = self.experiment.treatment_model()
        arms = [self.experiment.arm(e) for e in ids]
        out: list[dict[str, Any] | None] = [None] * len(ids)
        for arm, model in ((CONTROL, self.control), (TREATMENT, treatment or self.control)):
            rows = [i for i, a in enumerate(arms) if a == arm]
            if not rows:
                continue
            batch = getattr(model, "recommend_batch", None)
            answers = (batch([ids[i] for i in rows], [limits[i] for i in rows]) if batch is not None
                       else [model.recommend(ids[i], limits[i]) for i in rows])
            for i, answer in zip(rows, answers, strict=True):
                out[i] = self._tag(answer, arm, arm == TREATMENT and treatment is None)
        return out  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:  # data, model_version, ...: the control's
        if name in ("control", "experiment"):  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.control, name)


def treatment_slots(experiments: Mapping[str, Experiment]) -> list[BundleSlot]:
    return [e.treatment for e in experiments.values()]
