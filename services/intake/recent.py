"""The last request ids seen, so a record Bunny sends twice is counted once."""

from __future__ import annotations

import threading

__all__ = ["RecentIds"]


class RecentIds:
    """A bounded memory of request ids: always the last ``capacity``, at most twice that.

    Two generations of plain sets, checked once per call of ``RowMaker.make`` for all of
    its rows: a few set operations in C instead of a Python call per line. When the
    newer generation fills, the older one is dropped whole and the newer one ages.
    """

    def __init__(self, capacity: int = 200_000):
        self._capacity = capacity
        self._new: set[str] = set()
        self._old: set[str] = set()
        # The loop and the intake's worker thread both make rows: check-and-remember is
        # one step, or two copies of a record arriving at once could both pass.
        self._lock = threading.Lock()

    def duplicates(self, ids: list[str]) -> list[int]:
        """Remember ``ids``; return the indexes of those seen before (earlier calls, or
        earlier in ``ids``). An empty id is never a duplicate."""
        batch = set(ids)
        batch.discard("")
        with self._lock:
            new, old = self._new, self._old
            before = (batch & new) | (batch & old) if new or old else ()
            found: list[int] = []
            if before or len(batch) != len(ids) - ids.count(""):
                first: set[str] = set()
                for index, request_id in enumerate(ids):
                    if not request_id:
                        continue
                    if request_id in before or request_id in first:
                        found.append(index)
                    else:
                        first.add(request_id)
            new |= batch
            if len(new) >= self._capacity:
                self._old, self._new = new, set()
        return found
