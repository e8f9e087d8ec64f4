"""The deploy state machine: which states, steps and reasons exist, and which moves are legal.

``queued → building → publishing → live`` is the happy path. Any state that is not final
may also end in ``failed`` (the build or publish broke) or ``superseded`` (a newer push to
the same branch replaced it before it finished). ``live``, ``failed`` and ``superseded``
are final. Which deploy a hostname serves is a separate pointer (see ``deploys``), so a
``live`` deploy stays ``live`` after a newer one replaces it and can be restored.
"""

from __future__ import annotations

from services.core.errors import Conflict

__all__ = [
    "CONTEXTS",
    "STATES",
    "FINAL",
    "STEPS",
    "REASONS",
    "NEXT",
    "check_transition",
    "is_final",
]

CONTEXTS = ("production", "preview")
STATES = ("queued", "building", "publishing", "live", "failed", "superseded")
FINAL = frozenset({"live", "failed", "superseded"})
STEPS = ("checkout", "build", "publish", "activate", "record")
# Short codes a person can look up; the log says the rest.
REASONS = (
    "checkout_failed",
    "build_failed",
    "build_timeout",
    "rejected",
    "too_large",
    "publish_failed",
    "activate_failed",
    "superseded",
    "cancelled",
    "internal",
    "interrupted",  # the git process running it died (kill -9, crash); found at its restart
)

NEXT: dict[str, frozenset[str]] = {
    "queued": frozenset({"building", "failed", "superseded"}),
    "building": frozenset({"publishing", "failed", "superseded"}),
    "publishing": frozenset({"live", "failed", "superseded"}),
    "live": frozenset(),
    "failed": frozenset(),
    "superseded": frozenset(),
}


def is_final(state: str) -> bool:
    """True for ``live``, ``failed`` and ``superseded``: nothing follows them."""
    return state in FINAL


def check_transition(current: str, new: str) -> None:
    """Allow ``current → new`` or raise.

    Staying in the same non-final state is allowed (a retried PATCH, or one that only
    updates the step or the counts).

    Raises:
        Conflict: the move is not in ``NEXT`` (for instance out of a final state).
    """
    if new == current and not is_final(current):
        return
    if new not in NEXT[current]:
        if is_final(current):
            raise Conflict(f"deploy is {current}, a final state: it cannot become {new}")
        raise Conflict(f"a deploy cannot go from {current} to {new}")
