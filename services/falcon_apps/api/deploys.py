"""Deploy records: numbered per site, moved through ``states``, and the live pointers.

The live deploy of a site's production context is ``sites.live_deploy_id``; of a preview
branch, ``previews.live_deploy_id``. Only ``activate`` moves a pointer, never "the newest
deploy", so a restore is just activating an older ``live`` deploy again.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.core.errors import BadRequest, Conflict, NotFound

from .db import Database, iso
from .previews import PreviewStore
from .states import check_transition, is_final

__all__ = ["DEPLOY_FIELDS", "DeployStore", "require_site"]

log = logging.getLogger(__name__)

DEPLOY_FIELDS = (
    "id",
    "site_id",
    "number",
    "context",
    "branch",
    "hostname",
    "commit_sha",
    "author",
    "message",
    "state",
    "step",
    "reason",
    "step_seconds",
    "file_count",
    "bytes",
    "generator",
    "release",
    "created_at",
    "started_at",
    "finished_at",
    "duration_seconds",
)
_COLUMNS = ", ".join(f"d.{field}" for field in DEPLOY_FIELDS)
# A deploy is current when a pointer (production or its preview branch) names it.
_SELECT = (
    f"SELECT {_COLUMNS}, (s.live_deploy_id = d.id OR EXISTS ("
    " SELECT 1 FROM previews p WHERE p.site_id = d.site_id AND p.live_deploy_id = d.id"
    ")) AS current FROM deploys d JOIN sites s ON s.id = d.site_id"
)
_INSERT = (
    f"INSERT INTO deploys ({', '.join(DEPLOY_FIELDS)})"
    f" VALUES ({', '.join(':' + field for field in DEPLOY_FIELDS)})"
)
_UPDATABLE = ("state", "step", "reason", "file_count", "bytes", "generator", "release")


def require_site(conn: sqlite3.Connection, user_id: str, site_id: str) -> sqlite3.Row:
    """The site row if ``user_id`` owns it.

    Raises:
        NotFound: the site does not exist or belongs to someone else.
    """
    row = conn.execute(
        "SELECT id, name, live_deploy_id FROM sites WHERE id = ? AND user_id = ?",
        (site_id, user_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"site {site_id} not found")
    return row


def deploy_dict(row: sqlite3.Row) -> dict[str, Any]:
    """A deploy row as the store hands it out (``step_seconds`` decoded, ``current``)."""
    deploy = {field: row[field] for field in DEPLOY_FIELDS}
    deploy["step_seconds"] = json.loads(row["step_seconds"] or "{}")
    deploy["current"] = bool(row["current"])
    return deploy


class DeployStore:
    """Creates, updates and activates deploys in the metadata database."""

    def __init__(self, db: Database, clock: Callable[[], datetime], id_factory: Callable[[], str]):
        """Keep the database, the clock and the id generator."""
        self._db = db
        self._clock = clock
        self._id_factory = id_factory

    def create(self, user_id: str, site_id: str, fields: dict[str, Any], domain: str) -> dict:
        """A new ``queued`` deploy, numbered after the site's last one.

        Older unfinished deploys of the same context (and branch, for previews) become
        ``superseded``: the newest push wins, and a slow older build can no longer go live.

        Args:
            user_id: the caller (owner of the site).
            site_id: the site.
            fields: checked ``context``, ``branch``, ``commit_sha``, ``author``, ``message``.
            domain: the sites domain, for preview hostnames.

        Raises:
            NotFound: the site does not exist or belongs to someone else.
        """
        now = iso(self._clock())
        with self._db.transaction(write=True) as conn:
            site = require_site(conn, user_id, site_id)
            deploy = self._new(conn, site, fields, domain, now)
            self._supersede_older(conn, deploy, now)
            conn.execute(_INSERT, {**deploy, "step_seconds": "{}"})
        log.info(
            "deploy queued",
            extra={"site_id": site_id, "deploy_id": deploy["id"], "context": deploy["context"]},
        )
        return self.get(user_id, site_id, deploy["id"])

    def record_finished(self, user_id: str, site_id: str, fields: dict[str, Any]) -> dict:
        """Record a production deploy that already went live, and point the site at it.

        The 0.1.0 contract (``{commit_sha, release, file_count, bytes}``), kept for the
        git receiver that publishes first and reports afterwards.

        Raises:
            NotFound: the site does not exist or belongs to someone else.
        """
        now = iso(self._clock())
        with self._db.transaction(write=True) as conn:
            site = require_site(conn, user_id, site_id)
            base = {"context": "production", "branch": None, "author": None, "message": None}
            deploy = self._new(conn, site, {**base, "commit_sha": fields["commit_sha"]}, "", now)
            deploy.update(
                state="live",
                step="record",
                file_count=fields["file_count"],
                bytes=fields["bytes"],
                release=fields["release"],
                started_at=now,
                finished_at=now,
                duration_seconds=0.0,
            )
            self._supersede_older(conn, deploy, now)
            conn.execute(_INSERT, {**deploy, "step_seconds": "{}"})
            conn.execute(
                "UPDATE sites SET live_deploy_id = ? WHERE id = ?", (deploy["id"], site_id)
            )
        log.info(
            "deploy recorded",
            extra={"site_id": site_id, "deploy_id": deploy["id"], "release": fields["release"]},
        )
        return self.get(user_id, site_id, deploy["id"])

    def _new(self, conn, site, fields: dict[str, Any], domain: str, now: str) -> dict:
        number = conn.execute(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM deploys WHERE site_id = ?", (site["id"],)
        ).fetchone()[0]
        if fields["context"] == "preview":
            hostname = PreviewStore.ensure(conn, site, fields["branch"], domain, now)
        else:
            hostname = _production_hostname(conn, site["id"])
        deploy = dict.fromkeys(DEPLOY_FIELDS)
        deploy.update(fields, id=self._id_factory(), site_id=site["id"], number=number)
        deploy.update(hostname=hostname, state="queued", created_at=now)
        return deploy

    @staticmethod
    def _supersede_older(conn: sqlite3.Connection, deploy: dict[str, Any], now: str) -> None:
        conn.execute(
            "UPDATE deploys SET state = 'superseded', reason = 'superseded', finished_at = ?,"
            " duration_seconds = MAX(0, (julianday(?) - julianday(COALESCE(started_at,"
            " created_at))) * 86400.0)"
            " WHERE site_id = ? AND context = ? AND (context = 'production' OR branch = ?)"
            " AND state IN ('queued', 'building', 'publishing')",
            (now, now, deploy["site_id"], deploy["context"], deploy["branch"]),
        )

    def get(self, user_id: str, site_id: str, deploy_id: str) -> dict[str, Any]:
        """One deploy of a site ``user_id`` owns.

        Raises:
            NotFound: no such deploy, or not the caller's.
        """
        with self._db.transaction() as conn:
            row = conn.execute(
                _SELECT + " WHERE d.id = ? AND d.site_id = ? AND s.user_id = ?",
                (deploy_id, site_id, user_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"deploy {deploy_id} not found")
        return deploy_dict(row)

    def list(self, user_id: str, site_id: str) -> list[dict[str, Any]]:
        """A site's deploys, newest (highest number) first.

        Raises:
            NotFound: the site does not exist or belongs to someone else.
        """
        with self._db.transaction() as conn:
            require_site(conn, user_id, site_id)
            rows = conn.execute(
                _SELECT + " WHERE d.site_id = ? ORDER BY d.number DESC", (site_id,)
            ).fetchall()
        return [deploy_dict(row) for row in rows]

    def update(self, user_id: str, site_id: str, deploy_id: str, changes: dict[str, Any]) -> dict:
        """Apply checked PATCH fields; a state change must be a legal transition.

        ``step_seconds`` merges into what is stored. Leaving ``queued`` stamps
        ``started_at``; reaching a final state stamps ``finished_at`` and the duration.
        A final deploy accepts only a retry of a change it already has.

        Raises:
            NotFound: no such deploy, or not the caller's.
            Conflict: an illegal transition, or a change to a final deploy.
        """
        now = self._clock()
        with self._db.transaction(write=True) as conn:
            current = self._locked_get(conn, user_id, site_id, deploy_id)
            if is_final(current["state"]):
                if _already_has(current, changes):
                    return current
                raise Conflict(f"deploy is {current['state']}, a final state")
            new = {key: changes[key] for key in _UPDATABLE if key in changes}
            state = changes.get("state", current["state"])
            check_transition(current["state"], state)
            if "reason" in changes and state not in ("failed", "superseded"):
                raise BadRequest("reason is only for a deploy that fails or is superseded")
            step_seconds = {**current["step_seconds"], **changes.get("step_seconds", {})}
            new["step_seconds"] = json.dumps(step_seconds, sort_keys=True)
            new.update(_timestamps(current, state, now))
            assignments = ", ".join(f"{key} = :{key}" for key in new)
            conn.execute(
                f"UPDATE deploys SET {assignments} WHERE id = :deploy_id",
                {**new, "deploy_id": deploy_id},
            )
        log.info(
            "deploy updated",
            extra={"site_id": site_id, "deploy_id": deploy_id, "state": state},
        )
        return self.get(user_id, site_id, deploy_id)

    def _locked_get(self, conn, user_id: str, site_id: str, deploy_id: str) -> dict[str, Any]:
        row = conn.execute(
            _SELECT + " WHERE d.id = ? AND d.site_id = ? AND s.user_id = ?",
            (deploy_id, site_id, user_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"deploy {deploy_id} not found")
        return deploy_dict(row)

    def activate(self, user_id: str, site_id: str, deploy_id: str) -> None:
        """Point this deploy's context (production, or its preview branch) at it.

        Raises:
            NotFound: no such deploy, or not the caller's.
            Conflict: the deploy is not ``live``, or its preview branch was removed.
        """
        with self._db.transaction(write=True) as conn:
            deploy = self._locked_get(conn, user_id, site_id, deploy_id)
            if deploy["state"] != "live":
                raise Conflict(
                    f"only a live deploy can be activated; this one is {deploy['state']}"
                )
            if deploy["context"] == "production":
                conn.execute(
                    "UPDATE sites SET live_deploy_id = ? WHERE id = ?", (deploy_id, site_id)
                )
            else:
                moved = conn.execute(
                    "UPDATE previews SET live_deploy_id = ? WHERE site_id = ? AND branch = ?",
                    (deploy_id, site_id, deploy["branch"]),
                ).rowcount
                if not moved:
                    raise Conflict(f"the preview of branch {deploy['branch']!r} was removed")
        log.info("deploy activated", extra={"site_id": site_id, "deploy_id": deploy_id})


def _production_hostname(conn: sqlite3.Connection, site_id: str) -> str:
    row = conn.execute(
        "SELECT MIN(hostname) FROM hostnames WHERE site_id = ?"
        " AND hostname NOT IN (SELECT hostname FROM previews WHERE site_id = ?)",
        (site_id, site_id),
    ).fetchone()
    return row[0] or ""


def _already_has(current: dict[str, Any], changes: dict[str, Any]) -> bool:
    for key, value in changes.items():
        if key == "step_seconds":
            if any(current["step_seconds"].get(k) != v for k, v in value.items()):
                return False
        elif current[key] != value:
            return False
    return True


def _timestamps(current: dict[str, Any], state: str, now: datetime) -> dict[str, Any]:
    stamps: dict[str, Any] = {}
    started = current["started_at"]
    if state in ("building", "publishing", "live") and started is None:
        started = stamps["started_at"] = iso(now)
    if is_final(state):
        begin = datetime.fromisoformat(started or current["created_at"])
        stamps["finished_at"] = iso(now)
        stamps["duration_seconds"] = round(max(0.0, (now - begin).total_seconds()), 3)
    return stamps
