from __future__ import annotations

from datetime import UTC, datetime

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from services.core.errors import Unavailable
from services.core.intake_config import QueryConfig
from services.core.storage import Budget, EngineBusy
from services.falcon_apps.query.store import StatsStore

HOSTILE = "'; DROP TABLE requests; --"
START, END = datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 10, 27, tzinfo=UTC)
ROW = {"pageviews": 1, "requests": 2, "bytes": 3, "visitors": 1}


class RecordingStorage:
    def __init__(self, rows=None, error=None):
        self.calls = []
        self.budgets = []
        self._rows = rows if rows is not None else [{"bucket": 0, "value": "x", **ROW}]
        self._error = error

    def rows(self, sql, parameters=None, budget=None):
        self.calls.append((sql, parameters))
        self.budgets.append(budget)
        if self._error:
            raise self._error
        return [dict(r) for r in self._rows]


def test_user_values_travel_only_as_bound_parameters():
    storage = RecordingStorage()
    store = StatsStore(storage)
    store.totals(HOSTILE, START, END, "exclude")
    store.timeseries(HOSTILE, START, END, "Europe/Berlin", "hour", "include")
    store.breakdown(HOSTILE, START, END, "path", "only", 7)
    for sql, params in storage.calls:
        assert HOSTILE not in sql
        assert "{site:String}" in sql and params["site"] == HOSTILE
        assert (params["start"], params["end"]) == (START, END)
    assert "LIMIT {limit:UInt32}" in storage.calls[2][0] and storage.calls[2][1]["limit"] == 7


def test_the_zone_never_reaches_clickhouse_only_its_offsets_do():
    storage = RecordingStorage()
    StatsStore(storage).timeseries(
        "0123456789abcdef", START, END, "Europe/Berlin", "day", "include"
    )
    sql, params = storage.calls[0]
    assert "Berlin" not in sql and "Berlin" not in repr(params)
    assert "toTimeZone" not in sql and "{since:Array(Int64)}" in sql
    # Berlin's fall-back night 2026-10-25 01:00 UTC lies in the range: two segments.
    fall_back = int(datetime(2026, 10, 25, 1, tzinfo=UTC).timestamp())
    assert params["since"][1:] == [fall_back] and params["offsets"] == [7200, 3600]


def test_an_unknown_zone_past_validation_is_refused_before_any_sql():
    storage = RecordingStorage()
    with pytest.raises(ValueError, match="unknown time zone"):
        StatsStore(storage).timeseries("x", START, END, HOSTILE, "day", "include")
    assert storage.calls == []


def test_every_query_carries_the_configured_budget():
    storage = RecordingStorage()
    store = StatsStore(storage, QueryConfig(max_memory_mb=64, max_seconds=2.5))
    store.totals("0123456789abcdef", START, END, "exclude")
    store.timeseries("0123456789abcdef", START, END, "UTC", "hour", "include")
    store.breakdown("0123456789abcdef", START, END, "path", "only", 7)
    assert storage.budgets == [Budget(64 << 20, 2.5)] * 3


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (DatabaseError("Code: 241", code=241), "more than its 64 MiB of memory"),
        (DatabaseError("Code: 159", code=159), "longer than its 2.5 s"),
        (DatabaseError("Code: 396", code=396), "more than 10000 result rows"),
        (EngineBusy("busy"), "busy storing new data for 2.5 s"),
    ],
)
def test_an_over_budget_or_crowded_out_query_is_unavailable_with_the_reason(error, message):
    store = StatsStore(
        RecordingStorage(error=error), QueryConfig(max_memory_mb=64, max_seconds=2.5)
    )
    with pytest.raises(Unavailable, match=message):
        store.totals("0123456789abcdef", START, END, "exclude")


def test_other_database_errors_stay_errors():
    store = StatsStore(RecordingStorage(error=DatabaseError("Code: 62", code=62)))
    with pytest.raises(DatabaseError):
        store.totals("0123456789abcdef", START, END, "exclude")


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
