"""Where each followed file was read up to, saved atomically across restarts.

A position names a file by inode plus a fingerprint of its first bytes: inode numbers
are reused once a rotated file is deleted, and resuming a new file at an old offset
would silently skip its beginning.
"""

from __future__ import annotations

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
