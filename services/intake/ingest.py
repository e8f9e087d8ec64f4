"""One source's bodies through ``RowMaker`` onto the spool, with the counting.

Runs the per-line work on the event loop while it cannot block, and hands the rest of
a chunk to the intake's worker thread from the first line that needs the network (a
host-map refresh, a salt read): the loop must keep serving sockets. A source
waits here while the spool is full: that is the backpressure that stops the listener
reading sockets and the follower reading Caddy's file.

Syslog bodies whose host or salt cannot be had right now are held in memory (bounded;
past the bound the source waits) and retried; a file source instead stops at the first
such line and reads it again later, since the file still has it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor

from services.core.metrics import IntakeMetrics

from .model import InvalidLine
from .rows import RowMaker, encode
from .spool import Spool
from .writer import Writer

__all__ = ["Ingest"]

log = logging.getLogger(__name__)


class Ingest:
    """Feeds one source into the shared spool."""

    def __init__(
        self,
        source: str,
        maker: RowMaker,
        spool: Spool,
        writer: Writer,
        metrics: IntakeMetrics,
        executor: Executor,
        max_held: int = 100_000,
        retry_seconds: float = 2.0,
    ):
        self._source = source
        self._maker = maker
        self._spool = spool
        self._writer = writer
        self._metrics = metrics
        self._executor = executor
        self._max_held = max_held
        self._retry_seconds = retry_seconds
        self._held: list[tuple[bytes, float]] = []  # (body, when it first arrived)
        self._file_since: float | None = None  # when the file's held head line first came
        self._parsed = metrics.lines_parsed.labels(source)
        self._received = metrics.lines_received.labels(source)
        self._work = metrics.stage_seconds.labels("parse_enrich")
        self._spooling = metrics.stage_seconds.labels("spool")

    @property
    def held(self) -> int:
        """Bodies waiting for a dependency."""
        return len(self._held)

    async def accept(self, bodies: list[bytes]) -> None:
        """Syslog: take every body (holding those that must wait)."""
        await self._writer.wait_for_space()
        while len(self._held) >= self._max_held:
            await asyncio.sleep(self._retry_seconds)
            await self.retry_held()
        since = time.monotonic()
        held = await self._run(bodies, stop_at_hold=False, since=since)
        self._held.extend((body, since) for body in held)

    async def accept_lines(self, lines: list[bytes | InvalidLine]) -> int:
        """A file: take lines up to the first that must wait; returns how many."""
        await self._writer.wait_for_space()
        since = self._file_since or time.monotonic()
        held = await self._run(lines, stop_at_hold=True, since=since)
        self._file_since = since if held else None
        consumed = len(lines) - len(held)
        # The listener counts what it receives; a file's lines count once, when taken.
        self._received.inc(consumed)
        return consumed

    async def retry_held(self) -> None:
        """Offer held bodies again (called now and then by the service)."""
        if self._held:
            waiting, self._held = self._held, []
            # The latest arrival among them: a map fetched after it settles them all.
            since = max(first for _, first in waiting)
            held = await self._run([body for body, _ in waiting], False, since=since)
            self._held.extend((body, since) for body in held)

    async def _run(self, bodies, stop_at_hold: bool, since: float) -> list[bytes]:
        if not bodies:
            return []
        # On the loop itself while nothing needs the network (no thread hand-off per
        # read); from the first line that does, in the worker.
        held, rest = self._take(bodies, stop_at_hold, True, since)
        if rest:
            loop = asyncio.get_running_loop()
            more, _ = await loop.run_in_executor(
                self._executor, self._take, rest, stop_at_hold, False, since
            )
            held = held + more
        self._writer.rows_added()
        return held

    def _take(self, bodies, stop_at_hold: bool, inline: bool, since: float) -> tuple[list, list]:
        started = time.perf_counter()
        result = self._maker.make(bodies, stop_at_hold=stop_at_hold, inline=inline, since=since)
        encoded = time.perf_counter()
        if result.rows:
            self._spool.append(encode(result.rows), len(result.rows))
        self._work.inc(encoded - started)
        self._spooling.inc(time.perf_counter() - encoded)
        self._parsed.inc(len(result.rows))
        for reason, count in result.invalid.items():
            self._metrics.lines_invalid.labels(self._source, reason).inc(count)
        return result.held, result.rest
