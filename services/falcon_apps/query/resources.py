"""The stats resources: validate, authorize, ask the store, shape the JSON."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import falcon

from services.core.auth import bearer_token
from services.core.errors import Unauthorized

from .params import parse_breakdown, parse_timeseries
from .store import METRICS, StatsStore
from .timeline import Timeline, timeline

__all__ = ["Timeseries", "Breakdown"]


class Authorizer(Protocol):
    """What the resources need from ``services.core.auth.SiteAuthorizer``."""

    def site(self, token: str | None, site_id: str) -> dict[str, Any]:
        """The site as the token's user sees it; raises Unauthorized/NotFound/Unavailable."""


def _token(req: falcon.Request) -> str:
    # Checked before the parameters, so a caller without a token always learns that first.
    token = bearer_token(req.get_header("Authorization"))
    if token is None:
        raise Unauthorized("missing token: send Authorization: Bearer TOKEN")
    return token


def _authorize(authorizer: Authorizer, token: str, site_id: str) -> None:
    # Not the caller's site and no such site both come back as NotFound (404).
    authorizer.site(token, site_id)


def _range(clock: Callable[[], datetime], interval: str, count: int, tz: str) -> Timeline:
    return timeline(clock(), interval, count, ZoneInfo(tz))


class _Stats:
    def __init__(self, store: StatsStore, authorizer: Authorizer, clock: Callable[[], datetime]):
        self._store = store
        self._authorizer = authorizer
        self._clock = clock


class Timeseries(_Stats):
    """``GET /v1/sites/{site_id}/stats/timeseries``: metrics per bucket, every bucket present."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, site_id: str) -> None:
        """Answer the timeseries of one site."""
        token = _token(req)
        query = parse_timeseries(site_id, req.params)
        _authorize(self._authorizer, token, query.site_id)
        span = _range(self._clock, query.interval, query.buckets, query.tz)
        rows = self._store.timeseries(
            query.site_id, span.start, span.end, query.tz, query.interval, query.bots
        )
        results = [
            {"time": span.label(i), **dict.fromkeys(METRICS, 0)} for i in range(len(span.starts))
        ]
        for row in rows:
            # One SQL row per bucket: the SQL keys come from the same zoneinfo offsets
            # (store, offsets), so each lands in its own slot.
            index = span.slot(row["bucket"])
            if index is not None:
                for name in METRICS:
                    results[index][name] += row[name]
        resp.media = {
            "site_id": query.site_id,
            "period": query.period,
            "interval": query.interval,
            "tz": query.tz,
            "bots": query.bots,
            "from": span.iso(span.start),
            "to": span.iso(span.end),
            "results": results,
            "totals": self._store.totals(query.site_id, span.start, span.end, query.bots),
        }


class Breakdown(_Stats):
    """``GET /v1/sites/{site_id}/stats/breakdown``: metrics per value of one dimension."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, site_id: str) -> None:
        """Answer the top values of one dimension for one site."""
        token = _token(req)
        query = parse_breakdown(site_id, req.params)
        _authorize(self._authorizer, token, query.site_id)
        # The same range as the period's default timeseries, so the two totals agree.
        span = _range(self._clock, query.interval, query.buckets, query.tz)
        resp.media = {
            "site_id": query.site_id,
            "dimension": query.dimension,
            "period": query.period,
            "tz": query.tz,
            "bots": query.bots,
            "from": span.iso(span.start),
            "to": span.iso(span.end),
            "results": self._store.breakdown(
                query.site_id, span.start, span.end, query.dimension, query.bots, query.limit
            ),
            "totals": self._store.totals(query.site_id, span.start, span.end, query.bots),
        }
