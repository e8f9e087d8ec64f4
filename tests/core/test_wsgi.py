import re

from falcon import testing

from services.core.metrics import new_registry
from services.core.runtime import Mount
from services.wsgi import ProcessApp


def _app(body):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return app


class FakeBackground:
    name = "intake"

    def __init__(self, ok=True):
        self.ok = ok

    def start(self):
        pass

    def stop(self, timeout):
        pass

    def healthy(self):
        return self.ok


def _process(background_ok=True):
    mounts = [
        Mount("api", re.compile(r"^/(v1|internal)/"), _app(b"api")),
        Mount("query", re.compile(r"^/v1/sites/[^/]+/stats(/|$)"), _app(b"query")),
        Mount("git", re.compile(r"^/git/"), _app(b"git")),
    ]
    return ProcessApp(mounts, [FakeBackground(background_ok)], new_registry())


def test_dispatch_prefers_the_nested_query_paths():
    client = testing.TestClient(_process())
    assert client.simulate_get("/v1/sites/abc/stats/timeseries").text == "query"
    assert client.simulate_get("/v1/sites/abc").text == "api"
    assert client.simulate_get("/v1/sites/abc/deploys").text == "api"
    assert client.simulate_get("/git/abc.git/info/refs").text == "git"
    missing = client.simulate_get("/nothing")
    assert missing.status_code == 404
    assert "message" in missing.json


def test_healthz_reports_each_room():
    ok = testing.TestClient(_process()).simulate_get("/healthz")
    assert ok.status_code == 200
    assert ok.json["rooms"] == {"query": True, "git": True, "api": True, "intake": True}
    bad = testing.TestClient(_process(background_ok=False)).simulate_get("/healthz")
    assert bad.status_code == 503
    assert bad.json["rooms"]["intake"] is False


def test_metrics_are_prometheus_text():
    result = testing.TestClient(_process()).simulate_get("/metrics")
    assert result.status_code == 200
    assert "process_cpu_seconds_total" in result.text
    assert result.headers["Content-Type"].startswith("text/plain")
