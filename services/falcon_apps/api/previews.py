"""Preview hostnames: one DNS label per (site, branch), and the rows that point at them.

A preview of branch ``feature/Login`` of site ``blog`` is served on
``feature-login--blog.{sites_domain}``. Labels are DNS-safe (``[a-z0-9-]``, at most 63
characters, never ``--`` in the 3rd and 4th places, which IDNA reserves for ``xn--``).
A label that had to be truncated, or that another branch or site already took, carries a
short hash of the branch instead.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from typing import Any

from services.core.errors import Conflict, NotFound

__all__ = ["MAX_LABEL", "branch_slug", "preview_label", "PreviewStore"]

MAX_LABEL = 63
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
# Hash lengths tried in turn once the plain label is unusable: 24 bits, then 48, then 80.
_HASH_LENGTHS = (6, 12, 20)


def branch_slug(branch: str) -> str:
    """``branch`` lowercased, every run of other characters collapsed to one ``-``."""
    slug = _NOT_ALNUM.sub("-", branch.lower()).strip("-")
    return slug or "branch"


def _hash(branch: str, length: int) -> str:
    return hashlib.sha256(branch.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def preview_label(branch: str, site_name: str, hash_length: int = 0) -> str | None:
    """The DNS label of a branch's preview.

    Args:
        branch: the git branch, any string.
        site_name: the site's name (itself a DNS label).
        hash_length: 0 for the plain ``{slug}--{site}``; otherwise the number of hex
            digits of the branch's SHA-256 to add, so the label is unique.

    Returns:
        The label, or None when the plain form does not fit (too long, or a two-letter
        slug that would put ``--`` where IDNA reserves it): use a hashed one.
    """
    slug = branch_slug(branch)
    suffix = f"--{site_name}"
    if not hash_length:
        fits = len(slug) + len(suffix) <= MAX_LABEL and len(slug) != 2
        return f"{slug}{suffix}" if fits else None
    digest = _hash(branch, hash_length)
    room = MAX_LABEL - len(suffix) - hash_length - 1
    if room >= 1:
        return f"{slug[:room].rstrip('-')}-{digest}{suffix}"
    # A site name so long that no slug fits: the hash alone, and the name cut to fit.
    return f"{digest}{suffix}"[:MAX_LABEL].rstrip("-")


class PreviewStore:
    """The ``previews`` rows of a site: branch, hostname and live pointer."""

    @staticmethod
    def ensure(
        conn: sqlite3.Connection, site: sqlite3.Row, branch: str, domain: str, now: str
    ) -> str:
        """The hostname of ``branch``'s preview, registering it on first use.

        Runs inside the caller's write transaction. The hostname goes into ``hostnames``
        too, so ``/internal/hostmap`` and the TLS check know it.

        Raises:
            Conflict: every candidate label is taken (practically never).
        """
        row = conn.execute(
            "SELECT hostname FROM previews WHERE site_id = ? AND branch = ?",
            (site["id"], branch),
        ).fetchone()
        if row is not None:
            return row["hostname"]
        for hash_length in (0, *_HASH_LENGTHS):
            label = preview_label(branch, site["name"], hash_length)
            if label is None:
                continue
            hostname = f"{label}.{domain}"
            taken = conn.execute(
                "SELECT 1 FROM hostnames WHERE hostname = ?", (hostname,)
            ).fetchone()
            if taken is None:
                conn.execute(
                    "INSERT INTO hostnames (hostname, site_id) VALUES (?, ?)",
                    (hostname, site["id"]),
                )
                conn.execute(
                    "INSERT INTO previews (site_id, branch, hostname, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (site["id"], branch, hostname, now),
                )
                return hostname
        raise Conflict(f"no free preview hostname for branch {branch!r}")

    @staticmethod
    def list(conn: sqlite3.Connection, site_id: str) -> list[dict[str, Any]]:
        """A site's previews, by branch."""
        rows = conn.execute(
            "SELECT branch, hostname, live_deploy_id FROM previews WHERE site_id = ?"
            " ORDER BY branch",
            (site_id,),
        ).fetchall()
        return [dict(row) for row in rows]

    @staticmethod
    def delete(conn: sqlite3.Connection, site_id: str, branch: str) -> None:
        """Remove a preview's pointer and hostname; its deploy records stay.

        Raises:
            NotFound: the site has no preview of ``branch``.
        """
        row = conn.execute(
            "SELECT hostname FROM previews WHERE site_id = ? AND branch = ?", (site_id, branch)
        ).fetchone()
        if row is None:
            raise NotFound(f"no preview of branch {branch!r}")
        conn.execute("DELETE FROM previews WHERE site_id = ? AND branch = ?", (site_id, branch))
        conn.execute("DELETE FROM hostnames WHERE hostname = ?", (row["hostname"],))
