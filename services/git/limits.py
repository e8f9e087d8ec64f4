"""What one push may cost the receiver: bytes, object sizes, time and concurrency.

Every limit here is enforced *before* the expensive step it protects: the request
body is spooled to disk (never to memory) under a byte cap and a minimum transfer
rate, and each pack object's declared size is checked before it is inflated.
The README's "Deploys" section documents the knobs for operators.
"""

from __future__ import annotations

from dataclasses import dataclass

from .checkout import format_bytes

__all__ = ["BodyTimeout", "IntakeLimits", "IntakeRefused", "PushTooLarge"]


class IntakeRefused(OSError):
    """A push broke an intake limit; ``message`` is what the pusher is told.

    An ``OSError`` on purpose: dulwich's receive-pack reports those as an unpack
    failure instead of crashing the request.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class PushTooLarge(IntakeRefused):
    """The body, the pack or one object is larger than allowed."""


class BodyTimeout(IntakeRefused):
    """The client sent its body too slowly."""


@dataclass(frozen=True)
class IntakeLimits:
    """Bounds on one git request (README: "Deploys").

    Attributes:
        max_push_bytes: Largest request body, on the wire and after gzip inflation.
        max_object_bytes: Largest inflated object (a file, a tree, a delta's result).
        max_objects: Most objects one pack may declare.
        min_rate: Bytes per second a body must keep up, after ``grace_seconds``.
        grace_seconds: Time a body may take regardless of its rate.
        pushes_per_user: Concurrent receive-packs per user; more get a 429.
        drain_bytes: After refusing an oversized body, how much more is read and
            discarded so the client reads our answer instead of a reset.
    """

    max_push_bytes: int = 1 << 30
    max_object_bytes: int = 100 << 20
    max_objects: int = 1_000_000
    min_rate: int = 8 << 10
    grace_seconds: float = 10.0
    pushes_per_user: int = 2
    drain_bytes: int = 16 << 20

    def object_too_large(self, kind: str, size: int) -> PushTooLarge:
        """The refusal for an object whose inflated size breaks the limit."""
        return PushTooLarge(
            f"push refused: a {kind} of {format_bytes(size)} is larger than the "
            f"{format_bytes(self.max_object_bytes)} limit per file"
        )

    def push_too_large(self) -> PushTooLarge:
        """The refusal for a body or pack over ``max_push_bytes``."""
        return PushTooLarge(
            f"push refused: the push is larger than {format_bytes(self.max_push_bytes)}, "
            "the limit; push fewer or smaller files"
        )
