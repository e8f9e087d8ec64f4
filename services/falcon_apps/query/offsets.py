"""A zone's UTC offsets over one range, computed with zoneinfo, for SQL that knows only UTC.

Handing a user's zone to ClickHouse (``toTimeZone(ts, tz)``) makes the engine build and
keep a date table per zone, about 4.5 MiB each, never freed: one request per zone grows
the process by gigabytes. Instead the query room sends the handful of offset changes of
the queried range as bound arrays, and the SQL derives local time as ``ts + offset`` with
UTC arithmetic only, so a query costs the same whatever its zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

__all__ = ["Offsets", "offsets"]

# Offsets are sampled this far apart and bisected to the second where they differ. No zone
# changes its offset and back within an hour; tzdata transitions fall on whole seconds.
_STEP = 3600
# The first segment starts this long before the range, so clamping an hour's start to its
# segment never bites there (an hour's start is less than an hour before any instant).
_LEAD = 3 * 3600


@dataclass(frozen=True)
class Offsets:
    """Segments of constant UTC offset: from ``since[i]`` (epoch seconds), ``seconds[i]``.

    ``since`` ascends and ``since[0]`` lies before the range, so every instant of the range
    belongs to the last segment whose ``since`` is not after it.
    """

    since: tuple[int, ...]
    seconds: tuple[int, ...]


def _offset(epoch: int, tz: tzinfo) -> int:
    offset = datetime.fromtimestamp(epoch, UTC).astimezone(tz).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def _change(lo: int, hi: int, tz: tzinfo) -> int:
    """The first second in ``(lo, hi]`` whose offset differs from ``lo``'s."""
    before = _offset(lo, tz)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(mid, tz) == before:
            lo = mid
        else:
            hi = mid
    return hi


def offsets(tz: tzinfo, start: datetime, end: datetime) -> Offsets:
    """The offset segments of ``tz`` covering ``[start, end)``.

    Only the UTC offset counts: a tzdata transition that changes just the abbreviation or
    the DST flag does not start a segment, as it does not start a new bucket either.
    """
    lo = int(start.timestamp() // 1) - _LEAD
    last = int(end.timestamp() // 1) + 1
    since, seconds = [lo], [_offset(lo, tz)]
    probe = lo
    while probe < last:
        step = min(probe + _STEP, last)
        if _offset(step, tz) != seconds[-1]:
            step = _change(probe, step, tz)
            since.append(step)
            seconds.append(_offset(step, tz))
        probe = step
    return Offsets(tuple(since), tuple(seconds))
