"""The write-ahead spool: every accepted row is here before anything else happens to it.

Rows arrive already encoded (JSONCompactEachRow, no IP: the visitor hash replaced it)
and are appended as DATA records to the current segment file. Closing a batch appends
a BATCH record naming the DATA records since the previous one, and the batch is
fsync'd before it is inserted (``Batch.sync``, on the writer's thread); a stored batch
gets a DONE record. So after a crash, a stop, or a ClickHouse outage the spool
says exactly which batches exist, with the same deduplication token each time, and
which are stored: a replay sends each pending batch again with its token and
ClickHouse drops the copy of one it already has. DATA after the last BATCH record (the
batch still filling when a process died) becomes a batch when the spool is adopted.

Each process writes only its own segments, named after it and guarded by an flock on
its owner file, so a new intake can run beside the old one during a hand-over; the
segments of an owner whose lock is free are adopted and replayed. A segment is deleted
once it is closed and all its batches are stored. The spool's bytes are capped: at the
cap ``full`` is true and the intake stops reading its sources (backpressure).

Record: kind (1 byte) + payload length + CRC-32 + row count (little-endian uint32 each),
then the payload. A torn record at a segment's end (a kill mid-write) is dropped: those
rows were never accepted.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Spool", "Batch"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<cIII")
DATA, BATCH, DONE = b"D", b"B", b"F"
_SUFFIX = ".wal"


@dataclass
class Batch:
    """Rows inserted together under one deduplication token."""

    token: str
    rows: int
    size: int
    segment: _Segment
    accepted: float  # wall-clock time its first row was accepted
    _spans: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) of DATA
    _parts: list[bytes] | None = None  # the DATA payloads, while kept in memory

    @property
    def in_memory(self) -> bool:
        return self._parts is not None

    def sync(self) -> None:
        """Put the batch's records on disk (fsync), for the writer's thread to call before
        it inserts: a power cut after the insert must not find the rows unsealed in the
        spool, to be replayed under another token. Not on the loop: it takes tens of ms."""
        fd = os.open(self.segment.path, os.O_RDONLY)
        try:
            os.fsync(fd)  # flushes the file, whichever descriptor asks
        finally:
            os.close(fd)

    def data(self) -> bytes:
        """The encoded rows, from memory or re-read from the segment."""
        if self._parts is not None:
            return self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        with open(self.segment.path, "rb") as handle:
            parts = []
            for offset, length in self._spans:
                handle.seek(offset)
                parts.append(handle.read(length))
        return b"".join(parts)

    def forget_payload(self) -> None:
        """Drop the in-memory copy; ``data`` reads it back when needed."""
        self._parts = None


@dataclass(eq=False)
class _Segment:
    path: Path
    handle: object | None = None  # open for appending while it is ours and current
    size: int = 0
    pending: int = 0  # batches not yet stored
    closed: bool = False  # no more records will be appended


class Spool:
    """Segmented, fsync'd, size-capped write-ahead log of encoded rows."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int = 64 * 2**20,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[Spool], None] | None = None,
    ):
        self._dir = Path(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._owner = f"{time.time_ns():020d}-{os.getpid()}"
        self._owner_lock = None
        self._adopted: dict[str, object] = {}  # owner -> its lock handle while replaying
        self._seq = 0
        self._current: _Segment | None = None
        self._open_spans: list[tuple[int, int]] = []
        self._open_parts: list[bytes] = []
        self._open_rows = 0
        self._open_bytes = 0
        self._open_since: float | None = None
        self._batch_seq = 0
        self._bytes = 0
        self._pending = 0

    # -- state ------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes of every segment not yet deleted."""
        return self._bytes

    @property
    def capacity(self) -> int:
        return self._max_bytes

    @property
    def full(self) -> bool:
        """At the cap: stop reading until stored batches free space."""
        return self._bytes >= self._max_bytes

    @property
    def pending_batches(self) -> int:
        """Closed batches not yet stored."""
        return self._pending

    @property
    def open_rows(self) -> int:
        """Rows appended since the last batch was closed."""
        return self._open_rows

    @property
    def open_since(self) -> float | None:
        """When the first row of the filling batch was accepted."""
        return self._open_since

    # -- lifecycle --------------------------------------------------------------------

    def open(self) -> None:
        """Create the directory (owner-only) and take this process's owner lock."""
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._owner_lock = self._lock_owner(self._owner, wait=True)

    def close(self) -> None:
        """Seal this process's segment (fsync'd) and let go of every owner lock, so the
        next process adopts whatever is still pending. Nothing is appended after this."""
        with self._lock:
            if self._current is not None:
                self._seal(self._current)
                self._current = None
            for fd in [self._owner_lock, *self._adopted.values()]:
                if fd is not None:
                    os.close(fd)
            self._owner_lock = None
            self._adopted.clear()
            if not any(self._dir.glob(f"{self._owner}-*{_SUFFIX}")):
                (self._dir / f"{self._owner}.lock").unlink(missing_ok=True)

    # -- writing ----------------------------------------------------------------------

    def append(self, payload: bytes, rows: int) -> None:
        """Write encoded rows; once this returns they survive a crash of this process."""
        if not payload:
            return
        with self._lock:
            segment = self._segment()
            offset = segment.size + _HEADER.size
            self._write(segment, DATA, payload, rows)  # in the kernel: survives kill -9
            self._open_spans.append((offset, len(payload)))
            self._open_parts.append(payload)
            self._open_rows += rows
            self._open_bytes += len(payload)
            if self._open_since is None:
                self._open_since = self._clock()
        self._changed()

    def close_batch(self) -> Batch | None:
        """Seal the rows appended since the last batch into a batch, or None.

        The BATCH record is written here and made durable by ``Batch.sync`` before the
        batch is inserted; the rows are joined only when ``Batch.data`` is read. Both
        cost tens of milliseconds a batch, kept off the caller (the event loop).
        """
        with self._lock:
            if not self._open_spans:
                return None
            segment = self._current
            self._batch_seq += 1
            token = f"{self._owner}:{self._batch_seq}"
            self._write(segment, BATCH, token.encode(), self._open_rows)
            batch = Batch(
                token,
                self._open_rows,
                self._open_bytes,
                segment,
                self._open_since or self._clock(),
                self._open_spans,
                self._open_parts,
            )
            segment.pending += 1
            self._pending += 1
            self._open_spans, self._open_parts, self._open_rows = [], [], 0
            self._open_bytes = 0
            self._open_since = None
            if segment.size >= self._segment_bytes:
                # Unsynced: this batch's sync, due before its insert, flushes the file.
                self._seal(segment, sync=False)
                self._current = None
        self._changed()
        return batch

    def done(self, batch: Batch) -> None:
        """Record ``batch`` as stored; delete its segment when nothing in it is pending."""
        with self._lock:
            segment = batch.segment
            if segment.handle is not None:
                self._write(segment, DONE, batch.token.encode(), batch.rows)
            else:
                with open(segment.path, "ab") as handle:
                    size = _append_record(
                        handle.fileno(), segment.size, DONE, batch.token.encode(), batch.rows
                    )
                segment.size += size
                self._bytes += size
            segment.pending -= 1
            self._pending -= 1
            if segment.closed and segment.pending == 0:
                self._delete(segment)
        self._changed()

    # -- replay -------------------------------------------------------------------------

    def adopt(self) -> list[Batch]:
        """Pending batches of owners that are gone (this process's earlier lives), in order.

        Their unclosed DATA runs are sealed into batches first. Call at start and now
        and then: an old process handing over leaves its segments behind when it exits.
        """
        batches: list[Batch] = []
        for owner in self._owners():
            if owner == self._owner or owner in self._adopted:
                continue
            lock = self._lock_owner(owner, wait=False)
            if lock is None:
                continue  # alive: it replays its own
            self._adopted[owner] = lock
            segments = sorted(self._dir.glob(f"{owner}-*{_SUFFIX}"))
            for path in segments:
                batches.extend(self._replay(path))
            if not segments:
                self._release(owner)
        if batches:
            log.info(
                "spool adopted",
                extra={"batches": len(batches), "rows": sum(b.rows for b in batches)},
            )
        self._changed()
        return batches

    def _replay(self, path: Path) -> list[Batch]:
        segment = _Segment(path, closed=True)
        records, good_end = _read_records(path)
        if good_end < path.stat().st_size:
            log.warning("spool segment had a torn tail; dropped", extra={"file": path.name})
            with open(path, "r+b") as handle:
                handle.truncate(good_end)
        segment.size = good_end
        with self._lock:
            self._bytes += good_end
        batches: dict[str, Batch] = {}
        spans: list[tuple[int, int]] = []
        rows = 0
        mtime = path.stat().st_mtime
        for kind, offset, length, count, payload in records:
            if kind == DATA:
                spans.append((offset, length))
                rows += count
            elif kind == BATCH:
                token = payload.decode()
                batches[token] = Batch(token, rows, sum(n for _, n in spans), segment, mtime, spans)
                spans, rows = [], 0
            elif kind == DONE:
                batches.pop(payload.decode(), None)
        if spans:
            # The batch that was filling when its process died: seal it under a token
            # derived from where it starts, so a second adoption finds the same one.
            token = f"{path.stem}@{spans[0][0]}"
            with open(path, "ab") as handle:
                size = _append_record(handle.fileno(), segment.size, BATCH, token.encode(), rows)
                os.fsync(handle.fileno())
            segment.size += size
            with self._lock:
                self._bytes += size
            batches[token] = Batch(token, rows, sum(n for _, n in spans), segment, mtime, spans)
        pending = list(batches.values())
        segment.pending = len(pending)
        with self._lock:
            self._pending += len(pending)
            if not pending:
                self._delete(segment)
        return pending

    # -- internals ----------------------------------------------------------------------

    def _segment(self) -> _Segment:
        if self._current is None:
            self._seq += 1
            path = self._dir / f"{self._owner}-{self._seq:06d}{_SUFFIX}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._current = _Segment(path, os.fdopen(fd, "ab"))
        return self._current

    def _write(self, segment: _Segment, kind: bytes, payload: bytes, rows: int) -> None:
        size = _append_record(segment.handle.fileno(), segment.size, kind, payload, rows)
        segment.size += size
        self._bytes += size

    def _seal(self, segment: _Segment, sync: bool = True) -> None:
        segment.handle.flush()
        if sync:
            os.fsync(segment.handle.fileno())
        segment.handle.close()
        segment.handle = None
        segment.closed = True
        if segment.pending == 0 and not (segment is self._current and self._open_spans):
            self._delete(segment)

    def _delete(self, segment: _Segment) -> None:
        segment.path.unlink(missing_ok=True)
        self._bytes -= segment.size
        segment.size = 0
        owner = segment.path.name.rsplit("-", 1)[0]
        if owner in self._adopted and not any(self._dir.glob(f"{owner}-*{_SUFFIX}")):
            self._release(owner)

    def _owners(self) -> list[str]:
        return sorted(path.stem for path in self._dir.glob("*.lock"))

    def _lock_owner(self, owner: str, wait: bool):
        fd = os.open(self._dir / f"{owner}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _release(self, owner: str) -> None:
        fd = self._adopted.pop(owner, None)
        (self._dir / f"{owner}.lock").unlink(missing_ok=True)
        if fd is not None:
            os.close(fd)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)


def _append_record(fd: int, size: int, kind: bytes, payload: bytes, rows: int) -> int:
    """Append one whole record to the segment open as ``fd`` (``size`` bytes long now).

    Header and payload go in one system call, the payload not copied. A write that
    fails part-way (a full disk) is cut off again before the error goes on: replay
    stops at the first torn record, so a torn one left mid-file would hide every
    record appended after it. Returns the record's length.
    """
    header = _HEADER.pack(kind, len(payload), zlib.crc32(payload), rows)
    length = len(header) + len(payload)
    try:
        written = os.writev(fd, (header, payload))
        if written < length:  # short write: finish it
            rest = memoryview(header + payload)[written:]
            while rest:
                rest = rest[os.write(fd, rest) :]
    except OSError:
        os.ftruncate(fd, size)
        raise
    return length


def _read_records(path: Path) -> tuple[list[tuple[bytes, int, int, int, bytes]], int]:
    """Every intact record (kind, payload offset, length, rows, payload-if-marker) and the
    offset where intact records end."""
    records = []
    with open(path, "rb") as handle:
        data = handle.read()
    pos = 0
    while pos + _HEADER.size <= len(data):
        kind, length, crc, rows = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        payload = data[start : start + length]
        if kind not in (DATA, BATCH, DONE) or len(payload) < length or zlib.crc32(payload) != crc:
            break
        records.append((kind, start, length, rows, b"" if kind == DATA else payload))
        pos = start + length
    return records, pos
