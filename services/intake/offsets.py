"""Where each followed file was read up to, saved atomically across restarts.

A position names a file by inode plus a fingerprint of its first bytes: inode numbers
are reused once a rotated file is deleted, and resuming a new file at an old offset
would silently skip its beginning.

Only one process at a time may move the offsets (``claim``): during a hand-over the old
and the new intake run side by side, and two followers reading from one saved offset
would both store the same lines.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Position", "OffsetStore", "HEAD_BYTES", "fingerprint"]

log = logging.getLogger(__name__)
HEAD_BYTES = 64


def fingerprint(head: bytes) -> str:
    """The fingerprint stored for a file's first ``len(head)`` bytes."""
    return hashlib.sha256(head).hexdigest()


@dataclass(frozen=True)
class Position:
    """The end of the last consumed line: ``offset`` bytes into file ``inode``."""

    inode: int
    offset: int
    head_len: int
    head: str


class OffsetStore:
    """A JSON file of named positions, replaced atomically on every save."""

    def __init__(self, path: Path):
        self._path = Path(path)
        self._positions: dict[str, dict] | None = None
        self._lock: int | None = None  # the claim's file descriptor while held

    def claim(self) -> bool:
        """Take the sole right to follow (an flock on ``<file>.lock``); False while another
        process holds it. The lock goes with the process (or ``release``), and whoever
        takes it next reads the positions afresh: what the previous holder saved last."""
        if self._lock is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path.with_name(self._path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock, self._positions = fd, None
        return True

    def release(self) -> None:
        """Let the next process claim the offsets."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _all(self) -> dict[str, dict]:
        if self._positions is None:
            try:
                data = json.loads(self._path.read_text())
                self._positions = data if isinstance(data, dict) else {}
            except FileNotFoundError:
                self._positions = {}
            except (OSError, ValueError):
                # A corrupt file cannot be trusted to resume from: start over, loudly.
                log.error("offsets unreadable, starting over", extra={"file": str(self._path)})
                self._positions = {}
        return self._positions

    def load(self, key: str) -> Position | None:
        """The saved position for ``key``, or None."""
        raw = self._all().get(key)
        try:
            return Position(**{name: raw[name] for name in Position.__dataclass_fields__})
        except (TypeError, KeyError):
            return None

    def save(self, key: str, position: Position, path: str = "") -> None:
        """Record ``position`` for ``key`` durably (write, fsync, rename)."""
        positions = self._all()
        positions[key] = {**asdict(position), "path": path}
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        with open(tmp, "w") as out:
            json.dump(positions, out, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self._path)
