"""Batches from the spool into ClickHouse, in order, each under its deduplication token.

A batch closes when it holds ``batch_rows`` rows, when its first row has waited
``flush_seconds``, or, once it holds a tenth of ``batch_rows``, when the sources pause
(no rows for ``PAUSE_SECONDS``): the end of a burst is stored at once instead of after
the age, while a trickle still waits for the age, so it never makes one part per line.
Inserts run one at a time, oldest first; a failing storage (server
unreachable, 5xx, timeouts; a full or read-only volume on the embedded engine) is
retried with capped exponential backoff for as long as it takes, while new rows keep
going to the spool until its cap stops the sources. Only a batch ClickHouse refuses as
data (a parse error: a row no column can hold) is split to find the bad rows, which are
counted and dropped; every other error keeps the rows.

At most ``memory_batches`` closed batches keep their rows in memory; older ones are
read back from the spool when their turn comes, so memory stays flat through an outage.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from services.core.intake_config import BATCH_ROWS
from services.core.metrics import IntakeMetrics

from .spool import Batch, Spool

__all__ = ["Writer", "is_data_error"]

log = logging.getLogger(__name__)

Insert = Callable[[bytes, str], None]  # (JSONCompactEachRow rows, dedup token)

# ClickHouse error codes that mean "this data cannot be parsed into these columns".
_DATA_ERRORS = frozenset((6, 26, 27, 38, 41, 53, 69, 70, 72, 117))
_CODE = re.compile(r"Code: (\d+)")

# No rows for this long and the sources have paused: a steady stream adds rows every
# few milliseconds (one read of a socket or a file), so this is a gap, not a lull.
PAUSE_SECONDS = 0.05


def is_data_error(exc: BaseException) -> bool:
    """True when ClickHouse refused the rows themselves, not when it could not take them."""
    match = _CODE.search(str(exc))
    return bool(match) and int(match.group(1)) in _DATA_ERRORS


class _Stopping(Exception):
    pass


class Writer:
    """Owns batch closing and inserting for one spool."""

    def __init__(
        self,
        spool: Spool,
        insert: Insert,
        metrics: IntakeMetrics,
        batch_rows: int = BATCH_ROWS,
        flush_seconds: float = 1.0,
        memory_batches: int = 4,
        backoff: tuple[float, float] = (0.5, 30.0),
        adopt_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ):
        self._spool = spool
        self._insert = insert
        self._metrics = metrics
        self._batch_rows = batch_rows
        self._flush_seconds = flush_seconds
        self._memory_batches = memory_batches
        self._backoff = backoff
        self._adopt_seconds = adopt_seconds
        self._clock = clock
        self._queue: deque[Batch] = deque()
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._stopping = asyncio.Event()
        self._deadline: float | None = None
        self._failing_since: float | None = None
        self._next_adopt = 0.0
        self._pause_rows = max(1, batch_rows // 10)
        self._last_added = 0.0

    # -- what producers call ---------------------------------------------------------

    def rows_added(self) -> None:
        """A producer appended rows: close the batch if it is full."""
        self._last_added = self._clock()
        if self._spool.open_rows >= self._batch_rows:
            self._close_batch()

    async def wait_for_space(self) -> None:
        """Return once the spool is under its cap (backpressure on the sources)."""
        if not self._spool.full:
            return
        started = time.perf_counter()
        log.warning("spool full, pausing the sources", extra={"bytes": self._spool.bytes})
        while self._spool.full and self._deadline is None:
            self._space.clear()
            await self._space.wait()
        self._metrics.backpressure_seconds.inc(time.perf_counter() - started)

    def failing_for(self) -> float:
        """Seconds since inserts started failing (0 while they succeed)."""
        return 0.0 if self._failing_since is None else self._clock() - self._failing_since

    @property
    def unstored_rows(self) -> int:
        return self._spool.open_rows + sum(batch.rows for batch in self._queue)

    def close(self, deadline: float) -> None:
        """Seal what is filling, insert what can be inserted before ``deadline`` (wall
        clock), leave the rest in the spool for the next process."""
        self._deadline = deadline
        self._stopping.set()
        self._wake.set()
        self._space.set()

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Close batches on age or size and insert them until closed."""
        self._queue.extend(self._spool.adopt())
        while True:
            self._gauges()
            if self._deadline is not None:
                self._close_batch()
                if not self._queue or self._clock() >= self._deadline:
                    break
            if self._clock() >= self._next_adopt:
                self._next_adopt = self._clock() + self._adopt_seconds
                self._queue.extend(self._spool.adopt())
            if not self._queue:
                await self._wait_for_batch()
                continue
            try:
                await self._store(self._queue[0])
            except _Stopping:
                break
            self._queue.popleft()
            self._space.set()
        self._spool.close()
        self._gauges()
        if self._queue or self._spool.open_rows:
            log.warning(
                "intake stopped with rows left in the spool",
                extra={"rows": self.unstored_rows, "batches": len(self._queue)},
            )

    async def _wait_for_batch(self) -> None:
        since, now = self._spool.open_since, self._clock()
        if since is None:
            timeout = self._flush_seconds
        else:
            timeout = self._flush_seconds - (now - since)
            if self._spool.open_rows >= self._pause_rows:
                timeout = min(timeout, PAUSE_SECONDS - (now - self._last_added))
            if timeout <= 0:
                self._close_batch()
                return
        await _wait(self._wake, max(0.01, min(timeout, 0.5)))
        self._wake.clear()

    def _close_batch(self) -> None:
        batch = self._spool.close_batch()
        if batch is None:
            return
        self._queue.append(batch)
        in_memory = [b for b in self._queue if b.in_memory]
        for old in in_memory[: max(0, len(in_memory) - self._memory_batches)]:
            old.forget_payload()
        self._wake.set()

    async def _store(self, batch: Batch) -> None:
        data = await self._load(batch)
        dropped = await self._insert_parts(data, batch.token, batch.rows)
        self._failing_since = None
        self._spool.done(batch)
        self._metrics.batch_rows.observe(batch.rows)
        self._metrics.rows_inserted.inc(batch.rows - dropped)
        self._metrics.last_insert.set_to_current_time()

    async def _load(self, batch: Batch) -> bytes:
        """The batch's rows, on disk first (fsync) and read back if need be; a disk that
        fails (a full or failing volume) is retried with the inserts' backoff, never the
        end of the writer."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(OSError),
            wait=wait_exponential_jitter(multiplier=self._backoff[0], max=self._backoff[1]),
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if self._deadline is not None and self._clock() >= self._deadline:
                    raise _Stopping
                data = await asyncio.to_thread(_durable_data, batch)
        return data

    async def _insert_parts(self, data: bytes, token: str, rows: int) -> int:
        """Insert ``data``; returns how many rows ClickHouse refused as data (dropped)."""
        try:
            await self._retrying(data, token)
            return 0
        except _DataRefused as refused:
            lines = data.splitlines(keepends=True)
            if len(lines) == 1:
                log.error("row cannot be stored; dropped", extra={"error": refused.message})
                self._metrics.lines_invalid.labels("storage", "unstorable_row").inc()
                return 1
            half = len(lines) // 2
            # Sub-tokens are derived from the batch's, so a replay splits the same way.
            first = await self._insert_parts(b"".join(lines[:half]), f"{token}/a", half)
            second = await self._insert_parts(b"".join(lines[half:]), f"{token}/b", rows - half)
            return first + second

    async def _retrying(self, data: bytes, token: str) -> None:
        retrying = AsyncRetrying(
            # Only errors of the storage: never a cancellation (a stopping loop) or ours.
            retry=retry_if_exception(
                lambda exc: (
                    isinstance(exc, Exception) and not isinstance(exc, _DataRefused | _Stopping)
                )
            ),
            wait=wait_exponential_jitter(multiplier=self._backoff[0], max=self._backoff[1]),
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if self._deadline is not None and self._clock() >= self._deadline:
                    raise _Stopping
                started = time.perf_counter()
                try:
                    await asyncio.to_thread(self._insert, data, token)
                except Exception as exc:  # noqa: BLE001 - classified just below
                    self._metrics.insert_failures.inc()
                    if is_data_error(exc):
                        raise _DataRefused(str(exc)[:300]) from exc
                    if self._failing_since is None:
                        self._failing_since = self._clock()
                    raise
                elapsed = time.perf_counter() - started
                self._metrics.insert_duration.observe(elapsed)
                self._metrics.stage_seconds.labels("insert").inc(elapsed)

    def _before_sleep(self, state) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "storing a batch failed, retrying",
            extra={"error": type(exc).__name__, "attempt": state.attempt_number},
        )
        if self._deadline is not None and self._clock() >= self._deadline:
            raise _Stopping

    async def _sleep(self, seconds: float) -> None:
        # A stop cuts a backoff short: the next attempt then sees the deadline.
        self._gauges()
        if self._deadline is not None:  # stopping: still back off, never past the deadline
            await asyncio.sleep(max(0.0, min(seconds, self._deadline - self._clock())))
            return
        await _wait(self._stopping, seconds)

    def _gauges(self) -> None:
        spool = self._spool
        self._metrics.spool_batches.set(len(self._queue))
        self._metrics.spool_bytes.set(spool.bytes)
        self._metrics.spool_capacity_bytes.set(spool.capacity)
        self._metrics.buffered_rows.set(self.unstored_rows)
        oldest = self._queue[0].accepted if self._queue else spool.open_since
        self._metrics.oldest_unstored_age.set(0 if oldest is None else self._clock() - oldest)


def _durable_data(batch: Batch) -> bytes:
    batch.sync()  # before the insert, never after it
    return batch.data()


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``. Not ``wait_for``: on Python 3.11 it can
    swallow a cancellation that arrives as its timeout fires, and the writer then never
    stops."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


class _DataRefused(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
