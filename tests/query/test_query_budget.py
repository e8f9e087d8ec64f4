"""Tiny caps on the real engine: an over-budget query is a clear 503, the process lives on."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from falcon import testing
from prometheus_client import CollectorRegistry
from query_dataset import NOW
from query_fakes import FakeAuthorizer, FixedClock

from services.core.intake_config import QueryConfig
from services.core.metrics import HttpMetrics
from services.core.storage import OVER_BUDGET_CODES, Budget
from services.falcon_apps.query.app import create_app
from services.falcon_apps.query.store import StatsStore

pytestmark = pytest.mark.integration

ROWS = 300_000
SITE = secrets.token_hex(8)


@pytest.fixture(scope="module")
def busy_site(ch_storage):
    # Many distinct visitors in the last day: counting them needs a few MiB of hash set.
    ch_storage.command(
        "INSERT INTO requests (site_id, ts, path, is_page, bytes, visitor_id)"
        " SELECT {site:String}, {start:DateTime64(3, 'UTC')} + toIntervalSecond(number % 80000),"
        " concat('/', toString(number % 50)), true, 10, number FROM numbers({rows:UInt64})",
        {"site": SITE, "start": NOW - timedelta(hours=23), "rows": ROWS},
    )
    return ch_storage


def client_with(storage, limits):
    authorizer = FakeAuthorizer({"ecs_alice": "alice"}, {SITE: "alice"})
    app = create_app(
        StatsStore(storage, limits), authorizer, HttpMetrics(CollectorRegistry()), FixedClock(NOW)
    )
    return testing.TestClient(app, headers={"Authorization": "Bearer ecs_alice"})


def test_a_query_over_its_memory_cap_is_a_clear_503_and_the_next_one_works(busy_site):
    tiny = client_with(busy_site, QueryConfig(max_memory_mb=1, max_seconds=10))
    resp = tiny.simulate_get(
        f"/v1/sites/{SITE}/stats/timeseries", params={"period": "24h", "tz": "Asia/Kathmandu"}
    )
    assert resp.status_code == 503
    assert resp.json == {
        "error": "ServiceUnavailable",
        "message": "this query needs more than its 1 MiB of memory; ask for a shorter period",
    }
    roomy = client_with(busy_site, QueryConfig())
    body = roomy.simulate_get(
        f"/v1/sites/{SITE}/stats/timeseries", params={"period": "24h", "tz": "Asia/Kathmandu"}
    ).json
    assert body["totals"] == {
        "pageviews": ROWS, "requests": ROWS, "bytes": 10 * ROWS, "visitors": ROWS,
    }  # fmt: skip
    assert sum(r["requests"] for r in body["results"]) == ROWS


def test_a_query_over_its_time_cap_stops_there_and_frees_the_engine(busy_site):
    started = time.monotonic()
    with pytest.raises(DatabaseError) as caught:
        busy_site.rows(
            "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 3",
            budget=Budget(max_memory_bytes=64 << 20, max_seconds=0.3),
        )
    assert OVER_BUDGET_CODES[caught.value.code] == "time"
    assert time.monotonic() - started < 2.0
    assert busy_site.rows("SELECT 1 AS ok") == [{"ok": 1}]


def test_a_result_over_its_row_cap_is_refused(busy_site):
    with pytest.raises(DatabaseError) as caught:
        busy_site.rows(
            "SELECT number FROM numbers(20)", budget=Budget(64 << 20, 5.0, max_result_rows=5)
        )
    assert OVER_BUDGET_CODES[caught.value.code] == "rows"


def test_the_budget_does_not_stick_to_the_shared_engine(busy_site):
    busy_site.rows("SELECT 1", budget=Budget(1 << 20, 0.5, max_result_rows=1))
    limits = busy_site.rows(
        "SELECT getSetting('max_memory_usage') AS memory, getSetting('max_result_rows') AS rows"
    )
    assert limits == [{"memory": 0, "rows": 0}]
