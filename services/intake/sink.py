"""Batching ClickHouse writer that tells each producer what is safely stored.

Producers add entries ``(row or None, commit, token)`` in order. A batch is inserted
every ``flush_seconds`` or as soon as ``batch_rows`` rows wait; after a successful
insert each producer's ``commit`` gets the last token of its entries in that batch,
so a file offset only moves past lines whose rows are in ClickHouse. A row-less
entry is a marker (an invalid line, a file switch): it commits with its batch.
A failed insert keeps the batch at the head and is retried with backoff; while rows
pile up past ``max_buffered`` producers wait, which stops them reading.

One bad row must not stall every row behind it: when encoding a batch fails (a value no
column can hold), the batch is halved and retried at once until the row fails alone,
and that row is counted and dropped. Errors from the storage itself never drop rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from services.core.metrics import IntakeMetrics

__all__ = ["Sink", "Entry"]

log = logging.getLogger(__name__)

Commit = Callable[[Any], None]
# Errors clickhouse-connect raises while serialising a row, i.e. the data's fault.
_ROW_ERRORS = (ValueError, TypeError, OverflowError)
Entry = tuple[tuple | None, Commit, Any]


class Sink:
    """Collects rows from several producers and inserts them in batches."""

    def __init__(
        self,
        insert: Callable[[list[tuple]], None],
        metrics: IntakeMetrics,
        batch_rows: int = 5000,
        flush_seconds: float = 1.0,
        max_buffered: int | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        clock: Callable[[], float] = time.monotonic,
    ):
        self._insert = insert
        self._metrics = metrics
        self._limit = batch_rows  # rows per attempt; halved while hunting a bad row
        self._retry_now = False
        self._batch_rows = batch_rows
        self._flush_seconds = flush_seconds
        self._max_buffered = max_buffered or max(4 * batch_rows, 10_000)
        self._backoff = backoff
        self._clock = clock
        self._entries: deque[Entry] = deque()
        self._rows = 0
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._closing = asyncio.Event()
        self._deadline: float | None = None
        self._failing_since: float | None = None

    @property
    def buffered_rows(self) -> int:
        """Rows waiting for an insert."""
        return self._rows

    def failing_for(self) -> float:
        """Seconds since inserts started failing (0 while they succeed)."""
        return 0.0 if self._failing_since is None else self._clock() - self._failing_since

    async def add(self, entries: Sequence[Entry]) -> None:
        """Queue entries in order; waits while too many rows are buffered."""
        for entry in entries:
            row, commit, _ = entry
            if row is None and self._entries:
                last = self._entries[-1]
                if last[0] is None and last[1] == commit:
                    self._entries[-1] = entry  # consecutive markers: only the last matters
                    continue
            self._entries.append(entry)
            self._rows += row is not None
        self._metrics.buffered_rows.set(self._rows)
        if self._rows >= self._batch_rows:
            self._wake.set()
        while self._rows >= self._max_buffered and self._deadline is None:
            self._space.clear()
            self._wake.set()
            await self._space.wait()

    def close(self, deadline: float) -> None:
        """Ask ``run`` to flush everything and return, giving up at ``deadline`` (clock time)."""
        self._deadline = deadline
        self._closing.set()
        self._wake.set()
        self._space.set()

    async def _wait(self, event: asyncio.Event, seconds: float) -> None:
        if self._deadline is not None:
            seconds = min(seconds, self._deadline - self._clock())
        try:
            await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            pass

    async def run(self) -> None:
        """Flush on time or size until closed and empty (or past the close deadline)."""
        delay = 0.0
        while True:
            if self._deadline is not None and (
                not self._entries or self._clock() >= self._deadline
            ):
                break
            if delay and self._closing.is_set():
                # Stopping: still back off (a failing storage must not be hammered), but
                # never past the deadline.
                await asyncio.sleep(max(0.0, min(delay, self._deadline - self._clock())))
            elif delay:
                # Backing off: only a stop cuts the wait short, not more rows arriving.
                await self._wait(self._closing, delay)
            elif self._deadline is None:
                await self._wait(self._wake, self._flush_seconds)
                self._wake.clear()
            if not self._entries:
                continue
            self._retry_now = False
            ok = await self._flush_batch()
            if ok or self._retry_now:
                delay = 0.0
            else:
                delay = min(max(delay * 2, self._backoff[0]), self._backoff[1])
        if self._entries:
            log.warning("intake stopped with rows not stored", extra={"rows": self._rows})

    async def _flush_batch(self) -> bool:
        count = rows = 0
        for row, _, _ in self._entries:
            if row is not None:
                if rows == self._limit:
                    break
                rows += 1
            count += 1
        batch = [self._entries[i] for i in range(count)]
        payload = [row for row, _, _ in batch if row is not None]
        if payload:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self._insert, payload)
            except _ROW_ERRORS as exc:
                # Raised while encoding rows, before anything is sent: some row cannot be
                # stored at all. Halve until it stands alone, then drop just that row.
                self._metrics.insert_failures.inc()
                if len(payload) > 1:
                    self._limit = max(1, len(payload) // 2)
                    self._retry_now = True
                    return False
                log.error("row cannot be stored; dropped", extra={"error": repr(exc)[:300]})
                self._metrics.lines_invalid.labels("storage", "unstorable_row").inc()
            except Exception as exc:  # noqa: BLE001 - storage trouble: keep the rows, retry
                self._metrics.insert_failures.inc()
                if self._failing_since is None:
                    self._failing_since = self._clock()
                log.warning(
                    "insert failed", extra={"rows": len(payload), "error": type(exc).__name__}
                )
                return False
            else:
                self._metrics.insert_duration.observe(time.perf_counter() - started)
                self._metrics.rows_inserted.inc(len(payload))
                self._metrics.last_insert.set_to_current_time()
        self._failing_since = None
        self._limit = self._batch_rows
        for _ in range(count):
            self._entries.popleft()
        self._rows -= sum(row is not None for row, _, _ in batch)
        self._metrics.buffered_rows.set(self._rows)
        self._space.set()
        self._commit(batch)
        return True

    @staticmethod
    def _commit(batch: list[Entry]) -> None:
        last: dict[Commit, Any] = {}
        for _, commit, token in batch:
            last[commit] = token
        for commit, token in last.items():
            try:
                commit(token)
            except Exception:  # noqa: BLE001 - a failed offset save re-reads later, never loses
                log.exception("commit callback failed")
