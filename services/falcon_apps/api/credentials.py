"""Short-lived push credentials: one site, a few minutes, stored only as a hash.

The git receiver holds the user's token only for the length of a push. It trades it for
a credential (``POST /v1/sites/{id}/credentials``) that can do nothing but report that
site's deploy, so a leaked build log or a compromised builder cannot list, create or
touch anything else, and stops working at ``expires_at``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.core.auth import hash_token, tokens_equal
from services.core.errors import NotFound

from .db import Database, iso

__all__ = ["CREDENTIAL_PREFIX", "Credential", "CredentialStore", "new_credential"]

log = logging.getLogger(__name__)

CREDENTIAL_PREFIX = "ecsd_"
# Expired rows stay this long so their holder hears "expired", not "invalid".
_KEEP_EXPIRED = timedelta(days=1)


def new_credential() -> str:
    """A fresh credential: 32 random bytes, URL-safe, with a recognisable prefix."""
    return CREDENTIAL_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Credential:
    """What a presented credential resolves to."""

    site_id: str
    user_id: str
    expires_at: datetime
    expired: bool


class CredentialStore:
    """Issues and resolves push credentials in the ``deploy_credentials`` table."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime],
        id_factory: Callable[[], str],
        credential_factory: Callable[[], str] = new_credential,
    ):
        """Keep the collaborators.

        Args:
            db: the metadata database.
            clock: returns the current time as an aware datetime.
            id_factory: returns a fresh id.
            credential_factory: returns a fresh raw credential.
        """
        self._db = db
        self._clock = clock
        self._id_factory = id_factory
        self._credential_factory = credential_factory

    def issue(self, user_id: str, site_id: str, ttl_seconds: int) -> tuple[str, datetime]:
        """A new credential for a site ``user_id`` owns, valid for ``ttl_seconds``.

        Returns:
            The raw credential (shown once, stored as its SHA-256) and its expiry.

        Raises:
            NotFound: the site does not exist or belongs to someone else.
        """
        raw = self._credential_factory()
        now = self._clock()
        expires_at = now + timedelta(seconds=ttl_seconds)
        with self._db.transaction(write=True) as conn:
            owned = conn.execute(
                "SELECT 1 FROM sites WHERE id = ? AND user_id = ?", (site_id, user_id)
            ).fetchone()
            if owned is None:
                raise NotFound(f"site {site_id} not found")
            conn.execute(
                "DELETE FROM deploy_credentials WHERE expires_at < ?", (iso(now - _KEEP_EXPIRED),)
            )
            conn.execute(
                "INSERT INTO deploy_credentials"
                " (id, site_id, user_id, credential_hash, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (self._id_factory(), site_id, user_id, hash_token(raw), iso(now), iso(expires_at)),
            )
        log.info("deploy credential issued", extra={"site_id": site_id, "user_id": user_id})
        return raw, expires_at

    def resolve(self, raw: str) -> Credential | None:
        """The credential ``raw`` names, expired or not, or None if it is unknown."""
        wanted = hash_token(raw)
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT site_id, user_id, credential_hash, expires_at FROM deploy_credentials"
                " WHERE credential_hash = ?",
                (wanted,),
            ).fetchone()
        # Looked up by hash; the final check is constant-time all the same.
        if row is None or not tokens_equal(row["credential_hash"], wanted):
            return None
        expires_at = datetime.fromisoformat(row["expires_at"])
        return Credential(
            site_id=row["site_id"],
            user_id=row["user_id"],
            expires_at=expires_at,
            expired=self._clock() >= expires_at,
        )
