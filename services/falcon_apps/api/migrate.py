"""Apply the metadata store's numbered migrations with yoyo, under yoyo's lock.

Every process that opens the file runs ``apply``: the api's workers, the CLI. yoyo
records applied migrations in ``_yoyo_migration``, so a second run applies nothing, and
its lock row (``yoyo_lock``) makes a second process wait while the first migrates.
"""

from __future__ import annotations

import getpass
import logging
import re
import socket
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote

import tenacity
from yoyo import read_migrations
from yoyo.backends.core.sqlite3 import SQLiteBackend
from yoyo.connections import parse_uri
from yoyo.exceptions import LockTimeout
from yoyo.migrations import MigrationList

from services.core.errors import Unavailable

__all__ = ["MIGRATIONS_DIR", "apply", "migrations", "retry_while_locked"]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_ID = re.compile(r"\d{4}-[a-z0-9-]+")


class _SQLiteFileBackend(SQLiteBackend):
    """yoyo's SQLite backend on a plain file, waiting like our own connections do.

    yoyo's stock backend opens ``file:PATH?cache=shared`` (for in-memory databases) with
    sqlite3's 5 s default timeout. Here: the path as given, and the store's busy timeout,
    so a migration started by another process is waited for instead of failing.
    """

    def connect(self, dburi):
        """A connection to the file named in ``dburi`` (percent-quoted by ``apply``)."""
        conn = self.driver.connect(
            unquote(dburi.database),
            timeout=float(dburi.args.get("timeout", 10)),
            detect_types=self.driver.PARSE_DECLTYPES,
        )
        conn.isolation_level = None
        return conn

    def get_log_data(self, migration=None, operation="apply"):
        """yoyo's audit row, without a DNS lookup or a passwd entry for the user.

        A container may run under a uid with no name; ``getpass.getuser`` then raises.
        """
        try:
            username = getpass.getuser()
        except (KeyError, OSError):
            username = "unknown"
        return {
            "id": str(uuid.uuid1()),
            "migration_id": migration.id if migration else None,
            "migration_hash": migration.hash if migration else None,
            "username": username,
            "hostname": socket.gethostname(),
            "created_at_utc": datetime.now(UTC).replace(tzinfo=None),
            "operation": operation,
        }


def migrations() -> MigrationList:
    """The numbered migrations in ``MIGRATIONS_DIR``, in order.

    Raises:
        RuntimeError: none were found (a broken install would otherwise start on an
            empty schema).
    """
    found = read_migrations(str(MIGRATIONS_DIR))
    numbered = MigrationList([m for m in found if _MIGRATION_ID.fullmatch(m.id)])
    if not numbered:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return numbered


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def retry_while_locked(timeout: float) -> tenacity.Retrying:
    """Calls retried while SQLite says "database is locked", for up to ``timeout`` s.

    SQLite answers that at once, without waiting out the busy timeout, where waiting
    could deadlock: a connection that holds a read lock and wants to write (yoyo's
    set-up and lock row; switching the journal mode) while another process is
    writing. Trying again a moment later is the remedy.
    """
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(_is_locked),
        wait=tenacity.wait_random_exponential(multiplier=0.05, max=1.0),
        stop=tenacity.stop_after_delay(timeout),
        reraise=True,
    )


def _apply_once(path: Path, busy_timeout: float, lock_timeout: float):
    uri = f"sqlite:///{quote(str(Path(path)))}?timeout={busy_timeout}"
    backend = _SQLiteFileBackend(parse_uri(uri), "_yoyo_migration")
    try:
        backend.init_database()
        with backend.lock(timeout=lock_timeout):
            pending = backend.to_apply(migrations())
            backend.apply_migrations(pending)
        return pending
    finally:
        backend.connection.close()


def apply(path: Path, busy_timeout: float = 10.0, lock_timeout: float = 60.0) -> list[str]:
    """Bring the SQLite file at ``path`` up to the newest migration.

    Args:
        path: the SQLite file (created if missing).
        busy_timeout: seconds a statement waits for another process's write.
        lock_timeout: seconds to wait for another process's migration run.

    Returns:
        The ids of the migrations this call applied (empty when already up to date).

    Raises:
        Unavailable: another process held yoyo's lock past ``lock_timeout``.
    """
    # yoyo's set-up and lock row meet SQLite's immediate "locked" when processes start
    # together (see retry_while_locked).
    try:
        pending = retry_while_locked(lock_timeout)(_apply_once, path, busy_timeout, lock_timeout)
    except LockTimeout as exc:
        raise Unavailable(f"metadata store migration lock: {exc}") from exc
    except sqlite3.OperationalError as exc:
        raise Unavailable(f"metadata store migration failed: {exc}") from exc
    applied = [m.id for m in pending]
    if applied:
        log.info("metadata store migrated", extra={"path": str(path), "applied": applied})
    return applied
