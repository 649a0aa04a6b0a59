"""The four use cases and what each one means for tables, ids and artifact names.

Reverse use cases (``startup_developer``, ``startup_investor``): the *entity* is a startup and
the *candidates* are users of one role; events come from ``startup_interactions``.
Forward twins (``developer_startup``, ``investor_startup``): the entity is a user of one role and
the candidates are startups; events come from ``user_interactions``.

A startup's ``contact`` and a user's ``apply`` / investor ``contact`` are first moves; the other
side may answer with ``reply`` (in its own table). :attr:`UseCase.acts` are the events by which
an entity acts on a candidate (first move or answer): a pair is *mutual* when both sides acted.

Artifact names follow the legacy system: reverse use cases carry ``_reverse``
(``two_tower_reverse_v1_best.pth``, ``als_interactions_reverse.npz``); forward ones drop it.
"""

from __future__ import annotations

from dataclasses import dataclass

from startup_recs.core.errors import ConfigError


@dataclass(frozen=True)
class UseCase:
    name: str
    direction: str  # "reverse" | "forward"
    entity_kind: str  # "startup" | "developer" | "investor"
    candidate_kind: str
    interactions_table: str  # "startup_interactions" | "user_interactions"
    positive_events: tuple[str, ...]  # events that count as a positive (ranker labels, eval relevance)
    model_name: str  # KServe model name, e.g. "startup-developer"
    route: str  # legacy REST route template
    # events by which the entity acts on a candidate of its own accord or answers one: a pair is
    # *mutual* when the entity did one of its ``acts`` and the candidate one of its twin's
    acts: tuple[str, ...] = ()
    # events after which a candidate is never recommended to that entity again (already contacted):
    # the answers, the evaluation's rankings and its relevant items all use them; empty = the
    # positive events. A plain view does not exclude (data/snapshot.exclusion_events).
    exclude_events: tuple[str, ...] = ()

    @property
    def suffix(self) -> str:
        """``"_reverse"`` for reverse use cases, ``""`` for forward ones (legacy artifact names)."""
        return "_reverse" if self.direction == "reverse" else ""

    @property
    def entity_is_startup(self) -> bool:
        return self.entity_kind == "startup"

    @property
    def user_role(self) -> str:
        """The user role on the other side of the startup (developer or investor)."""
        return self.candidate_kind if self.entity_is_startup else self.entity_kind

    @property
    def excluded_by(self) -> tuple[str, ...]:
        """The events that exclude a candidate (``exclude_events``, else ``positive_events``)."""
        return self.exclude_events or self.positive_events

    def artifact(self, stem: str) -> str:
        """Legacy artifact name: ``artifact("two_tower") -> "two_tower_reverse"``."""
        return f"{stem}{self.suffix}"


USE_CASES: dict[str, UseCase] = {
    u.name: u
    for u in (
        UseCase("startup_developer", "reverse", "startup", "developer", "startup_interactions",
                ("contact", "apply_received"), "startup-developer",
                "/api/recommendations/developers/for-startup/{id}", ("contact", "reply"),
                exclude_events=("contact", "apply_received")),
        UseCase("startup_investor", "reverse", "startup", "investor", "startup_interactions",
                ("contact",), "startup-investor",
                "/api/recommendations/investors/for-startup/{id}", ("contact", "reply"),
                exclude_events=("contact",)),
        UseCase("developer_startup", "forward", "developer", "startup", "user_interactions",
                ("apply", "contact"), "developer-startup",
                "/api/recommendations/startups/for-developer/{id}", ("apply", "contact", "reply"),
                exclude_events=("apply", "contact")),
        UseCase("investor_startup", "forward", "investor", "startup", "user_interactions",
                ("contact",), "investor-startup",
                "/api/recommendations/startups/for-investor/{id}", ("contact", "reply"),
                exclude_events=("contact",)),
    )
}
REVERSE_USE_CASES = ("startup_developer", "startup_investor")
FORWARD_USE_CASES = ("developer_startup", "investor_startup")
ALL_USE_CASES = (*REVERSE_USE_CASES, *FORWARD_USE_CASES)  # what the pipeline trains by default
# The same pair of sides seen from the other one: a reverse use case and its forward twin.
TWINS: dict[str, str] = {"startup_developer": "developer_startup", "startup_investor": "investor_startup",
                         "developer_startup": "startup_developer", "investor_startup": "startup_investor"}


def twin_of(name: str) -> str:
    """The use case of the same two sides in the other direction (``startup_developer`` <->
    ``developer_startup``): the reciprocal scorer and the mutual evaluation pair them."""
    return TWINS[get_use_case(name).name]


def get_use_case(name: str) -> UseCase:
    """Look up a use case by name; a one-line :class:`ConfigError` lists the valid names."""
    try:
        return USE_CASES[name]
    except KeyError:
        raise ConfigError(
            f"unknown use case {name!r}; expected one of: {', '.join(USE_CASES)}"
        ) from None
