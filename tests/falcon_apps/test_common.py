import falcon
import pytest
from falcon import testing

from services.core.metrics import HttpMetrics, new_registry
from services.falcon_apps.common import create_base_app


class Thing:
    def on_get(self, req, resp, thing_id):
        resp.media = {"id": thing_id}


def _client():
    registry = new_registry()
    app = create_base_app(HttpMetrics(registry), "api")
    app.add_route("/v1/things/{thing_id}", Thing())
    return testing.TestClient(app), registry


@pytest.mark.filterwarnings("ignore::wsgiref.validate.WSGIWarning")
def test_metrics_use_route_templates_and_bounded_methods():
    client, registry = _client()
    client.simulate_get("/v1/things/1")
    client.simulate_get("/v1/things/2")
    for method in ("FOO1", "FOO2"):
        client.simulate_request(method, "/v1/things/1")
    count = registry.get_sample_value
    assert (
        count(
            "ecstatic_http_requests_total",
            {"service": "api", "route": "/v1/things/{thing_id}", "method": "GET", "status": "200"},
        )
        == 2
    )
    assert (
        count(
            "ecstatic_http_requests_total",
            {
                "service": "api",
                "route": "/v1/things/{thing_id}",
                "method": "OTHER",
                "status": "400",
            },
        )
        == 2
    )


def test_falcon_errors_are_json_with_a_message():
    client, _ = _client()
    missing = client.simulate_get("/nowhere")
    assert missing.status_code == 404
    assert missing.json == {"error": "NotFound", "message": "404 Not Found"}
    assert missing.headers["Content-Type"].startswith(falcon.MEDIA_JSON)
