from __future__ import annotations

from datetime import UTC, datetime

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from services.core.errors import Unavailable
from services.falcon_apps.query.store import StatsStore

HOSTILE = "'; DROP TABLE requests; --"
START, END = datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 10, 27, tzinfo=UTC)
ROW = {"pageviews": 1, "requests": 2, "bytes": 3, "visitors": 1}


class RecordingStorage:
    def __init__(self, rows=None, error=None):
        self.calls = []
        self._rows = rows if rows is not None else [{"bucket": 0, "value": "x", **ROW}]
        self._error = error

    def rows(self, sql, parameters=None):
        self.calls.append((sql, parameters))
        if self._error:
            raise self._error
        return [dict(r) for r in self._rows]


def test_user_values_travel_only_as_bound_parameters():
    storage = RecordingStorage()
    store = StatsStore(storage)
    store.totals(HOSTILE, START, END, "exclude")
    store.timeseries(HOSTILE, START, END, HOSTILE, "hour", "include")
    store.breakdown(HOSTILE, START, END, "path", "only", 7)
    for sql, params in storage.calls:
        assert HOSTILE not in sql
        assert "{site:String}" in sql and params["site"] == HOSTILE
        assert (params["start"], params["end"]) == (START, END)
    assert "toTimeZone(ts, {tz:String})" in storage.calls[1][0]
    assert storage.calls[1][1]["tz"] == HOSTILE
    assert "LIMIT {limit:UInt32}" in storage.calls[2][0] and storage.calls[2][1]["limit"] == 7


@pytest.mark.parametrize(
    ("bots", "fragment", "absent"),
    [
        ("exclude", "AND NOT is_bot", None),
        ("only", "AND is_bot", "NOT is_bot"),
        ("include", None, "is_bot"),
    ],
)
def test_bot_filter_reaches_the_sql(bots, fragment, absent):
    storage = RecordingStorage()
    StatsStore(storage).totals("0123456789abcdef", START, END, bots)
    sql = storage.calls[0][0]
    assert fragment is None or fragment in sql
    assert absent is None or absent not in sql


def test_pageviews_count_pages_not_rows():
    storage = RecordingStorage()
    StatsStore(storage).totals("0123456789abcdef", START, END, "exclude")
    sql = storage.calls[0][0]
    assert "countIf(is_page) AS pageviews" in sql
    assert "uniqExactIf(visitor_id, is_page) AS visitors" in sql


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.totals("x", START, END, HOSTILE), "unknown bots"),
        (lambda s: s.timeseries("x", START, END, "UTC", HOSTILE, "exclude"), "unknown interval"),
        (lambda s: s.breakdown("x", START, END, HOSTILE, "exclude", 5), "unknown dimension"),
    ],
)
def test_sql_text_comes_only_from_fixed_tables(call, message):
    storage = RecordingStorage()
    with pytest.raises(ValueError, match=message):
        call(StatsStore(storage))
    assert storage.calls == []


def test_unreachable_clickhouse_is_unavailable():
    store = StatsStore(RecordingStorage(error=OperationalError("connection refused")))
    with pytest.raises(Unavailable):
        store.totals("0123456789abcdef", START, END, "exclude")


def test_breakdown_values_are_strings():
    storage = RecordingStorage(rows=[{"value": 404, **ROW}])
    rows = StatsStore(storage).breakdown("0123456789abcdef", START, END, "status", "exclude", 5)
    assert rows == [{"value": "404", **ROW}]
