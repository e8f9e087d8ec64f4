from __future__ import annotations

from datetime import UTC, date, datetime
from urllib.parse import quote, urlencode

import pytest
from falcon import testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from query_fakes import OTHER_SITE, SITE, TOKEN, FakeAuthorizer, FakeStore, FixedClock

from services.core.errors import Unavailable
from services.core.metrics import HttpMetrics
from services.falcon_apps.query.app import PATHS, create_app

SERIES = f"/v1/sites/{SITE}/stats/timeseries"
BREAKDOWN = f"/v1/sites/{SITE}/stats/breakdown"
ZERO = {"pageviews": 0, "requests": 0, "bytes": 0, "visitors": 0}


def test_timeseries_default_shape_fills_every_day(client, store):
    store.series_rows = [
        {"bucket": date(2026, 10, 22), "pageviews": 3, "requests": 5, "bytes": 900, "visitors": 2},
        {"bucket": date(2026, 10, 26), "pageviews": 1, "requests": 1, "bytes": 10, "visitors": 1},
    ]
    store.total = {"pageviews": 4, "requests": 6, "bytes": 910, "visitors": 2}
    resp = client.simulate_get(SERIES)
    assert resp.status_code == 200
    body = resp.json
    assert {k: body[k] for k in ("site_id", "period", "interval", "tz", "bots")} == {
        "site_id": SITE,
        "period": "7d",
        "interval": "day",
        "tz": "UTC",
        "bots": "exclude",
    }
    assert (body["from"], body["to"]) == ("2026-10-20T00:00:00+00:00", "2026-10-27T00:00:00+00:00")
    assert [r["time"] for r in body["results"]] == [
        f"2026-10-{d}T00:00:00+00:00" for d in range(20, 27)
    ]
    assert body["results"][2] == {
        "time": "2026-10-22T00:00:00+00:00",
        "pageviews": 3,
        "requests": 5,
        "bytes": 900,
        "visitors": 2,
    }
    assert [r for i, r in enumerate(body["results"]) if i not in (2, 6)] == [
        {"time": f"2026-10-{d}T00:00:00+00:00", **ZERO} for d in (20, 21, 23, 24, 25)
    ]
    # Totals come from the store's own whole-range query, not from summing buckets.
    assert body["totals"] == {"pageviews": 4, "requests": 6, "bytes": 910, "visitors": 2}
    kind, args = store.calls[0]
    assert kind == "timeseries"
    assert args == (
        SITE,
        datetime(2026, 10, 20, tzinfo=UTC),
        datetime(2026, 10, 27, tzinfo=UTC),
        "UTC",
        "day",
        "exclude",
    )
    assert store.calls[1] == ("totals", (SITE, args[1], args[2], "exclude"))


