"""Bucket boundaries in a reporting time zone, computed in Python with zoneinfo.

The SQL groups rows by a bucket key computed from this zone's offsets (``offsets``); this
module lists every bucket of the range (so empty ones show as zeros) and maps each key to its
slot. Hourly buckets are real hours, so a 24h range is 24 buckets even on a DST day
(the repeated local hour shows twice, with two offsets). Daily buckets are local calendar
days, 23 or 25 hours long across DST changes. No ``WITH FILL``: it cannot follow DST.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

__all__ = ["Timeline", "timeline", "hour_start", "day_start"]

log = logging.getLogger(__name__)

_STEP = timedelta(minutes=15)
_TICK = timedelta(microseconds=1)


def _key(instant: datetime, interval: str, tz: tzinfo) -> tuple:
    # What makes two instants share a bucket. The offset keeps the two 02:00 hours of a
    # fall-back night apart; a day is just its local date.
    local = instant.astimezone(tz)
    if interval == "hour":
        return (local.date(), local.hour, local.utcoffset())
    return (local.date(),)


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _edge(lo: int, hi: int, before: Callable[[int], bool]) -> int:
    """The first second in ``(lo, hi]`` where ``before`` turns false (true at ``lo``)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if before(mid):
            lo = mid
        else:
            hi = mid
    return hi


def _run_start(instant: datetime, interval: str, tz: tzinfo, lookback: timedelta) -> datetime:
    """The first whole second before ``instant`` (within ``lookback``) in its bucket.

    For buckets whose wall-clock start does not exist: a DST gap swallowed it, or an
    offset change at an odd minute (America/St_Johns until 2011). tzdata transitions
    fall on whole seconds, so bisecting over seconds finds the transition exactly.
    """
    target = _key(instant, interval, tz)
    hi = int(instant.timestamp() // 1)
    lo = hi - int(lookback.total_seconds())
    if _key(_at(lo), interval, tz) == target:
        return _at(lo)
    return _at(_edge(lo, hi, lambda second: _key(_at(second), interval, tz) != target))


def hour_start(instant: datetime, tz: tzinfo) -> datetime:
    """The start of the local hour holding ``instant``, as an aware UTC datetime."""
    local = instant.astimezone(tz)
    # astimezone sets fold=1 inside a repeated hour and replace() keeps it, so the second
    # 02:00 of a fall-back night maps to its own instant, not to the first one.
    floored = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    if floored <= instant and _key(floored, "hour", tz) == _key(instant, "hour", tz):
        return floored
    return _run_start(instant, "hour", tz, timedelta(hours=1))


def day_start(day: date, tz: tzinfo) -> datetime:
    """The first instant of local calendar day ``day``, as an aware UTC datetime.

    Usually local midnight; in zones whose DST gap swallows midnight, the transition.
    """
    midnight = datetime.combine(day, time(0), tzinfo=tz)
    start = midnight.astimezone(UTC)
    if start.astimezone(tz).replace(tzinfo=None) == midnight.replace(tzinfo=None):
        return start
    # A missing midnight: fold=0 mapped it to an instant inside the day; walk back.
    return _run_start(start, "day", tz, timedelta(hours=3))


def _floor(instant: datetime, interval: str, tz: tzinfo) -> datetime:
    if interval == "hour":
        return hour_start(instant, tz)
    return day_start(instant.astimezone(tz).date(), tz)


def _bucket_end(instant: datetime, interval: str, tz: tzinfo) -> datetime:
    """The first instant after ``instant`` that belongs to another bucket."""
    target = _key(instant, interval, tz)
    probe = instant
    while _key(probe + _STEP, interval, tz) == target:
        probe += _STEP
    # The bucket ends within the next step: bisect over whole seconds to its edge.
    lo, hi = int(probe.timestamp() // 1), int((probe + _STEP).timestamp() // 1)
    return _at(_edge(lo, hi, lambda second: _key(_at(second), interval, tz) == target))


@dataclass(frozen=True)
class Timeline:
    """The buckets of one range: ``starts`` (UTC, ascending) and the exclusive ``end``."""

    interval: str
    tz: tzinfo
    starts: tuple[datetime, ...]
    end: datetime
    _epochs: tuple[int, ...] = field(init=False, repr=False)
    _days: dict[date, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_epochs", tuple(int(s.timestamp()) for s in self.starts))
        days = {s.astimezone(self.tz).date(): i for i, s in enumerate(self.starts)}
        object.__setattr__(self, "_days", days)

    @property
    def start(self) -> datetime:
        """The inclusive start of the range (UTC)."""
        return self.starts[0]

    def label(self, index: int) -> str:
        """ISO-8601 start of bucket ``index`` with its offset in the reporting zone."""
        return self.starts[index].astimezone(self.tz).isoformat(timespec="seconds")

    def iso(self, instant: datetime) -> str:
        """An instant as ISO-8601 with its offset in the reporting zone."""
        return instant.astimezone(self.tz).isoformat(timespec="seconds")

    def slot(self, key: Any) -> int | None:
        """The bucket index of a key from the SQL (a local date, or an hour's epoch).

        Hour keys are placed by bisection, so any instant inside a bucket (not only its
        start) lands in the bucket that holds it.
        """
        if self.interval == "day":
            index = self._days.get(key)
        else:
            index = bisect.bisect_right(self._epochs, int(key)) - 1
            index = index if index >= 0 else None
        if index is None:
            log.warning("bucket key outside range", extra={"key": str(key)})
        return index


def timeline(now: datetime, interval: str, count: int, tz: tzinfo) -> Timeline:
    """The ``count`` whole buckets ending with (and including) the one holding ``now``.

    Args:
        now: the current instant (aware).
        interval: "hour" or "day".
        count: number of buckets, at least 1.
        tz: the reporting zone.
    """
    starts = [_floor(now, interval, tz)]
    while len(starts) < count:
        # The bucket before a start is the one holding the instant just before it.
        starts.append(_floor(starts[-1] - _TICK, interval, tz))
    starts.reverse()
    return Timeline(interval, tz, tuple(starts), _bucket_end(now, interval, tz))
