"""Every SQL statement of the query room, with user values only as bound parameters.

Values (site id, range bounds, time zone, limit) travel as clickhouse-connect server-side
parameters (``{name:Type}``); ClickHouse substitutes them as typed literals after parsing,
so no value can change the statement. ClickHouse 26 accepts a bound ``{tz:String}`` where
``toTimeZone`` needs a constant, so the zone is bound like everything else (and is also
checked against zoneinfo before it gets here). The only text spliced into SQL comes from
the fixed tables below (column expressions, bot filters), chosen by validated keys.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Protocol

from clickhouse_connect.driver.exceptions import OperationalError

from services.core.errors import Unavailable

__all__ = ["StatsStore", "METRICS"]

log = logging.getLogger(__name__)

METRICS = ("pageviews", "requests", "bytes", "visitors")

# Visitors count page views only: an asset fetch is not a visit (analytics.md 2.1, 2.2).
_METRIC_SQL = """
    countIf(is_page) AS pageviews,
    count() AS requests,
    sum(bytes) AS bytes,
    uniqExactIf(visitor_id, is_page) AS visitors"""

_BOT_FILTER = {"exclude": "AND NOT is_bot", "include": "", "only": "AND is_bot"}

_RANGE = """
    site_id = {site:String}
    AND ts >= {start:DateTime64(3, 'UTC')}
    AND ts < {end:DateTime64(3, 'UTC')}"""

# Hour keys are the epoch of the local hour's start (so the two 02:00 hours of a
# fall-back night stay apart); day keys are the local calendar date.
_BUCKET_SQL = {
    "hour": "toUnixTimestamp(toStartOfHour(toTimeZone(ts, {tz:String})))",
    "day": "toDate(toTimeZone(ts, {tz:String}))",
}

# Dimension name -> column expression. Identifiers cannot be bound, hence a fixed table.
_DIMENSION_SQL = {
    "path": "path",
    "referrer": "referrer_host",
    "browser": "browser",
    "os": "os",
    "device": "device",
    "country": "country",
    "status": "toString(status)",
}


class _Rows(Protocol):
    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a SELECT with bound parameters."""


def _pick(table: dict[str, str], key: str, what: str) -> str:
    # Defence in depth: the resources validate first, but SQL text only ever comes from
    # these tables, so an unexpected key is a programming error, never a new statement.
    try:
        return table[key]
    except KeyError:
        raise ValueError(f"unknown {what} {key!r}") from None


def _metrics(row: dict[str, Any]) -> dict[str, int]:
    return {name: int(row[name]) for name in METRICS}


class StatsStore:
    """Aggregates over the ``requests`` table for one site and a half-open UTC range."""

    def __init__(self, storage: _Rows):
        self._storage = storage

    def _rows(self, sql: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            return self._storage.rows(sql, parameters)
        except OperationalError as exc:
            log.warning("clickhouse unreachable", extra={"error": exc.__class__.__name__})
            raise Unavailable("analytics storage unavailable") from exc

    def totals(self, site_id: str, start: datetime, end: datetime, bots: str) -> dict[str, int]:
        """The metrics over the whole range (never a sum of groups).

        Args:
            site_id: the site's id.
            start: inclusive start, aware.
            end: exclusive end, aware.
            bots: "exclude", "include" or "only".
        """
        sql = (
            f"SELECT {_METRIC_SQL} FROM requests WHERE {_RANGE} {_pick(_BOT_FILTER, bots, 'bots')}"
        )
        rows = self._rows(sql, {"site": site_id, "start": start, "end": end})
        return _metrics(rows[0])

    def timeseries(
        self, site_id: str, start: datetime, end: datetime, tz: str, interval: str, bots: str
    ) -> list[dict[str, Any]]:
        """The metrics per non-empty bucket.

        Returns:
            Rows ``{"bucket": key, **metrics}``: key is a ``date`` (day) or the epoch of
            the local hour's start (hour), both computed in ``tz``.
        """
        sql = (
            f"SELECT {_pick(_BUCKET_SQL, interval, 'interval')} AS bucket, {_METRIC_SQL}"
            f" FROM requests WHERE {_RANGE} {_pick(_BOT_FILTER, bots, 'bots')}"
            " GROUP BY bucket ORDER BY bucket"
        )
        rows = self._rows(sql, {"site": site_id, "start": start, "end": end, "tz": tz})
        return [{"bucket": row["bucket"], **_metrics(row)} for row in rows]

    def breakdown(
        self, site_id: str, start: datetime, end: datetime, dimension: str, bots: str, limit: int
    ) -> list[dict[str, Any]]:
        """The top ``limit`` values of a dimension.

        Returns:
            Rows ``{"value": str, **metrics}`` by pageviews, then requests (both
            descending), then value.
        """
        sql = (
            f"SELECT {_pick(_DIMENSION_SQL, dimension, 'dimension')} AS value, {_METRIC_SQL}"
            f" FROM requests WHERE {_RANGE} {_pick(_BOT_FILTER, bots, 'bots')}"
            " GROUP BY value ORDER BY pageviews DESC, requests DESC, value ASC"
            " LIMIT {limit:UInt32}"
        )
        rows = self._rows(sql, {"site": site_id, "start": start, "end": end, "limit": limit})
        return [{"value": str(row["value"]), **_metrics(row)} for row in rows]
