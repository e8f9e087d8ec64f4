from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.falcon_apps.query.timeline import day_start, hour_start, timeline

BERLIN = ZoneInfo("Europe/Berlin")


def labels(span):
    return [span.label(i) for i in range(len(span.starts))]


def test_24_hours_across_fall_back_show_the_repeated_hour_twice():
    # 2026-10-25: Berlin goes from 03:00 CEST back to 02:00 CET at 01:00 UTC.
    span = timeline(datetime(2026, 10, 25, 12, 10, tzinfo=UTC), "hour", 24, BERLIN)
    expected = (
        [f"2026-10-24T{h:02d}:00:00+02:00" for h in range(15, 24)]
        + [f"2026-10-25T{h:02d}:00:00+02:00" for h in range(0, 3)]
        + [f"2026-10-25T{h:02d}:00:00+01:00" for h in range(2, 14)]
    )
    assert labels(span) == expected
    assert span.start == datetime(2026, 10, 24, 13, tzinfo=UTC)
    assert span.end == datetime(2026, 10, 25, 13, tzinfo=UTC)


def test_24_hours_across_spring_forward_skip_the_missing_hour():
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00 UTC.
    span = timeline(datetime(2026, 3, 29, 5, 59, tzinfo=UTC), "hour", 24, BERLIN)
    got = labels(span)
    assert len(got) == 24
    assert got[-6:] == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
        "2026-03-29T05:00:00+02:00",
        "2026-03-29T06:00:00+02:00",
        "2026-03-29T07:00:00+02:00",
    ]


def test_days_are_local_and_dst_days_have_their_real_length():
    span = timeline(datetime(2026, 10, 26, 10, tzinfo=UTC), "day", 7, BERLIN)
    assert labels(span) == [
        "2026-10-20T00:00:00+02:00",
        "2026-10-21T00:00:00+02:00",
        "2026-10-22T00:00:00+02:00",
        "2026-10-23T00:00:00+02:00",
        "2026-10-24T00:00:00+02:00",
        "2026-10-25T00:00:00+02:00",
        "2026-10-26T00:00:00+01:00",
    ]
    lengths = [b - a for a, b in zip(span.starts, [*span.starts[1:], span.end], strict=True)]
    assert lengths[5] == timedelta(hours=25)
    assert set(lengths[:5] + lengths[6:]) == {timedelta(hours=24)}


def test_the_zone_decides_which_day_now_is():
    now = datetime(2026, 10, 26, 20, tzinfo=UTC)  # Tuesday 05:00 in Tokyo
    tokyo = timeline(now, "day", 1, ZoneInfo("Asia/Tokyo"))
    new_york = timeline(now, "day", 1, ZoneInfo("America/New_York"))
    assert labels(tokyo) == ["2026-10-27T00:00:00+09:00"]
    assert labels(new_york) == ["2026-10-26T00:00:00-04:00"]
    assert tokyo.start == datetime(2026, 10, 26, 15, tzinfo=UTC)
    assert new_york.end == datetime(2026, 10, 27, 4, tzinfo=UTC)


def test_half_hour_zone_buckets_start_on_local_hours():
    span = timeline(datetime(2026, 10, 26, 10, 0, tzinfo=UTC), "hour", 24, ZoneInfo("Asia/Kolkata"))
    assert span.label(23) == "2026-10-26T15:00:00+05:30"
    assert span.start == datetime(2026, 10, 25, 10, 30, tzinfo=UTC)
    assert span.end == datetime(2026, 10, 26, 10, 30, tzinfo=UTC)


def test_midnight_in_a_dst_gap_starts_the_day_at_the_transition():
    # America/Santiago springs forward at 24:00 -> 01:00 (2026-09-06 04:00 UTC).
    santiago = ZoneInfo("America/Santiago")
    assert day_start(date(2026, 9, 6), santiago) == datetime(2026, 9, 6, 4, tzinfo=UTC)
    assert day_start(date(2026, 9, 6), santiago).astimezone(santiago).hour == 1


def test_slots_map_sql_keys_to_buckets():
    span = timeline(datetime(2026, 10, 25, 12, 10, tzinfo=UTC), "hour", 24, BERLIN)
    first_two = int(datetime(2026, 10, 25, 0, tzinfo=UTC).timestamp())  # 02:00 CEST
    second_two = int(datetime(2026, 10, 25, 1, tzinfo=UTC).timestamp())  # 02:00 CET
    assert (span.slot(first_two), span.slot(second_two)) == (11, 12)
    assert span.slot(second_two + 1800) == 12
    assert span.slot(int(span.start.timestamp()) - 1) is None
    days = timeline(datetime(2026, 10, 26, 10, tzinfo=UTC), "day", 7, BERLIN)
    assert days.slot(date(2026, 10, 25)) == 5
    assert days.slot(date(2026, 10, 19)) is None


_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
]
# St John's changed clocks at 00:01 until 2011, so its days are not monotonic; hours only.
_CASES = st.sampled_from([("hour", 24), ("hour", 168), ("day", 7), ("day", 30)]).flatmap(
    lambda s: st.tuples(
        st.just(s), st.sampled_from(_ZONES + (["America/St_Johns"] if s[0] == "hour" else []))
    )
)
_NOW = st.datetimes(datetime(2000, 1, 1), datetime(2037, 12, 31), timezones=st.just(UTC))
_SECOND = timedelta(seconds=1)


def _hour_key(instant, zone):
    local = instant.astimezone(zone)
    return (local.date(), local.hour, local.utcoffset())


@given(now=_NOW, case=_CASES)
def test_buckets_tile_the_range_and_hold_now(now, case):
    (interval, count), tz = case
    zone = ZoneInfo(tz)
    span = timeline(now, interval, count, zone)
    assert len(span.starts) == count
    assert list(span.starts) == sorted(set(span.starts))
    assert span.starts[-1] <= now < span.end
    bounds = [*span.starts, span.end]
    for a, b in zip(bounds, bounds[1:], strict=False):
        if interval == "day":
            assert a.astimezone(zone).date() + timedelta(days=1) == b.astimezone(zone).date()
            assert (b - _SECOND).astimezone(zone).date() == a.astimezone(zone).date()
            assert timedelta(hours=22) <= b - a <= timedelta(hours=26)
        else:
            # One local hour at one offset; DST oddities can make it shorter than 60 min.
            assert timedelta(0) < b - a <= timedelta(hours=1)
            assert _hour_key(a, zone) == _hour_key(b - _SECOND, zone) != _hour_key(b, zone)


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "Asia/Kolkata", "Asia/Kathmandu"])
def test_hour_start_is_a_local_whole_hour(tz):
    zone = ZoneInfo(tz)
    start = hour_start(datetime(2026, 7, 1, 12, 47, 13, tzinfo=UTC), zone)
    local = start.astimezone(zone)
    assert (local.minute, local.second) == (0, 0)
    assert timedelta(0) <= datetime(2026, 7, 1, 12, 47, 13, tzinfo=UTC) - start < timedelta(hours=1)
