"""The last request ids seen, so a record Bunny sends twice is counted once."""

from __future__ import annotations

__all__ = ["RecentIds"]


class RecentIds:
    """A bounded memory of request ids: always the last ``capacity``, at most twice that.

    Two generations of plain sets, checked per line on the intake's hot path: a set
    lookup and add cost a fraction of an ordered dict's move and eviction. When the
    newer generation fills, the older one is dropped whole and the newer one ages.
    """

    def __init__(self, capacity: int = 200_000):
        self._capacity = capacity
        self._new: set[str] = set()
        self._old: set[str] = set()

    def seen(self, request_id: str) -> bool:
        """Remember ``request_id``; True if it was already among the recent ones."""
        new = self._new
        if request_id in new or request_id in self._old:
            return True
        new.add(request_id)
        if len(new) >= self._capacity:
            self._old, self._new = new, set()
        return False
