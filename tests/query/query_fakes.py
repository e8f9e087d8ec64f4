"""Fakes for the query room's tests (a uniquely named module, safe to import by name)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.core.errors import NotFound, Unauthorized
from services.falcon_apps.query.store import METRICS

SITE = "0123456789abcdef"
OTHER_SITE = "fedcba9876543210"
TOKEN = "ecs_owner"


class FakeAuthorizer:
    """Mirrors SiteAuthorizer: tokens map to users, sites to owners."""

    def __init__(self, tokens: dict[str, str], owners: dict[str, str]):
        self.tokens = tokens  # token -> user
        self.owners = owners  # site id -> user
        self.calls: list[tuple[str | None, str]] = []

    def site(self, token: str | None, site_id: str) -> dict[str, Any]:
        self.calls.append((token, site_id))
        if not token or token not in self.tokens:
            raise Unauthorized("invalid token")
        if self.owners.get(site_id) != self.tokens[token]:
            raise NotFound(f"site {site_id} not found")
        return {"id": site_id}


class FakeStore:
    """Returns canned rows and records every call with its arguments."""

    def __init__(self):
        self.series_rows: list[dict[str, Any]] = []
        self.breakdown_rows: list[dict[str, Any]] = []
        self.total = dict.fromkeys(METRICS, 0)
        self.calls: list[tuple[str, tuple]] = []

    def totals(self, *args):
        self.calls.append(("totals", args))
        return dict(self.total)

    def timeseries(self, *args):
        self.calls.append(("timeseries", args))
        return [dict(row) for row in self.series_rows]

    def breakdown(self, *args):
        self.calls.append(("breakdown", args))
        return [dict(row) for row in self.breakdown_rows]

    def sites_queried(self) -> set[str]:
        return {args[0] for _, args in self.calls}


class FixedClock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now
