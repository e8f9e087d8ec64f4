"""Split a byte stream into text lines as it arrives, with a cap on line length."""

from __future__ import annotations

import codecs

__all__ = ["LineSplitter"]


class LineSplitter:
    r"""Incremental UTF-8 decoding and line splitting.

    Invalid UTF-8 becomes U+FFFD, ``\r\n`` and a trailing ``\r`` are stripped, and a
    line longer than ``max_chars`` is emitted in ``max_chars`` pieces, so one huge line
    (minified JS printed by a tool) cannot grow memory or stall the live log.
    """

    def __init__(self, max_chars: int = 2000):
        """Start with an empty buffer; ``max_chars`` bounds every emitted line."""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._max = max_chars

    def feed(self, data: bytes) -> list[str]:
        """The complete lines that ``data`` finishes (possibly none)."""
        text = self._pending + self._decoder.decode(data)
        *lines, self._pending = text.split("\n")
        out: list[str] = []
        for line in lines:
            out.extend(self._pieces(line.removesuffix("\r")))
        while len(self._pending) > self._max:
            out.append(self._pending[: self._max])
            self._pending = self._pending[self._max :]
        return out

    def close(self) -> list[str]:
        """The last, unterminated line, if any."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return self._pieces(rest.removesuffix("\r")) if rest else []

    def _pieces(self, line: str) -> list[str]:
        if len(line) <= self._max:
            return [line]
        return [line[i : i + self._max] for i in range(0, len(line), self._max)]
