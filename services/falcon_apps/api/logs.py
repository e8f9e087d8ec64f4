"""Build logs per deploy, capped: the first part and the last lines survive.

A log past its cap keeps its head (the first ``head_lines``/``head_bytes``, frozen once
full) and a rolling tail: each new line pushes the oldest tail line out. The error that
ended a build is at the end, so the tail matters most; the head shows what ran.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from services.core.errors import NotFound

from .db import Database

__all__ = ["LogLimits", "DeployLogStore"]


@dataclass(frozen=True)
class LogLimits:
    """Caps of one deploy's log (bytes are UTF-8)."""

    max_lines: int = 20_000
    max_bytes: int = 2 * 2**20
    head_lines: int = 2_000
    head_bytes: int = 256 * 2**10
    max_line_chars: int = 4_096


def _size(line: str) -> int:
    return len(line.encode("utf-8")) + 1  # the newline it stands for


class DeployLogStore:
    """Appends to and reads ``deploy_log_lines``, keeping totals in ``deploy_logs``."""

    def __init__(self, db: Database, limits: LogLimits = LogLimits()):
        """Keep the database and the caps."""
        self._db = db
        self._limits = limits

    def _cap(self, line: str) -> str:
        limit = self._limits.max_line_chars
        return line if len(line) <= limit else line[: limit - 1] + "…"

    def append(self, user_id: str, site_id: str, deploy_id: str, lines: list[str]) -> None:
        """Append lines to a deploy's log, dropping the oldest tail lines past the cap.

        Raises:
            NotFound: no such deploy of a site ``user_id`` owns.
        """
        with self._db.transaction(write=True) as conn:
            _require_deploy(conn, user_id, site_id, deploy_id)
            conn.execute("INSERT OR IGNORE INTO deploy_logs (deploy_id) VALUES (?)", (deploy_id,))
            totals = dict(
                conn.execute(
                    "SELECT * FROM deploy_logs WHERE deploy_id = ?", (deploy_id,)
                ).fetchone()
            )
            for raw in lines:
                self._add(conn, totals, self._cap(raw))
            self._trim(conn, totals)
            conn.execute(
                "UPDATE deploy_logs SET next_n = :next_n, lines = :lines, bytes = :bytes,"
                " head_lines = :head_lines, head_bytes = :head_bytes,"
                " head_closed = :head_closed, omitted = :omitted WHERE deploy_id = :deploy_id",
                totals,
            )

    def _add(self, conn: sqlite3.Connection, totals: dict[str, Any], line: str) -> None:
        size = _size(line)
        limits = self._limits
        if not totals["head_closed"]:
            fits = (
                totals["head_lines"] < limits.head_lines
                and totals["head_bytes"] + size <= limits.head_bytes
            )
            if fits:
                totals["head_lines"] += 1
                totals["head_bytes"] += size
            else:
                totals["head_closed"] = 1
        conn.execute(
            "INSERT INTO deploy_log_lines (deploy_id, n, size, line) VALUES (?, ?, ?, ?)",
            (totals["deploy_id"], totals["next_n"], size, line),
        )
        totals["next_n"] += 1
        totals["lines"] += 1
        totals["bytes"] += size

    def _trim(self, conn: sqlite3.Connection, totals: dict[str, Any]) -> None:
        excess_lines = totals["lines"] - self._limits.max_lines
        excess_bytes = totals["bytes"] - self._limits.max_bytes
        if excess_lines <= 0 and excess_bytes <= 0:
            return
        # The oldest tail lines go first; the head (n < head_lines) is never trimmed.
        cursor = conn.execute(
            "SELECT n, size FROM deploy_log_lines WHERE deploy_id = ? AND n >= ? ORDER BY n",
            (totals["deploy_id"], totals["head_lines"]),
        )
        cut, dropped, freed = -1, 0, 0
        for n, size in cursor:
            if dropped >= excess_lines and freed >= excess_bytes:
                break
            cut, dropped, freed = n, dropped + 1, freed + size
        cursor.close()
        conn.execute(
            "DELETE FROM deploy_log_lines WHERE deploy_id = ? AND n >= ? AND n <= ?",
            (totals["deploy_id"], totals["head_lines"], cut),
        )
        totals["lines"] -= dropped
        totals["bytes"] -= freed
        totals["omitted"] += dropped

    def read(self, user_id: str, site_id: str, deploy_id: str) -> dict[str, Any]:
        """A deploy's state and kept log lines, in order.

        Returns:
            ``{"state", "lines", "truncated", "omitted_lines"}``.

        Raises:
            NotFound: no such deploy of a site ``user_id`` owns.
        """
        with self._db.transaction() as conn:
            state = _require_deploy(conn, user_id, site_id, deploy_id)
            lines = [
                row[0]
                for row in conn.execute(
                    "SELECT line FROM deploy_log_lines WHERE deploy_id = ? ORDER BY n",
                    (deploy_id,),
                )
            ]
            totals = conn.execute(
                "SELECT omitted FROM deploy_logs WHERE deploy_id = ?", (deploy_id,)
            ).fetchone()
        omitted = totals["omitted"] if totals else 0
        return {"state": state, "lines": lines, "truncated": omitted > 0, "omitted_lines": omitted}


def _require_deploy(conn: sqlite3.Connection, user_id: str, site_id: str, deploy_id: str) -> str:
    row = conn.execute(
        "SELECT d.state FROM deploys d JOIN sites s ON s.id = d.site_id"
        " WHERE d.id = ? AND d.site_id = ? AND s.user_id = ?",
        (deploy_id, site_id, user_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"deploy {deploy_id} not found")
    return row["state"]
