"""Split a syslog TCP byte stream into frames, detecting the framing per frame.

RFC 6587 allows octet counting (``LEN SP MSG``) and newline termination; Bunny does
not say which it uses, so each frame is judged on its own: a frame that opens with
digits and a space is octet-counted (no Bunny record or syslog line starts that way),
anything else runs to the next LF. Memory stays bounded: an oversized frame is
reported once and its bytes are skipped, never buffered.
"""

from __future__ import annotations

import re

from .model import InvalidLine
from .parse import MAX_LINE

__all__ = ["FrameDecoder"]

_OCTET = re.compile(rb"([1-9][0-9]{0,8}) ")
_PARTIAL_COUNT = re.compile(rb"[0-9]{1,9}\Z")


class FrameDecoder:
    """Incremental decoder: ``feed`` bytes, get complete frames back."""

    def __init__(self, max_frame: int = MAX_LINE):
        self._max = max_frame
        self._buf = bytearray()
        self._skip = 0  # bytes left of an oversized octet-counted frame
        self._discarding = False  # inside an oversized LF frame, until its LF

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | InvalidLine]:
        """Add received bytes; return the frames they complete, in order.

        An oversized frame yields one ``InvalidLine("too_long")`` in its place.
        """
        self._buf += data
        buf, out, pos = self._buf, [], 0
        while pos < len(buf):
            if self._skip:
                step = min(self._skip, len(buf) - pos)
                pos += step
                self._skip -= step
                continue
            if self._discarding:
                end = buf.find(b"\n", pos)
                if end < 0:
                    pos = len(buf)
                    break
                pos, self._discarding = end + 1, False
                continue
            match = _OCTET.match(buf, pos)
            if match:
                size, start = int(match.group(1)), match.end()
                if size > self._max:
                    out.append(InvalidLine("too_long"))
                    pos, self._skip = start, size
                    continue
                if len(buf) - start < size:
                    break
                out.append(bytes(buf[start : start + size]))
                pos = start + size
                continue
            if _PARTIAL_COUNT.match(buf, pos):
                break  # maybe an octet count whose space has not arrived yet
            end = buf.find(b"\n", pos)
            if end < 0:
                if len(buf) - pos > self._max:
                    out.append(InvalidLine("too_long"))
                    pos, self._discarding = len(buf), True
                break
            frame = bytes(buf[pos:end]).rstrip(b"\r")
            pos = end + 1
            if len(frame) > self._max:
                out.append(InvalidLine("too_long"))
            elif frame.strip():
                out.append(frame)
        del buf[:pos]
        return out
