"""Local buckets without handing the zone to ClickHouse, against a pure zoneinfo reference.

The SQL derives local time from the range's offset changes (``offsets``); these tests
check, over random zones and instants (biased towards offset changes), that its hour and
day keys are exactly what zoneinfo says, and that ``offsets`` finds every change.
"""

from __future__ import annotations

import bisect
import secrets
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from query_dataset import request_row

from services.core.schema import REQUEST_COLUMNS
from services.falcon_apps.query.offsets import offsets
from services.falcon_apps.query.params import valid_timezones
from services.falcon_apps.query.store import StatsStore

ZONES = sorted(valid_timezones())
# Zones whose offsets are odd on purpose: :30/:45 offsets, 30-minute DST, negative DST,
# a skipped calendar day, +14, Ramadan changes, a +2 jump in Antarctica.
EXOTIC = [
    "Asia/Kathmandu", "Asia/Kolkata", "Australia/Lord_Howe", "America/St_Johns",
    "Europe/Dublin", "Pacific/Apia", "Pacific/Kiritimati", "Africa/Casablanca",
    "Antarctica/Troll", "Australia/Eucla", "Asia/Tehran", "Europe/Berlin",
]  # fmt: skip
EARLIEST = datetime(1971, 2, 1, tzinfo=UTC)
LATEST = datetime(2099, 12, 1, tzinfo=UTC)
HALF_RANGE = timedelta(days=15)


def _key(instant: datetime, tz: ZoneInfo) -> tuple:
    local = instant.astimezone(tz)
    return (local.date(), local.hour, local.utcoffset())


def reference_hour(instant: datetime, tz: ZoneInfo) -> int:
    """The epoch of the first second sharing ``instant``'s local (date, hour, offset)."""
    second = instant.replace(microsecond=0)
    target = _key(second, tz)
    for step in (timedelta(minutes=1), timedelta(seconds=1)):
        while _key(second - step, tz) == target:
            second -= step
    return int(second.timestamp())


def reference_day(instant: datetime, tz: ZoneInfo) -> date:
    return instant.astimezone(tz).date()


def offset_changes(tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Every offset change in [start, end), by a 10-minute walk and a walk by seconds."""
    found, probe = [], start
    while probe < end:
        step = probe + timedelta(minutes=10)
        if step.astimezone(tz).utcoffset() != probe.astimezone(tz).utcoffset():
            while (
                probe.astimezone(tz).utcoffset()
                == (probe + timedelta(seconds=1)).astimezone(tz).utcoffset()
            ):
                probe += timedelta(seconds=1)
            found.append(probe + timedelta(seconds=1))
            step = found[-1]
        probe = step
    return found


@st.composite
def zone_and_anchor(draw):
    """A zone and an instant, often right at one of the zone's offset changes."""
    name = draw(st.sampled_from(EXOTIC) | st.sampled_from(ZONES))
    tz = ZoneInfo(name)
    anchor = draw(st.datetimes(EARLIEST.replace(tzinfo=None), LATEST.replace(tzinfo=None)))
    anchor = anchor.replace(tzinfo=UTC)
    if draw(st.booleans()):
        # Move to the first offset change within the coming year, if there is one.
        year = [anchor + timedelta(days=d) for d in range(0, 366, 3)]
        for a, b in zip(year, year[1:], strict=False):
            if a.astimezone(tz).utcoffset() != b.astimezone(tz).utcoffset():
                anchor = offset_changes(tz, a, b + timedelta(minutes=10))[0]
                break
    return name, anchor


def near(anchor: datetime):
    around = st.integers(-3 * 3600 * 1000, 3 * 3600 * 1000)
    far = st.integers(
        -HALF_RANGE // timedelta(milliseconds=1), HALF_RANGE // timedelta(milliseconds=1) - 1
    )
    return st.lists(around | far, min_size=1, max_size=25).map(
        lambda ms: [anchor + timedelta(milliseconds=m) for m in ms]
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_offsets_give_zoneinfos_offset_at_every_instant(data):
    name, anchor = data.draw(zone_and_anchor())
    tz = ZoneInfo(name)
    start, end = anchor - HALF_RANGE, anchor + HALF_RANGE
    found = offsets(tz, start, end)
    assert list(found.since) == sorted(set(found.since)) and found.since[0] < start.timestamp()
    changes = [int(c.timestamp()) for c in offset_changes(tz, start, end)]
    assert [s for s in found.since[1:] if s >= start.timestamp()] == changes
    for instant in data.draw(near(anchor)):
        if start <= instant < end:
            index = bisect.bisect_right(found.since, int(instant.timestamp() // 1)) - 1
            assert timedelta(seconds=found.seconds[index]) == instant.astimezone(tz).utcoffset()


@pytest.mark.integration
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_sql_buckets_match_zoneinfo_in_every_zone(ch_storage, data):
    name, anchor = data.draw(zone_and_anchor())
    tz = ZoneInfo(name)
    start, end = anchor - HALF_RANGE, anchor + HALF_RANGE
    instants = [i for i in data.draw(near(anchor)) if start <= i < end]
    site = secrets.token_hex(8)
    ch_storage.insert("requests", [request_row(site, i) for i in instants], REQUEST_COLUMNS)
    store = StatsStore(ch_storage)
    hours = store.timeseries(site, start, end, name, "hour", "include")
    days = store.timeseries(site, start, end, name, "day", "include")
    assert {r["bucket"]: r["requests"] for r in hours} == Counter(
        reference_hour(i, tz) for i in instants
    )
    assert {r["bucket"]: r["requests"] for r in days} == Counter(
        reference_day(i, tz) for i in instants
    )
