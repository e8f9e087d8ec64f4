"""The api's metadata store: users, token hashes, sites and hostnames; deploys beside it.

Domain operations over the SQLite file in ``db``. Ownership checks live here, inside
the same transaction as the write they guard. Deploys, push credentials and build logs
have their own small stores over the same database: ``store.deploys``,
``store.credentials`` and ``store.logs``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from services.core.auth import hash_token, new_token, tokens_equal
from services.core.errors import BadRequest, Conflict, NotFound, Unavailable

from .credentials import CredentialStore, new_credential
from .db import Database, iso, new_id, utc_now
from .deploys import DEPLOY_FIELDS, DeployStore, require_site
from .logs import DeployLogStore, LogLimits
from .previews import PreviewStore
from .validate import is_site_name, is_user_name

__all__ = ["MetadataStore"]

log = logging.getLogger(__name__)

_INSERT_SITE = (
    "INSERT INTO sites (id, name, user_id, created_at) VALUES (:id, :name, :user_id, :created_at)"
)
# The live production deploy is the one the site's pointer names, never the newest.
_SITE_SELECT = (
    "SELECT s.id, s.name, s.user_id, s.created_at, "
    + ", ".join(f"d.{c} AS d_{c}" for c in DEPLOY_FIELDS)
    + " FROM sites s LEFT JOIN deploys d ON d.id = s.live_deploy_id"
)
# Writing last_used_at on every request would make each read a write; once a minute is enough.
_TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


def _site(row: sqlite3.Row, previews: list[dict[str, Any]]) -> dict[str, Any]:
    site = {key: row[key] for key in ("id", "name", "user_id", "created_at")}
    live = None
    if row["d_id"] is not None:
        live = {c: row[f"d_{c}"] for c in DEPLOY_FIELDS}
        live["step_seconds"] = json.loads(live["step_seconds"] or "{}")
        live["current"] = True
    site["live_deploy"] = live
    site["previews"] = previews
    return site


def _previews_by_site(conn: sqlite3.Connection, site_ids: list[str]) -> dict[str, list]:
    return {site_id: PreviewStore.list(conn, site_id) for site_id in site_ids}


class MetadataStore:
    """Users, tokens, sites and hostnames in one SQLite file, and the stores beside them."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], datetime] = utc_now,
        id_factory: Callable[[], str] = new_id,
        token_factory: Callable[[], str] = new_token,
        busy_timeout: float = 10.0,
        credential_factory: Callable[[], str] = new_credential,
        log_limits: LogLimits = LogLimits(),
    ):
        """Open (creating and migrating if needed) the database at ``path``.

        Args:
            path: the SQLite file; its directory is created if missing.
            clock: returns the current time as an aware datetime.
            id_factory: returns a fresh 16-hex-digit id for users, tokens, sites, deploys.
            token_factory: returns a fresh raw API token.
            busy_timeout: seconds to wait for another process's write to finish.
            credential_factory: returns a fresh raw push credential.
            log_limits: caps of each deploy's build log.
        """
        self._db = Database(path, busy_timeout)
        self._clock = clock
        self._id_factory = id_factory
        self._token_factory = token_factory
        self.deploys = DeployStore(self._db, clock, id_factory)
        self.credentials = CredentialStore(self._db, clock, id_factory, credential_factory)
        self.logs = DeployLogStore(self._db, log_limits)

    def close(self) -> None:
        """Close this process's connection; the next call reopens it."""
        self._db.close()

    def ping(self) -> bool:
        """True when the database answers a trivial query (for ``/healthz``)."""
        return self._db.ping()

    # -- users and tokens --
    def create_user(self, name: str) -> tuple[dict[str, Any], str]:
        """Create a user with a first API token.

        Returns:
            The user (``id``, ``name``, ``created_at``) and the raw token, which is
            shown once and stored only as its hash.

        Raises:
            BadRequest: the name is not ``^[a-z0-9][a-z0-9_.-]{0,63}$``.
            Conflict: the name is taken.
        """
        if not is_user_name(name):
            raise BadRequest(
                "user name must be 1-64 characters of a-z, 0-9, '_', '.' and '-', "
                "starting with a letter or digit"
            )
        user = {"id": self._id_factory(), "name": name, "created_at": iso(self._clock())}
        try:
            with self._db.transaction(write=True) as conn:
                conn.execute(
                    "INSERT INTO users (id, name, created_at) VALUES (:id, :name, :created_at)",
                    user,
                )
                token = self._insert_token(conn, user["id"])
        except sqlite3.IntegrityError as exc:
            if "users.name" not in str(exc):
                raise
            raise Conflict(f"user name {name!r} is taken") from exc
        log.info("user created", extra={"user_id": user["id"], "user_name": name})
        return user, token

    def create_token(self, user_id: str) -> str:
        """A new raw API token for an existing user (stored only as its hash).

        Raises:
            NotFound: no such user.
        """
        with self._db.transaction(write=True) as conn:
            if conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone() is None:
                raise NotFound(f"user {user_id} not found")
            return self._insert_token(conn, user_id)

    def _insert_token(self, conn: sqlite3.Connection, user_id: str) -> str:
        token = self._token_factory()
        conn.execute(
            "INSERT INTO tokens (id, user_id, token_hash, created_at) VALUES (?, ?, ?, ?)",
            (self._id_factory(), user_id, hash_token(token), iso(self._clock())),
        )
        return token

    def user_for_token(self, token: str) -> dict[str, Any] | None:
        """The user (``id``, ``name``, ``created_at``) a raw token belongs to, or None."""
        wanted = hash_token(token)
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT t.id AS token_id, t.token_hash, t.last_used_at, u.id, u.name, u.created_at"
                " FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
                (wanted,),
            ).fetchone()
        # The index lookup is by hash; the final check is constant-time all the same.
        if row is None or not tokens_equal(row["token_hash"], wanted):
            return None
        now = self._clock()
        if row["last_used_at"] is None or row["last_used_at"] < iso(now - _TOKEN_TOUCH_INTERVAL):
            self._touch_token(row["token_id"], now)
        return {"id": row["id"], "name": row["name"], "created_at": row["created_at"]}

    def _touch_token(self, token_id: str, now: datetime) -> None:
        # Bookkeeping only: a busy database must not turn a valid token away.
        try:
            with self._db.transaction(write=True) as conn:
                conn.execute(
                    "UPDATE tokens SET last_used_at = ? WHERE id = ?", (iso(now), token_id)
                )
        except Unavailable:
            log.warning("token last_used_at not updated", extra={"token_id": token_id})

    # -- sites and hostnames --
    def create_site(self, user_id: str, name: str, hostname: str) -> dict[str, Any]:
        """Create a site owned by ``user_id``, served on ``hostname``.

        Raises:
            BadRequest: the name is not a DNS label.
            Conflict: the name or the hostname is taken.
            NotFound: no such user.
        """
        if not is_site_name(name):
            raise BadRequest(f"site name {name!r} is not a DNS label")
        site = {
            "id": self._id_factory(),
            "name": name,
            "user_id": user_id,
            "created_at": iso(self._clock()),
        }
        try:
            with self._db.transaction(write=True) as conn:
                conn.execute(_INSERT_SITE, site)
                conn.execute(
                    "INSERT INTO hostnames (hostname, site_id) VALUES (?, ?)",
                    (hostname, site["id"]),
                )
        except sqlite3.IntegrityError as exc:
            message = str(exc)
            if "FOREIGN KEY" in message:
                raise NotFound(f"user {user_id} not found") from exc
            if "hostnames.hostname" in message:
                raise Conflict(f"hostname {hostname!r} is taken") from exc
            if "sites.name" in message:
                raise Conflict(f"site name {name!r} is taken") from exc
            raise
        log.info(
            "site created", extra={"site_id": site["id"], "site_name": name, "user_id": user_id}
        )
        return {**site, "live_deploy": None, "previews": []}

    def list_sites(self, user_id: str) -> list[dict[str, Any]]:
        """The user's sites, oldest first, each with ``live_deploy`` and ``previews``."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                _SITE_SELECT + " WHERE s.user_id = ? ORDER BY s.rowid", (user_id,)
            ).fetchall()
            previews = _previews_by_site(conn, [row["id"] for row in rows])
        return [_site(row, previews[row["id"]]) for row in rows]

    def get_site(self, user_id: str, site_id: str) -> dict[str, Any]:
        """The site with its ``live_deploy`` and ``previews``, if ``user_id`` owns it.

        Raises:
            NotFound: the site does not exist or belongs to someone else.
        """
        with self._db.transaction() as conn:
            row = conn.execute(
                _SITE_SELECT + " WHERE s.id = ? AND s.user_id = ?", (site_id, user_id)
            ).fetchone()
            if row is None:
                raise NotFound(f"site {site_id} not found")
            return _site(row, PreviewStore.list(conn, site_id))

    def delete_preview(self, user_id: str, site_id: str, branch: str) -> None:
        """Stop serving a preview branch: its hostname and pointer go, its deploys stay.

        Raises:
            NotFound: the site is not the caller's, or has no preview of ``branch``.
        """
        with self._db.transaction(write=True) as conn:
            require_site(conn, user_id, site_id)
            PreviewStore.delete(conn, site_id, branch)
        log.info("preview removed", extra={"site_id": site_id})

    def hostmap(self) -> dict[str, str]:
        """Every hostname and the id of the site it serves."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT hostname, site_id FROM hostnames ORDER BY hostname"
            ).fetchall()
        return {row["hostname"]: row["site_id"] for row in rows}

    def has_hostname(self, hostname: str) -> bool:
        """True when some site is served on ``hostname`` (exact, lowercase)."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT 1 FROM hostnames WHERE hostname = ?", (hostname.lower(),)
            ).fetchone()
        return row is not None

    # -- deploys (0.1.0 names, kept for the CLI and the old recorder body) --
    def record_deploy(
        self,
        user_id: str,
        site_id: str,
        *,
        commit_sha: str,
        release: str,
        file_count: int,
        bytes: int,  # shadows the builtin: it is the field's name in the HTTP contract
    ) -> dict[str, Any]:
        """Record a production deploy that is live now; the site's pointer moves to it.

        Raises:
            NotFound: the site does not exist or belongs to someone else.
        """
        fields = {"commit_sha": commit_sha, "release": release}
        fields.update(file_count=file_count, bytes=bytes)
        return self.deploys.record_finished(user_id, site_id, fields)

    def list_deploys(self, user_id: str, site_id: str) -> list[dict[str, Any]]:
        """A site's deploys, highest number first.

        Raises:
            NotFound: the site does not exist or belongs to someone else.
        """
        return self.deploys.list(user_id, site_id)
