from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.errors import BadRequest
from services.falcon_apps.query.params import (
    BOTS,
    DIMENSIONS,
    PERIODS,
    parse_breakdown,
    parse_site_id,
    parse_timeseries,
    valid_timezones,
)

SITE = "0123456789abcdef"


def test_timeseries_defaults():
    q = parse_timeseries(SITE, {})
    assert (q.period, q.interval, q.tz, q.bots, q.buckets) == ("7d", "day", "UTC", "exclude", 7)


@pytest.mark.parametrize(
    ("period", "interval", "buckets"),
    [
        ("24h", None, 24),
        ("24h", "hour", 24),
        ("7d", "hour", 168),
        ("7d", None, 7),
        ("30d", "day", 30),
    ],
)
def test_timeseries_period_interval_pairs(period, interval, buckets):
    params = {"period": period} | ({"interval": interval} if interval else {})
    q = parse_timeseries(SITE, params)
    assert q.buckets == buckets
    assert q.interval == (interval or ("hour" if period == "24h" else "day"))


@pytest.mark.parametrize(("period", "interval"), [("30d", "hour"), ("24h", "day")])
def test_incompatible_period_interval_is_refused(period, interval):
    with pytest.raises(BadRequest, match=f"period {period} cannot be shown by {interval}"):
        parse_timeseries(SITE, {"period": period, "interval": interval})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"period": "1y"}, "unknown period '1y'"),
        ({"period": ""}, "unknown period ''"),
        ({"interval": "week"}, "unknown interval 'week'"),
        ({"bots": "true"}, "unknown bots 'true'"),
        ({"tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"tz": "utc"}, "unknown time zone 'utc'"),
        ({"tz": "localtime"}, "unknown time zone 'localtime'"),
        ({"tz": "../../etc/passwd"}, "unknown time zone"),
        ({"period": ["7d", "24h"]}, "period given more than once"),
        ({"intervall": "hour"}, "unknown parameter 'intervall'"),
    ],
)
def test_timeseries_rejects(params, message):
    with pytest.raises(BadRequest, match=re.escape(message)):
        parse_timeseries(SITE, params)


@pytest.mark.parametrize(
    "tz", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Etc/GMT+5"]
)
def test_real_zones_are_accepted(tz):
    assert parse_timeseries(SITE, {"tz": tz}).tz == tz


@pytest.mark.parametrize(
    "raw",
    [
        "0123456789ABCDEF",
        "0123456789abcde",
        "0123456789abcdef0",
        "0123456789abcdeg",
        "",
        "'; DROP TABLE requests; --",
    ],
)
def test_site_id_shape(raw):
    with pytest.raises(BadRequest, match="invalid site id"):
        parse_site_id(raw)


def test_breakdown_defaults_and_range():
    q = parse_breakdown(SITE, {"dimension": "path"})
    assert (q.dimension, q.period, q.tz, q.bots, q.limit) == ("path", "7d", "UTC", "exclude", 100)
    assert (q.interval, q.buckets) == ("day", 7)
    assert (parse_breakdown(SITE, {"dimension": "os", "period": "24h"}).interval) == "hour"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "missing dimension"),
        ({"dimension": "ip"}, "unknown dimension 'ip'"),
        ({"dimension": "path", "limit": "0"}, "invalid limit '0'"),
        ({"dimension": "path", "limit": "1001"}, "invalid limit '1001'"),
        ({"dimension": "path", "limit": "-5"}, "invalid limit"),
        ({"dimension": "path", "limit": "1e3"}, "invalid limit"),
        ({"dimension": "path", "limit": "١٢"}, "invalid limit"),
        ({"dimension": "path", "limit": " 12"}, "invalid limit"),
        ({"dimension": "path", "interval": "hour"}, "unknown parameter 'interval'"),
    ],
)
def test_breakdown_rejects(params, message):
    with pytest.raises(BadRequest, match=message):
        parse_breakdown(SITE, params)


@pytest.mark.parametrize(("raw", "limit"), [("1", 1), ("1000", 1000), ("0042", 42)])
def test_breakdown_limit(raw, limit):
    assert parse_breakdown(SITE, {"dimension": "status", "limit": raw}).limit == limit


def test_long_bad_values_are_truncated_in_messages():
    with pytest.raises(BadRequest) as info:
        parse_timeseries(SITE, {"tz": "x" * 10_000})
    assert len(info.value.message) < 200


_NAMES = st.sampled_from(["period", "interval", "tz", "bots", "dimension", "limit"]) | st.text(
    max_size=12
)
_VALUES = (
    st.sampled_from([*PERIODS, "hour", "day", *BOTS, *DIMENSIONS, "UTC", "Europe/Berlin", "10"])
    | st.text(max_size=30)
    | st.lists(st.text(max_size=5), min_size=2, max_size=3)
)


@given(
    site=st.text(max_size=20) | st.just(SITE), params=st.dictionaries(_NAMES, _VALUES, max_size=5)
)
def test_validators_accept_or_raise_bad_request_only(site, params):
    for parse in (parse_timeseries, parse_breakdown):
        try:
            q = parse(site, params)
        except BadRequest as exc:
            assert exc.message
            continue
        # Whatever got through is exactly one of the whitelisted values.
        assert q.site_id == SITE
        assert q.period in PERIODS and q.bots in BOTS and q.tz in valid_timezones()
        assert q.buckets in (7, 24, 30, 168)
        if parse is parse_breakdown:
            assert q.dimension in DIMENSIONS and 1 <= q.limit <= 1000
