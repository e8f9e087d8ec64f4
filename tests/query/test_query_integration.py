"""The query room against the real chDB engine: exact numbers from both endpoints."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from falcon import testing
from prometheus_client import CollectorRegistry
from query_dataset import (
    HOSTILE,
    NOW,
    SA,
    SB,
    SC,
    SE,
    SITE_A_ROWS,
    SITE_B_ROWS,
    SITE_C_ROWS,
    SITE_E_ROWS,
    WEEK_HUMANS,
    ZERO,
    metrics,
    utc,
)
from query_fakes import FakeAuthorizer, FixedClock

from services.core.metrics import HttpMetrics
from services.core.schema import REQUEST_COLUMNS
from services.falcon_apps.query.app import create_app
from services.falcon_apps.query.store import StatsStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def loaded(ch_storage):
    ch_storage.insert(
        "requests", SITE_A_ROWS + SITE_B_ROWS + SITE_C_ROWS + SITE_E_ROWS, REQUEST_COLUMNS
    )
    return ch_storage


def make_client(storage, now=NOW):
    owners = {SA: "alice", SC: "alice", SE: "alice", SB: "bob"}
    authorizer = FakeAuthorizer({"ecs_alice": "alice", "ecs_bob": "bob"}, owners)
    app = create_app(
        StatsStore(storage), authorizer, HttpMetrics(CollectorRegistry()), FixedClock(now)
    )
    return testing.TestClient(app, headers={"Authorization": "Bearer ecs_alice"})


@pytest.fixture(scope="module")
def client(loaded):
    return make_client(loaded)


def series(client, site=SA, **params):
    resp = client.simulate_get(f"/v1/sites/{site}/stats/timeseries", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json


def breakdown(client, site=SA, **params):
    resp = client.simulate_get(f"/v1/sites/{site}/stats/breakdown", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json


def by_time(body):
    return {r["time"]: {k: v for k, v in r.items() if k != "time"} for r in body["results"]}


def test_week_by_utc_day(client):
    body = series(client)
    assert body["totals"] == WEEK_HUMANS
    days = by_time(body)
    assert list(days) == [f"2026-10-{d}T00:00:00+00:00" for d in range(20, 27)]
    assert days["2026-10-24T00:00:00+00:00"] == metrics(1, 1, 500, 1)
    assert days["2026-10-25T00:00:00+00:00"] == metrics(3, 4, 3300, 2)
    assert days["2026-10-26T00:00:00+00:00"] == metrics(0, 1, 150, 0)
    assert [days[f"2026-10-{d}T00:00:00+00:00"] for d in range(20, 24)] == [ZERO] * 4


def test_bots_excluded_by_default_included_or_alone_on_request(client):
    assert series(client, bots="include")["totals"] == metrics(5, 8, 4700, 4)
    assert series(client, bots="only")["totals"] == metrics(1, 2, 750, 1)
    assert series(client, bots="exclude")["totals"] == WEEK_HUMANS


def test_thirty_days_reach_the_older_row(client):
    body = series(client, period="30d")
    assert body["totals"] == metrics(6, 8, 4390, 5)
    assert len(body["results"]) == 30
    assert body["results"][0] == {"time": "2026-09-27T00:00:00+00:00", **metrics(1, 1, 40, 1)}
    assert by_time(body)["2026-10-10T00:00:00+00:00"] == metrics(1, 1, 400, 1)


def test_berlin_days_follow_local_midnight_and_the_25_hour_day(client):
    body = series(client, tz="Europe/Berlin")
    days = by_time(body)
    assert days["2026-10-24T00:00:00+02:00"] == ZERO
    assert days["2026-10-25T00:00:00+02:00"] == metrics(3, 4, 2600, 2)
    assert days["2026-10-26T00:00:00+01:00"] == metrics(1, 2, 1350, 1)
    assert body["totals"] == WEEK_HUMANS


def test_half_hour_zone_hours_and_range_edges(client):
    body = series(client, period="24h", tz="Asia/Kolkata")
    assert (body["from"], body["to"]) == ("2026-10-25T16:00:00+05:30", "2026-10-26T16:00:00+05:30")
    hours = by_time(body)
    assert len(hours) == 24
    assert hours["2026-10-26T05:00:00+05:30"] == metrics(1, 1, 1200, 1)
    assert hours["2026-10-26T15:00:00+05:30"] == metrics(0, 1, 150, 0)
    assert sum(r["requests"] for r in body["results"]) == 2
    assert body["totals"] == metrics(1, 2, 1350, 1)


def test_fall_back_night_keeps_both_2am_hours_apart(loaded):
    client = make_client(loaded, now=utc(2026, 10, 25, 12, 10))
    body = series(client, site=SC, period="24h", interval="hour", tz="Europe/Berlin")
    results = body["results"]
    assert len(results) == 24
    assert results[11]["time"] == "2026-10-25T02:00:00+02:00"
    assert results[12]["time"] == "2026-10-25T02:00:00+01:00"
    assert (results[11]["pageviews"], results[11]["visitors"]) == (1, 1)
    assert (results[12]["pageviews"], results[12]["visitors"]) == (2, 2)
    # Visitor 1 came in both hours: the total counts them once, not summed from buckets.
    assert body["totals"] == metrics(3, 3, 300, 2)


def test_breakdown_by_path_sorted_with_whole_range_totals(client):
    body = breakdown(client, dimension="path")
    assert body["results"] == [
        {"value": "/", **metrics(2, 2, 2200, 2)},
        {"value": "/about", **metrics(2, 2, 1300, 2)},
        {"value": "/missing", **metrics(0, 1, 150, 0)},
        {"value": "/style.css", **metrics(0, 1, 300, 0)},
    ]
    assert body["totals"] == WEEK_HUMANS
    top = breakdown(client, dimension="path", limit="1")
    assert [r["value"] for r in top["results"]] == ["/"]
    assert top["totals"] == WEEK_HUMANS


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"dimension": "browser", "bots": "include"},
            [("Chrome", metrics(2, 4, 2250, 1)), ("", metrics(1, 2, 750, 1)),
             ("Firefox", metrics(1, 1, 1200, 1)), ("Safari", metrics(1, 1, 500, 1))],
        ),
        (
            {"dimension": "status"},
            [("200", metrics(4, 5, 3800, 3)), ("404", metrics(0, 1, 150, 0))],
        ),
        ({"dimension": "country", "bots": "only"}, [("", metrics(1, 2, 750, 1))]),
        (
            {"dimension": "referrer"},
            [("", metrics(2, 4, 1750, 2)), ("news.example", metrics(1, 1, 1000, 1)),
             ("search.example", metrics(1, 1, 1200, 1))],
        ),
        ({"dimension": "device", "period": "24h"}, [("desktop", metrics(1, 2, 1350, 1))]),
    ],
)  # fmt: skip
def test_breakdown_dimensions(client, params, expected):
    body = breakdown(client, **params)
    assert [(r.pop("value"), r) for r in body["results"]] == expected


def test_breakdown_tie_breaks(client):
    body = breakdown(client, site=SE, dimension="path")
    assert [(r["value"], r["pageviews"], r["requests"]) for r in body["results"]] == [
        ("/b", 1, 2), ("/a", 1, 1), ("/d", 1, 1), ("/c", 0, 3), ("/0", 0, 1),
    ]  # fmt: skip
    assert body["totals"] == metrics(3, 8, 800, 1)


def test_other_sites_rows_are_never_counted(client):
    assert series(client, bots="include")["totals"]["bytes"] < 99_999
    # And the other site's owner is refused, never served.
    resp = client.simulate_get(f"/v1/sites/{SB}/stats/timeseries")
    assert resp.status_code == 404


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (f"/v1/sites/{quote(HOSTILE, safe='')}/stats/timeseries", {}),
        (f"/v1/sites/{SA}/stats/timeseries", {"tz": HOSTILE}),
        (f"/v1/sites/{SA}/stats/timeseries", {"bots": HOSTILE}),
        (f"/v1/sites/{SA}/stats/breakdown", {"dimension": HOSTILE}),
        (f"/v1/sites/{SA}/stats/breakdown", {"dimension": "path", "limit": HOSTILE}),
    ],
)
def test_hostile_values_are_rejected_and_the_table_survives(client, loaded, path, params):
    resp = client.simulate_get(path, params=params)
    assert resp.status_code == 400 and resp.json["error"] == "BadRequest"
    assert loaded.rows("EXISTS TABLE requests")[0]["result"] == 1
    assert series(client)["totals"] == WEEK_HUMANS


def test_store_binds_hostile_values_even_past_validation(loaded):
    store = StatsStore(loaded)
    start, end = utc(2026, 10, 1), utc(2026, 11, 1)
    assert store.totals(HOSTILE, start, end, "include") == ZERO
    with pytest.raises(ValueError, match="time zone"):
        store.timeseries(SA, start, end, HOSTILE, "day", "exclude")
    assert loaded.rows("EXISTS TABLE requests")[0]["result"] == 1
    assert store.totals(SA, start, end, "exclude") == metrics(6, 8, 14350, 5)
