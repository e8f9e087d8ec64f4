"""The durable spool between the syslog listener and the pipeline.

A Bunny record counts as accepted once it is written here, one canonical JSON line
each. A ``Follower`` then reads the spool exactly as it reads Caddy's log, so the
same commit-after-insert offsets give syslog records the same guarantees: an api or
ClickHouse outage, a stop or a crash loses nothing that was accepted. The spool
rotates the way Caddy's roller does (rename to ``<stem>-<time>.log``, start anew) and
the follower deletes each rotated file once all of it is stored.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from .model import LogLine

__all__ = ["Spool", "format_bunny_json"]

log = logging.getLogger(__name__)


def format_bunny_json(line: LogLine) -> bytes:
    """A ``LogLine`` as one Bunny JSON record (``parse_bunny`` reads it back)."""
    record = {
        "Timestamp": round(line.ts.timestamp() * 1000),
        "Host": line.host,
        "Method": line.method,
        "PathAndQuery": line.path,
        "Status": line.status,
        "BytesSent": line.bytes,
        "Referer": line.referrer,
        "UserAgent": line.user_agent,
        "Country": line.country,
        "RequestId": line.request_id,
        "HeaderRange": "bytes" if line.range_request else "",
        "RemoteIp": line.remote_ip,
    }
    # ensure_ascii keeps every record on one line whatever the input held.
    return json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


class Spool:
    """Append-only, size-rotated file of accepted records."""

    def __init__(
        self,
        path: Path,
        max_bytes: int = 64 * 2**20,
        on_append: Callable[[], None] | None = None,
        clock: Callable[[], int] = time.time_ns,
    ):
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._on_append = on_append
        self._clock = clock
        self._file = None

    @property
    def path(self) -> Path:
        """The file being appended to."""
        return self._path

    def append(self, lines: list[LogLine]) -> None:
        """Write records and hand them to the OS (they survive a crash of this process)."""
        if not lines:
            return
        if self._file is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._path, "ab")  # noqa: SIM115 - kept open across appends
        self._file.write(b"".join(format_bunny_json(line) for line in lines))
        self._file.flush()
        if self._file.tell() >= self._max_bytes:
            self._rotate()
        if self._on_append is not None:
            self._on_append()

    def _rotate(self) -> None:
        self.close()
        # Zero-padded nanoseconds sort by name in rotation order, like Caddy's timestamps.
        target = self._path.with_name(f"{self._path.stem}-{self._clock():020d}{self._path.suffix}")
        os.replace(self._path, target)
        # Start the new file now: the follower moves on (and removes the old one)
        # as soon as it sees a new live file.
        self._file = open(self._path, "ab")  # noqa: SIM115 - kept open across appends
        log.info("spool rotated", extra={"file": target.name})

    def close(self) -> None:
        """Flush to disk and close; the next append reopens."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
