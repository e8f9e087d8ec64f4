"""Every SQL statement of the query room, with user values only as bound parameters.

Values (site id, range bounds, offsets, limit) travel as clickhouse-connect server-side
parameters (``{name:Type}``); ClickHouse substitutes them as typed literals after parsing,
so no value can change the statement. The time zone itself never reaches ClickHouse: its
offsets over the range do (see ``offsets``), so no zone costs the engine a date table. The
only text spliced into SQL comes from the fixed tables below (column expressions, bot
filters), chosen by validated keys.

Every statement runs under the ``Budget`` built from ``config.query`` (memory, time,
result rows); one that outgrows it, or finds the shared engine busy with inserts for its
whole budget, answers 503 with a message that says which, never a 500.
"""

from __future__ import annotations

import logging
import zoneinfo
from datetime import datetime
from typing import Any, Protocol

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from services.core.errors import Unavailable
from services.core.intake_config import QueryConfig
from services.core.storage import OVER_BUDGET_CODES, Budget, EngineBusy

from .offsets import offsets

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

# Local time with UTC arithmetic only: a row's offset is the one of the last offset
# change at or before it (a handful of bound values, see ``offsets``).
_LOCAL_SQL = """
    toInt64(toUnixTimestamp(ts)) AS _utc,
    arrayCount(change -> change <= _utc, {since:Array(Int64)}) AS _segment,
    {offsets:Array(Int32)}[_segment] AS _offset,
    _utc + _offset AS _wall"""

# Hour keys are the epoch of the local hour's start: the wall-clock hour's start, not
# before the offset took effect (a change at an odd minute starts its own bucket); the
# offset keeps the two 02:00 hours of a fall-back night apart. Day keys are the local
# calendar date. Both match ``timeline`` (zoneinfo) to the second, in every zone.
_BUCKET_SQL = {
    "hour": "greatest(_wall - _wall % 3600 - _offset, {since:Array(Int64)}[_segment])",
    "day": "toDate(toDateTime(_wall, 'UTC'))",
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
    def rows(
        self, sql: str, parameters: dict[str, Any] | None = None, budget: Budget | None = None
    ) -> list[dict[str, Any]]:
        """Run a SELECT with bound parameters under ``budget``."""


def _pick(table: dict[str, str], key: str, what: str) -> str:
    # Defence in depth: the resources validate first, but SQL text only ever comes from
    # these tables, so an unexpected key is a programming error, never a new statement.
    try:
        return table[key]
    except KeyError:
        raise ValueError(f"unknown {what} {key!r}") from None


def _zone(name: str) -> zoneinfo.ZoneInfo:
    # The resources accept only zoneinfo's names; anything else is a programming error.
    try:
        return zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ValueError(f"unknown time zone {name[:40]!r}") from None


def _metrics(row: dict[str, Any]) -> dict[str, int]:
    return {name: int(row[name]) for name in METRICS}


class StatsStore:
    """Aggregates over the ``requests`` table for one site and a half-open UTC range."""

    def __init__(self, storage: _Rows, limits: QueryConfig | None = None):
        self._storage = storage
        self._limits = limits or QueryConfig()
        self._budget = Budget(self._limits.max_memory_mb << 20, self._limits.max_seconds)

    def _rows(self, sql: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            return self._storage.rows(sql, parameters, budget=self._budget)
        except OperationalError as exc:
            log.warning("clickhouse unreachable", extra={"error": exc.__class__.__name__})
            raise Unavailable("analytics storage unavailable") from exc
        except EngineBusy as exc:
            log.warning("query waited out its budget", extra={"seconds": self._limits.max_seconds})
            raise Unavailable(
                f"analytics engine busy storing new data for {self._limits.max_seconds:g} s;"
                " retry shortly"
            ) from exc
        except DatabaseError as exc:
            if exc.code not in OVER_BUDGET_CODES:
                raise
            raise Unavailable(self._over_budget(OVER_BUDGET_CODES[exc.code])) from exc

    def _over_budget(self, what: str) -> str:
        log.warning("query over budget", extra={"limit": what})
        caps = {
            "memory": f"more than its {self._limits.max_memory_mb} MiB of memory",
            "time": f"longer than its {self._limits.max_seconds:g} s",
            "rows": f"more than {self._budget.max_result_rows} result rows",
        }
        return f"this query needs {caps[what]}; ask for a shorter period"

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
            f"WITH {_LOCAL_SQL}"
            f" SELECT {_pick(_BUCKET_SQL, interval, 'interval')} AS bucket, {_METRIC_SQL}"
            f" FROM requests WHERE {_RANGE} {_pick(_BOT_FILTER, bots, 'bots')}"
            " GROUP BY bucket ORDER BY bucket"
        )
        found = offsets(_zone(tz), start, end)
        parameters = {"site": site_id, "start": start, "end": end}
        rows = self._rows(
            sql, parameters | {"since": list(found.since), "offsets": list(found.seconds)}
        )
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
