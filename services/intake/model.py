"""The two shapes every intake stage passes around: a parsed line, or why not."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["LogLine", "InvalidLine", "RetryLater"]


class InvalidLine(ValueError):
    """A line that cannot become a row; ``reason`` is a low-cardinality label."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LogLine:
    """One request as both producers describe it.

    ``remote_ip`` only feeds the visitor hash: it is never stored or logged, and it
    is left out of ``repr`` so a stray log call cannot leak it.
    """

    ts: datetime
    host: str
    method: str
    path: str
    status: int
    bytes: int
    referrer: str
    user_agent: str
    remote_ip: str = field(repr=False)
    country: str
    request_id: str
    source: str
    range_request: bool = False


class RetryLater(Exception):
    """A dependency (the api's host map, ClickHouse) is down: keep the line, try again."""
