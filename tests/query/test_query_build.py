"""build(ctx) end to end: the real SiteAuthorizer against a stub api, the real chDB engine."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from falcon import testing
from query_dataset import SA, SD, metrics, request_row

from services.core.config import Config
from services.core.runtime import Context
from services.core.schema import REQUEST_COLUMNS
from services.falcon_apps.query.app import build

pytestmark = pytest.mark.integration


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def stub_api():
    """A stand-in api on a free loopback port: token ecs_good owns site SD only."""

    def app(environ, start_response):
        token = environ.get("HTTP_AUTHORIZATION", "")
        site = environ["PATH_INFO"].rsplit("/", 1)[-1]
        if token != "Bearer ecs_good":
            status, body = "401 Unauthorized", {"error": "Unauthorized"}
        elif site == SD:
            status, body = "200 OK", {"id": SD}
        else:
            status, body = "404 Not Found", {"error": "NotFound"}
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_build_wires_the_real_authorizer_and_storage(ch_storage, chdb_url, stub_api, tmp_path):
    now = datetime.now(UTC)
    ch_storage.insert(
        "requests", [request_row(SD, now - timedelta(seconds=5), "/now", bytes=7)], REQUEST_COLUMNS
    )
    env = {
        "ECSTATIC_HOME": str(tmp_path),
        "ECSTATIC_CLICKHOUSE_URL": chdb_url,
        "ECSTATIC_API_URL": stub_api,
    }
    mount = build(Context(Config.from_env(env)))
    assert mount.name == "query" and mount.healthy() is True
    client = testing.TestClient(mount.app)
    good = {"Authorization": "Bearer ecs_good"}
    body = client.simulate_get(
        f"/v1/sites/{SD}/stats/breakdown",
        params={"dimension": "path", "period": "24h"},
        headers=good,
    ).json
    assert {"value": "/now", **metrics(1, 1, 7, 1)} in body["results"]
    assert client.simulate_get(f"/v1/sites/{SA}/stats/timeseries", headers=good).status_code == 404
    assert client.simulate_get(f"/v1/sites/{SD}/stats/timeseries").status_code == 401
    bad = {"Authorization": "Bearer ecs_bad"}
    assert client.simulate_get(f"/v1/sites/{SD}/stats/timeseries", headers=bad).status_code == 401
