"""The last request ids seen, so a record Bunny sends twice is counted once."""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["RecentIds"]


class RecentIds:
    """A bounded first-in first-out memory of request ids."""

    def __init__(self, capacity: int = 200_000):
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, request_id: str) -> bool:
        """Remember ``request_id``; True if it was already among the recent ones."""
        ids = self._ids
        if request_id in ids:
            return True
        ids[request_id] = None
        if len(ids) > self._capacity:
            ids.popitem(last=False)
        return False
