"""Follow a growing log file across rotations and truncation, losing no line.

Only complete lines are consumed. Lines go to ``ingest``, which puts their rows on the
write-ahead spool and says how many it took (it stops at a line that must wait for a
dependency); the saved offset then moves past exactly those, so a crash re-reads from
the spool's point of view at most the chunk in flight, never skips. A rotated file is
deleted as soon as all of it is in the spool: Caddy's log holds visitors' IPs and is
kept no longer than it takes to ingest it. Rotation is Caddy's roller:
the live file is renamed to ``<stem>-<timestamp><suffix>`` and a new one starts, so
when the path's inode changes the old file is read to its end (by the handle we
hold, or after a restart by finding its inode among the rotated names) before the
next file is read from offset 0. A file shorter than our offset was truncated:
start it again at 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from services.core.metrics import IntakeMetrics

from .model import InvalidLine
from .offsets import HEAD_BYTES, OffsetStore, Position, fingerprint
from .parse import MAX_LINE

__all__ = ["Follower"]

log = logging.getLogger(__name__)

# Takes lines in order; returns how many it consumed (the rest must be offered again).
Ingest = Callable[[list[bytes | InvalidLine]], Awaitable[int]]


@dataclass
class _File:
    handle: BinaryIO
    inode: int
    offset: int
    head: bytes = b""
    skipping: bool = False  # inside a line longer than max_line, until its LF
    prints: dict[int, str] = field(default_factory=dict)


class Follower:
    """Reads complete lines from ``path`` and hands them to ``ingest``."""

    def __init__(
        self,
        path: Path,
        ingest: Ingest,
        offsets: OffsetStore,
        key: str,
        metrics: IntakeMetrics | None = None,
        *,
        poll_seconds: float = 0.25,
        retry_seconds: float = 2.0,
        delete_finished: bool = True,
        read_bytes: int = 2**20,
        max_line: int = MAX_LINE,
    ):
        self._path = Path(path)
        self._ingest = ingest
        self._lag = metrics.follower_lag_bytes.labels(key) if metrics is not None else None
        self._offsets = offsets
        self._key = key
        self._poll = poll_seconds
        self._retry_seconds = retry_seconds
        self._delete_finished = delete_finished
        self._read_bytes = max(read_bytes, max_line + 1)
        self._max_line = max_line
        self._cur: _File | None = None
        self._finished: list[int] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._waiting_since_logged = False

    def wake(self) -> None:
        """Read now instead of at the next poll (new data was just written)."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the current chunk, then return from ``run``."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Follow until ``stop``; I/O errors are logged and retried, never raised.

        Starts once this process holds the offsets (``OffsetStore.claim``): in a
        hand-over the new intake waits here until the old one has stopped following.
        """
        try:
            if not await self._claim():
                return
            while not self._stopping:
                retry = False
                try:
                    progressed, retry = await self._step()
                except OSError as exc:
                    log.warning("follow failed", extra={"file": self._path.name, "error": str(exc)})
                    self._close()
                    progressed = False
                if retry:
                    if not self._waiting_since_logged:
                        log.warning("waiting for a dependency", extra={"file": self._path.name})
                        self._waiting_since_logged = True
                    await self._sleep(self._retry_seconds)
                elif not progressed:
                    await self._sleep(self._poll)
        finally:
            self._close()
            self._offsets.release()

    async def _claim(self) -> bool:
        waiting = False
        while not self._offsets.claim():
            if self._stopping:
                return False
            if not waiting:
                log.info("another process follows the file", extra={"file": self._path.name})
                waiting = True
            await self._sleep(self._poll)
        return True

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    def _close(self) -> None:
        if self._cur is not None:
            self._cur.handle.close()
            self._cur = None

    # -- commits ----------------------------------------------------------------

    def committed(self, position: Position) -> None:
        """Every line up to ``position`` is in the spool: save it, drop finished files."""
        self._offsets.save(self._key, position, str(self._path))
        if self._delete_finished:
            done = [inode for inode in self._finished if inode != position.inode]
            for inode in done:
                self._finished.remove(inode)
                for path in self._rotated():
                    if _inode(path) == inode:
                        path.unlink(missing_ok=True)
                        log.info("finished file removed", extra={"file": path.name})

    def _position(self, cur: _File, end: int) -> Position:
        head_len = min(HEAD_BYTES, end)
        if len(cur.head) < head_len:
            cur.head = os.pread(cur.handle.fileno(), HEAD_BYTES, 0)
        if head_len not in cur.prints:
            cur.prints[head_len] = fingerprint(cur.head[:head_len])
        return Position(cur.inode, end, head_len, cur.prints[head_len])

    # -- reading ----------------------------------------------------------------

    async def _step(self) -> tuple[bool, bool]:
        """One read; returns (made progress, must wait for a dependency)."""
        if self._cur is None:
            self._cur = self._open_start()
            if self._cur is None:
                return False, False
        cur = self._cur
        # Checked before reading: a line written just before a rotation is read below.
        rotated = self._rotated_away(cur)
        size = os.fstat(cur.handle.fileno()).st_size
        if size < cur.offset or (
            cur.head and os.pread(cur.handle.fileno(), len(cur.head), 0) != cur.head
        ):
            log.warning("file truncated, reading from the start", extra={"file": self._path.name})
            cur.offset, cur.head, cur.skipping, cur.prints = 0, b"", False, {}
            self.committed(self._position(cur, 0))
            return True, False
        if self._lag is not None:
            self._lag.set(max(0, size - cur.offset))
        data = (
            os.pread(cur.handle.fileno(), self._read_bytes, cur.offset)
            if size > cur.offset
            else b""
        )
        items, consumed = self._split(cur, data)
        if items:
            return True, await self._feed(cur, items)
        if consumed:
            cur.offset += consumed  # inside an over-long line: skip without buffering
            return True, False
        if not rotated:
            return False, False
        if data and not cur.skipping:
            # A rotated file ending without LF: its last line will never complete.
            await self._feed(cur, [(InvalidLine("partial_line"), cur.offset + len(data))])
        nxt = self._next_file(cur)
        if nxt is None:
            return False, False
        log.info("following next file", extra={"file": self._path.name})
        self._finished.append(cur.inode)
        cur.handle.close()
        self._cur = nxt
        self.committed(self._position(nxt, 0))
        return True, False

    def _split(self, cur: _File, data: bytes) -> tuple[list[tuple[bytes | InvalidLine, int]], int]:
        items: list[tuple[bytes | InvalidLine, int]] = []
        start = 0
        end = cur.offset
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            end = cur.offset + newline + 1
            if cur.skipping:
                items.append((InvalidLine("too_long"), end))
                cur.skipping = False
            elif newline - start > self._max_line:
                items.append((InvalidLine("too_long"), end))
            else:
                items.append((data[start:newline], end))
            start = newline + 1
        if not items and len(data) > self._max_line:
            cur.skipping = True
            return items, len(data)
        if not items and cur.skipping:
            return items, len(data)
        return items, 0

    async def _feed(self, cur: _File, items: list[tuple[bytes | InvalidLine, int]]) -> bool:
        """Hand lines over; True when some must wait for a dependency (retry later)."""
        consumed = await self._ingest([item for item, _ in items])
        if consumed:
            # One position per chunk: the fingerprint work is per chunk, not per line.
            cur.offset = items[consumed - 1][1]
            self.committed(self._position(cur, cur.offset))
            self._waiting_since_logged = False
        return consumed < len(items)

    # -- files --------------------------------------------------------------------

    def _rotated(self) -> list[Path]:
        """Rotated siblings (``<stem>-*<suffix>``), oldest first by name."""
        pattern = f"{self._path.stem}-*{self._path.suffix}"
        return sorted(self._path.parent.glob(pattern), key=lambda path: path.name)

    def _rotated_away(self, cur: _File) -> bool:
        return _inode(self._path) != cur.inode

    def _open(self, path: Path, offset: int) -> _File | None:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - held open across steps
        except FileNotFoundError:
            return None
        return _File(handle, os.fstat(handle.fileno()).st_ino, offset)

    def _open_start(self) -> _File | None:
        saved = self._offsets.load(self._key)
        if saved is not None:
            for path in [self._path, *self._rotated()]:
                if _inode(path) != saved.inode or (cur := self._open(path, 0)) is None:
                    continue
                head = os.pread(cur.handle.fileno(), saved.head_len, 0)
                if len(head) == saved.head_len and fingerprint(head) == saved.head:
                    size = os.fstat(cur.handle.fileno()).st_size
                    cur.offset = saved.offset if size >= saved.offset else 0
                    return cur
                cur.handle.close()
            if _inode(self._path) is None:
                return None  # wait: the file we were reading may yet appear
            # The file we were in is gone (deleted by the roller while we were down): every
            # rolled file still here came after it, so none of them has been read yet.
            rotated = self._rotated()
            start = rotated[0] if rotated else self._path
            log.warning(
                "saved position not found, starting from the oldest file",
                extra={"file": start.name},
            )
            return self._open(start, 0)
        return self._open(self._path, 0)

    def _next_file(self, cur: _File) -> _File | None:
        rotated = self._rotated()
        names = [path.name for path in rotated if _inode(path) == cur.inode]
        if names:
            later = [path for path in rotated if path.name > names[0]]
        else:
            # Our file is gone (compressed or deleted): go by modification time.
            mtime = os.fstat(cur.handle.fileno()).st_mtime_ns
            later = [path for path in rotated if _mtime(path) > mtime]
        for path in [*later, self._path]:
            inode = _inode(path)
            if inode is not None and inode != cur.inode:
                return self._open(path, 0)
        return None


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return -1
