"""Split a syslog TCP byte stream into frames (RFC 6587), detecting the framing per frame.

A frame that opens with ``[1-9][0-9]{0,8} SP`` is octet-counted (no syslog header and
no Bunny record starts that way); anything else runs to the next LF, one trailing CR
dropped, and empty lines are no frames at all. ``0 x`` or ten digits is an LF frame.

Fast path: a chunk in which no line starts with a digit is LF-framed throughout, so a
single ``bytes.split`` cuts it; only chunks holding an octet count take the per-frame
loop. Memory stays bounded: an incomplete frame holds at most ``max_frame`` bytes plus
its count prefix (or one CR); an oversized frame is counted once and its bytes skipped.
"""

from __future__ import annotations

import re
from collections import Counter

from .syslog_header import lf_messages, messages

__all__ = ["FrameDecoder"]

_COUNT = re.compile(rb"([1-9][0-9]{0,8}) ")
_MAYBE_COUNT = re.compile(rb"[0-9]{1,9}")  # at the end of the data: wait for more
_DIGIT = b":"  # the byte after "9": frames sorting below it may start with a digit

_LF, _OCTET = 1, 2


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes, get the complete frames back."""

    def __init__(self, max_frame: int):
        self._max = max_frame
        self._pending = bytearray()  # the start of an incomplete frame
        self._kind = 0  # what the pending bytes are: _LF, _OCTET, or 0 (a count, maybe)
        self._need = 0  # bytes of the pending octet-counted frame, count prefix included
        self._skip = 0  # bytes left of an oversized octet-counted frame
        self._discarding = False  # inside an oversized LF frame, until its LF
        self.rejected: Counter[str] = Counter()  # oversized frames, for the caller to take

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._pending)

    @property
    def at_boundary(self) -> bool:
        """Whether the bytes fed so far are a whole number of frames (none half-read)."""
        return not (self._pending or self._skip or self._discarding)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the frames they complete, in order."""
        data = self._take(data)
        return self._frames(data) if data else []

    def feed_messages(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the MSG parts of the frames they complete, in order.

        Frames without a usable MSG are counted in ``rejected`` (see ``syslog_header``).
        """
        data = self._take(data)
        if not data:
            return []
        if not data[:1].isdigit() and b"\r" not in data:
            bodies = self._lf_messages(data)
            if bodies is not None:
                return bodies
        return messages(self._frames(data), self.rejected)

    def _take(self, data: bytes) -> bytes:
        """``data`` behind what is pending, minus skipped bytes; b"" while incomplete."""
        if self._skip or self._discarding:
            data = self._drop(data)
        if self._pending:
            if not self._completes(data):
                self._pending += data
                if self._kind == _LF and len(self._pending) > self._max + 1:
                    self._too_long()
                    self._discarding = True
                return b""
            data = b"".join((self._pending, data))
            self._pending.clear()
        return data

    def _lf_messages(self, data: bytes) -> list[bytes] | None:
        """The whole chunk in one regex pass, when it is plain LF-framed RFC 5424."""
        end = data.rfind(b"\n") + 1
        if not end or data[end : end + 1].isdigit():
            return None
        bodies = lf_messages(data, end)
        if bodies is None:
            return None
        # Each frame is at most its MSG plus every header of the run (and the LFs).
        sizes = list(map(len, bodies))
        if max(sizes) + end - sum(sizes) > self._max:
            return None  # maybe an oversized frame: measure frame by frame
        if end < len(data):
            self._hold(data[end:], _LF)
        return bodies

    def _frames(self, data: bytes) -> list[bytes]:
        if data[:1].isdigit():
            return self._scan(data)
        frames = data.split(b"\n")
        tail = frames.pop()
        if b"\r" in data:
            frames = [frame[:-1] if frame.endswith(b"\r") else frame for frame in frames]
        if b"" in frames:
            frames = [frame for frame in frames if frame]
        if tail[:1].isdigit() or (
            frames and min(frames) < _DIGIT and any(frame[:1].isdigit() for frame in frames)
        ):
            return self._scan(data)  # an octet-counted frame may start inside this chunk
        if frames and len(data) > self._max + 1 and max(map(len, frames)) > self._max:
            kept = [frame for frame in frames if len(frame) <= self._max]
            self.rejected["too_long"] += len(frames) - len(kept)
            frames = kept
        if tail:
            self._hold(tail, _LF)
        return frames

    def _completes(self, data: bytes) -> bool:
        if self._kind == _OCTET:
            return len(self._pending) + len(data) >= self._need
        if self._kind == _LF:
            return b"\n" in data
        return True  # a partial count: rescan it with what came

    def _drop(self, data: bytes) -> bytes:
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return b""
            data, self._skip = data[self._skip :], 0
        if self._discarding:
            end = data.find(b"\n")
            if end < 0:
                return b""
            data, self._discarding = data[end + 1 :], False
        return data

    def _too_long(self) -> None:
        self.rejected["too_long"] += 1
        self._pending.clear()

    def _hold(self, rest: bytes, kind: int, need: int = 0) -> None:
        self._kind, self._need = kind, need
        if kind == _LF and len(rest) > self._max + 1:
            self._too_long()
            self._discarding = True
            return
        self._pending += rest

    def _scan(self, data: bytes) -> list[bytes]:
        """The per-frame loop, for chunks that hold octet-counted frames."""
        frames: list[bytes] = []
        pos, size = 0, len(data)
        while pos < size:
            if data[pos : pos + 1].isdigit():
                match = _COUNT.match(data, pos)
                if match is not None:
                    length, start = int(match.group(1)), match.end()
                    end = start + length
                    if length > self._max:
                        self.rejected["too_long"] += 1
                        self._skip = max(0, end - size)
                        pos = min(end, size)
                        continue
                    if end > size:
                        self._hold(data[pos:], _OCTET, end - pos)
                        return frames
                    frames.append(data[start:end])
                    pos = end
                    continue
                if _MAYBE_COUNT.fullmatch(data, pos):
                    self._hold(data[pos:], 0)
                    return frames
            end = data.find(b"\n", pos)
            if end < 0:
                self._hold(data[pos:], _LF)
                return frames
            frame = data[pos : end - 1] if data[end - 1 : end] == b"\r" else data[pos:end]
            pos = end + 1
            if len(frame) > self._max:
                self.rejected["too_long"] += 1
            elif frame:
                frames.append(frame)
        return frames
