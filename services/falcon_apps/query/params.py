"""Query-string parsing for the stats endpoints: every value is checked against a whitelist.

Nothing here touches the network or the database, so the resources can validate a request
completely (and answer 400) before they ask the api or ClickHouse anything.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.core.errors import BadRequest

__all__ = [
    "PERIODS",
    "INTERVALS",
    "DIMENSIONS",
    "BOTS",
    "TimeseriesQuery",
    "BreakdownQuery",
    "parse_timeseries",
    "parse_breakdown",
    "valid_timezones",
]

_SITE_ID = re.compile(r"[0-9a-f]{16}")
_LIMIT = re.compile(r"[0-9]{1,7}")  # ASCII digits only: int() would also take "١٢" or " 12_0"

PERIODS = ("24h", "7d", "30d")
INTERVALS = ("hour", "day")
DIMENSIONS = ("path", "referrer", "browser", "os", "device", "country", "status")
BOTS = ("exclude", "include", "only")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

# How many buckets each allowed (period, interval) pair has. Hourly buckets are real
# hours (24h is always 24 of them, even on a DST day); daily buckets are local calendar
# days. Hour is allowed only up to 7d (168 points); a 24h period by day would be a single
# bucket that does not cover 24 hours, so it is refused rather than silently reshaped.
_BUCKETS = {("24h", "hour"): 24, ("7d", "hour"): 168, ("7d", "day"): 7, ("30d", "day"): 30}
_DEFAULT_INTERVAL = {"24h": "hour", "7d": "day", "30d": "day"}

# Names zoneinfo lists that are not real reporting zones: "localtime" is whatever the
# server is set to, "Factory" is a placeholder, "posixrules" is a compiler input.
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


@functools.lru_cache(maxsize=1)
def valid_timezones() -> frozenset[str]:
    """The IANA zone names accepted as ``tz`` (read from tzdata once, on first use)."""
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


@dataclass(frozen=True)
class TimeseriesQuery:
    """A validated timeseries request."""

    site_id: str
    period: str
    interval: str
    tz: str
    bots: str

    @property
    def buckets(self) -> int:
        """How many buckets the response holds."""
        return _BUCKETS[(self.period, self.interval)]


@dataclass(frozen=True)
class BreakdownQuery:
    """A validated breakdown request; its range is the period's default timeseries range."""

    site_id: str
    dimension: str
    period: str
    tz: str
    bots: str
    limit: int

    @property
    def interval(self) -> str:
        """The bucket size that aligns the range (same range as the default timeseries)."""
        return _DEFAULT_INTERVAL[self.period]

    @property
    def buckets(self) -> int:
        """How many buckets of ``interval`` the range spans."""
        return _BUCKETS[(self.period, self.interval)]


def _shown(raw: str) -> str:
    # Echo enough of a bad value to recognise it, never an unbounded blob.
    return repr(raw if len(raw) <= 40 else raw[:40] + "...")


def _single(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if isinstance(value, list):
        raise BadRequest(f"parameter {name} given more than once")
    return value


def _check_names(params: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    # Unknown names are refused so a typo ("intervall=hour") never yields a silent default.
    unknown = sorted(name for name in params if name not in allowed)
    if unknown:
        raise BadRequest(f"unknown parameter {_shown(unknown[0])}; allowed: {', '.join(allowed)}")


def _choice(params: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = _single(params, name)
    if raw is None:
        return default
    if raw not in choices:
        raise BadRequest(f"unknown {name} {_shown(raw)}; use one of {', '.join(choices)}")
    return raw


def parse_site_id(raw: str) -> str:
    """The site id from the path, checked to be 16 lowercase hex digits.

    Raises:
        BadRequest: any other shape.
    """
    if not _SITE_ID.fullmatch(raw):
        raise BadRequest(f"invalid site id {_shown(raw)}; expected 16 lowercase hex digits")
    return raw


def _tz(params: Mapping[str, Any]) -> str:
    raw = _single(params, "tz")
    if raw is None:
        return "UTC"
    if raw not in valid_timezones():
        raise BadRequest(f"unknown time zone {_shown(raw)}; use an IANA name such as Europe/Berlin")
    return raw


def _interval(params: Mapping[str, Any], period: str) -> str:
    interval = _choice(params, "interval", INTERVALS, _DEFAULT_INTERVAL[period])
    if (period, interval) not in _BUCKETS:
        allowed = ", ".join(f"{p} by {i}" for p, i in _BUCKETS)
        raise BadRequest(f"period {period} cannot be shown by {interval}; allowed: {allowed}")
    return interval


def _limit(params: Mapping[str, Any]) -> int:
    raw = _single(params, "limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"invalid limit {_shown(raw)}; use a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def parse_timeseries(site_id: str, params: Mapping[str, Any]) -> TimeseriesQuery:
    """Validate a timeseries request (path site id and ``req.params``).

    Raises:
        BadRequest: naming the first bad or unknown parameter.
    """
    _check_names(params, ("period", "interval", "tz", "bots"))
    site_id = parse_site_id(site_id)
    period = _choice(params, "period", PERIODS, "7d")
    return TimeseriesQuery(
        site_id=site_id,
        period=period,
        interval=_interval(params, period),
        tz=_tz(params),
        bots=_choice(params, "bots", BOTS, "exclude"),
    )


def parse_breakdown(site_id: str, params: Mapping[str, Any]) -> BreakdownQuery:
    """Validate a breakdown request (path site id and ``req.params``).

    Raises:
        BadRequest: naming the first bad, missing or unknown parameter.
    """
    _check_names(params, ("dimension", "period", "tz", "bots", "limit"))
    site_id = parse_site_id(site_id)
    if _single(params, "dimension") is None:
        raise BadRequest(f"missing dimension; use one of {', '.join(DIMENSIONS)}")
    return BreakdownQuery(
        site_id=site_id,
        dimension=_choice(params, "dimension", DIMENSIONS, ""),
        period=_choice(params, "period", PERIODS, "7d"),
        tz=_tz(params),
        bots=_choice(params, "bots", BOTS, "exclude"),
        limit=_limit(params),
    )
