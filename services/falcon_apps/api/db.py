"""The api's SQLite file: migrated on open, and connections shared by threads and processes.

One connection per process, guarded by a lock: the api's gunicorn threads share it, and
the CLI (``ecstatic admin create-user``) opens the same file from another process while
the api runs. WAL mode lets readers proceed during a write; writes take the database
lock up front (``BEGIN IMMEDIATE``) and wait up to ``busy_timeout`` for the other process.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from services.core.errors import Unavailable

from . import migrate

__all__ = ["Database", "iso", "new_id", "utc_now"]

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """The current time, timezone-aware (the default clock of every store)."""
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh 16-hex-digit id (users, tokens, sites, deploys, credentials)."""
    return secrets.token_hex(8)


def iso(moment: datetime) -> str:
    """``moment`` as the contract's UTC timestamp: ``2024-05-01T12:00:01.000Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return "locked" in message or "busy" in message


class Database:
    """A SQLite file at the newest migration, handing out transactions one at a time."""

    def __init__(self, path: Path, busy_timeout: float = 10.0):
        """Create the file (mode 0600) and its directory if needed, and migrate it.

        Args:
            path: the SQLite file.
            busy_timeout: seconds to wait for another process's write to finish.
        """
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0
        self._inherited: list[sqlite3.Connection] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Token hashes live here: readable by the service user only.
        self.path.touch(mode=0o600, exist_ok=True)
        # Numbered migrations (yoyo), under yoyo's lock: safe with another process
        # opening the same file at the same moment, and a no-op once up to date.
        migrate.apply(self.path, busy_timeout)
        with self._lock:
            self._connection()  # switches the file to WAL once, before any worker forks
        # Connect lazily from here on: a preforking server that builds the app in its
        # master then holds no connection to hand down to the workers.
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._conn_pid != os.getpid():
            # Used before a fork: SQLite connections must not be shared by two processes.
            # Keep the inherited one referenced but unused, since closing it here could
            # release locks the parent still holds.
            self._inherited.append(self._conn)
            self._conn = None
        if self._conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,  # transactions are explicit, see transaction()
                check_same_thread=False,  # shared by threads under self._lock
            )
            conn.row_factory = sqlite3.Row
            try:
                # Switching a file to WAL fails at once (no busy wait) while another
                # process writes to it, as migrations do when processes start together.
                migrate.retry_while_locked(self._busy_timeout)(
                    conn.execute, "PRAGMA journal_mode=WAL"
                )
            except sqlite3.OperationalError as exc:
                conn.close()
                if _is_busy(exc):
                    raise Unavailable("metadata store is busy, try again") from exc
                raise
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._conn, self._conn_pid = conn, os.getpid()
        return self._conn

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection inside a transaction, committed on success, rolled back on error.

        Args:
            write: take the write lock at the start, so check-then-write sequences
                cannot interleave with another process's writes.

        Raises:
            Unavailable: the file stayed locked by another process past ``busy_timeout``.
        """
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                    # Another process held the write lock past busy_timeout: a retry helps.
                    raise Unavailable("metadata store is busy, try again") from exc
                raise

    def close(self) -> None:
        """Close this process's connection; the next transaction reopens it."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def ping(self) -> bool:
        """True when the database answers a trivial query (for ``/healthz``)."""
        try:
            with self.transaction() as conn:
                return conn.execute("SELECT 1").fetchone()[0] == 1
        except Exception:  # noqa: BLE001 - health checks report, never raise
            log.warning("metadata store ping failed", exc_info=True, extra={"path": str(self.path)})
            return False