def test_berlin_fall_back_day_has_24_hourly_buckets_with_two_2am(store, authorizer):
    app = create_app(
        store,
        authorizer,
        HttpMetrics(CollectorRegistry()),
        FixedClock(datetime(2026, 10, 25, 12, 10, tzinfo=UTC)),
    )
    first_two = int(datetime(2026, 10, 25, 0, tzinfo=UTC).timestamp())
    store.series_rows = [
        {"bucket": first_two, "pageviews": 1, "requests": 1, "bytes": 1, "visitors": 1},
        {"bucket": first_two + 3600, "pageviews": 2, "requests": 2, "bytes": 2, "visitors": 2},
    ]
    resp = testing.TestClient(app).simulate_get(
        SERIES,
        params={"period": "24h", "interval": "hour", "tz": "Europe/Berlin"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    body = resp.json
    times = [r["time"] for r in body["results"]]
    assert times == (
        [f"2026-10-24T{h:02d}:00:00+02:00" for h in range(15, 24)]
        + [f"2026-10-25T{h:02d}:00:00+02:00" for h in range(0, 3)]
        + [f"2026-10-25T{h:02d}:00:00+01:00" for h in range(2, 14)]
    )
    assert (
        body["results"][11]["pageviews"] == 1
        and body["results"][11]["time"] == "2026-10-25T02:00:00+02:00"
    )
    assert (
        body["results"][12]["pageviews"] == 2
        and body["results"][12]["time"] == "2026-10-25T02:00:00+01:00"
    )
    assert sum(r["pageviews"] for r in body["results"]) == 3
    assert (body["from"], body["to"]) == ("2026-10-24T15:00:00+02:00", "2026-10-25T14:00:00+01:00")


@pytest.mark.parametrize(
    ("tz", "first", "start"),
    [
        ("Asia/Tokyo", "2026-10-20T00:00:00+09:00", datetime(2026, 10, 19, 15, tzinfo=UTC)),
        ("America/New_York", "2026-10-20T00:00:00-04:00", datetime(2026, 10, 20, 4, tzinfo=UTC)),
    ],
)
def test_tz_moves_day_buckets_and_range(client, store, tz, first, start):
    body = client.simulate_get(SERIES, params={"tz": tz}).json
    assert body["tz"] == tz and body["results"][0]["time"] == first and len(body["results"]) == 7
    assert store.calls[0][1][1] == start and store.calls[0][1][3] == tz


def test_breakdown_shape_and_range(client, store):
    store.breakdown_rows = [
        {"value": "/", "pageviews": 5, "requests": 7, "bytes": 70, "visitors": 3},
        {"value": "/about", "pageviews": 2, "requests": 2, "bytes": 20, "visitors": 2},
    ]
    store.total = {"pageviews": 7, "requests": 9, "bytes": 90, "visitors": 4}
    resp = client.simulate_get(
        BREAKDOWN, params={"dimension": "path", "limit": "2", "bots": "include"}
    )
    assert resp.status_code == 200
    body = resp.json
    assert {k: body[k] for k in ("site_id", "dimension", "period", "bots")} == {
        "site_id": SITE,
        "dimension": "path",
        "period": "7d",
        "bots": "include",
    }
    assert body["results"] == store.breakdown_rows
    assert body["totals"] == store.total
    assert store.calls[0] == (
        "breakdown",
        (
            SITE,
            datetime(2026, 10, 20, tzinfo=UTC),
            datetime(2026, 10, 27, tzinfo=UTC),
            "path",
            "include",
            2,
        ),
    )


def test_breakdown_24h_uses_the_last_24_hours(client, store):
    body = client.simulate_get(BREAKDOWN, params={"dimension": "country", "period": "24h"}).json
    assert (body["from"], body["to"]) == ("2026-10-25T11:00:00+00:00", "2026-10-26T11:00:00+00:00")
    assert store.calls[0][1][3:] == ("country", "exclude", 100)


@pytest.mark.parametrize(
    ("path", "params", "fragment"),
    [
        (SERIES, {"period": "90d"}, "unknown period"),
        (SERIES, {"interval": "minute"}, "unknown interval"),
        (SERIES, {"period": "30d", "interval": "hour"}, "cannot be shown by hour"),
        (SERIES, {"bots": "yes"}, "unknown bots"),
        (SERIES, {"tz": "Europe/Nowhere"}, "unknown time zone"),
        (SERIES, {"tz": "'; DROP TABLE requests; --"}, "unknown time zone"),
        (BREAKDOWN, {"dimension": "ip"}, "unknown dimension"),
        (BREAKDOWN, {"dimension": "'; DROP TABLE requests; --"}, "unknown dimension"),
        (BREAKDOWN, {"dimension": "path", "limit": "5000"}, "invalid limit"),
        (BREAKDOWN, {"dimension": "path", "limit": "ten"}, "invalid limit"),
        (BREAKDOWN, {}, "missing dimension"),
        ("/v1/sites/0123456789ABCDEF/stats/timeseries", {}, "invalid site id"),
        (
            "/v1/sites/" + quote("'; DROP TABLE requests; --", safe="") + "/stats/breakdown",
            {"dimension": "path"},
            "invalid site id",
        ),
    ],
)
def test_validation_errors_are_400_json_and_touch_nothing(
    client, store, authorizer, path, params, fragment
):
    resp = client.simulate_get(path, params=params)
    assert resp.status_code == 400
    assert resp.json["error"] == "BadRequest" and fragment in resp.json["message"]
    assert store.calls == [] and authorizer.calls == []


def test_repeated_parameter_is_400(client):
    resp = client.simulate_get(SERIES, query_string="period=7d&period=24h")
    assert resp.status_code == 400 and "more than once" in resp.json["message"]


@pytest.mark.parametrize("authorization", ["", "Bearer nope", "Basic abc", "Bearer "])
def test_missing_or_bad_token_is_401(client, store, authorization):
    resp = client.simulate_get(SERIES, headers={"Authorization": authorization})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert store.calls == []


def test_no_token_is_401_before_any_parameter_is_judged(client, store):
    resp = client.simulate_get(
        "/v1/sites/not-a-site/stats/breakdown",
        query_string="dimension=nope&period=1y",
        headers={"Authorization": ""},
    )
    assert resp.status_code == 401
    assert store.calls == []


@pytest.mark.parametrize("site", [OTHER_SITE, "00000000000000aa"])
def test_someone_elses_or_missing_site_is_404(client, store, site):
    for endpoint, params in (("timeseries", {}), ("breakdown", {"dimension": "os"})):
        resp = client.simulate_get(f"/v1/sites/{site}/stats/{endpoint}", params=params)
        assert resp.status_code == 404 and resp.json["error"] == "NotFound"
    assert store.calls == []


def test_api_unavailable_is_503(store, clock):
    class DownAuthorizer:
        def site(self, token, site_id):
            raise Unavailable("api unreachable: ConnectionError")

    client = testing.TestClient(
        create_app(store, DownAuthorizer(), HttpMetrics(CollectorRegistry()), clock)
    )
    resp = client.simulate_get(SERIES, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 503 and resp.json["error"] == "ServiceUnavailable"


def test_storage_unavailable_is_503(client, store):
    def down(*args):
        raise Unavailable("analytics storage unavailable")

    store.totals = down
    assert client.simulate_get(BREAKDOWN, params={"dimension": "os"}).status_code == 503


def test_mount_paths_cover_stats_only():
    assert PATHS.match(f"/v1/sites/{SITE}/stats/timeseries")
    assert PATHS.match(f"/v1/sites/{SITE}/stats")
    assert not PATHS.match(f"/v1/sites/{SITE}")
    assert not PATHS.match(f"/v1/sites/{SITE}/deploys")
    assert not PATHS.match(f"/v1/sites/{SITE}/statsx")


def test_request_metrics_use_the_route_template(store, authorizer, clock):
    registry = CollectorRegistry()
    client = testing.TestClient(create_app(store, authorizer, HttpMetrics(registry), clock))
    client.simulate_get(SERIES, headers={"Authorization": f"Bearer {TOKEN}"})
    labels = {
        "service": "query",
        "route": "/v1/sites/{site_id}/stats/timeseries",
        "method": "GET",
        "status": "200",
    }
    assert registry.get_sample_value("ecstatic_http_requests_total", labels) == 1


# -- properties -----------------------------------------------------------------

_NAMES = st.sampled_from(["period", "interval", "tz", "bots", "dimension", "limit"]) | st.text(
    max_size=10
)
_VALUES = st.sampled_from(
    ["24h", "7d", "30d", "hour", "day", "include", "only", "path", "Europe/Berlin", "7"]
) | st.text(max_size=25)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)
@given(
    site=st.just(SITE) | st.text(min_size=1, max_size=20),
    endpoint=st.sampled_from(["timeseries", "breakdown"]),
    params=st.lists(st.tuples(_NAMES, _VALUES), max_size=5),
)
def test_arbitrary_query_strings_never_cause_a_500(client, store, site, endpoint, params):
    resp = client.simulate_get(
        f"/v1/sites/{quote(site, safe='')}/stats/{endpoint}", query_string=urlencode(params)
    )
    assert resp.status_code in (200, 400, 404), resp.text
    assert "error" in resp.json if resp.status_code != 200 else "results" in resp.json


_SITES = st.lists(
    st.text("0123456789abcdef", min_size=16, max_size=16), min_size=1, max_size=6, unique=True
)


@settings(max_examples=100)
@given(data=st.data(), sites=_SITES)
def test_a_token_only_ever_sees_its_own_sites(data, sites):
    users = ["u0", "u1", "u2"]
    owners = {site: data.draw(st.sampled_from(users)) for site in sites}
    tokens = {f"tok-{u}": u for u in users}
    authorizer = FakeAuthorizer(tokens, owners)
    store = FakeStore()
    clock = FixedClock(datetime(2026, 10, 26, 10, tzinfo=UTC))
    client = testing.TestClient(
        create_app(store, authorizer, HttpMetrics(CollectorRegistry()), clock)
    )
    asked = data.draw(st.sampled_from([*sites, "aaaaaaaaaaaaaaaa"]))
    user = data.draw(st.sampled_from(users))
    endpoint, params = data.draw(
        st.sampled_from([("timeseries", {}), ("breakdown", {"dimension": "path"})])
    )
    resp = client.simulate_get(
        f"/v1/sites/{asked}/stats/{endpoint}",
        params=params,
        headers={"Authorization": f"Bearer tok-{user}"},
    )
    mine = owners.get(asked) == user
    assert (resp.status_code == 404) == (not mine)
    assert (resp.status_code == 200) == mine
    # The store is asked only about the caller's own site, and only when it is theirs.
    assert store.sites_queried() == ({asked} if mine else set())
