from services.core.metrics import HttpMetrics, make_measured_app, new_registry


def test_measured_app_records_route_status_and_latency():
    registry = new_registry()
    metrics = HttpMetrics(registry)

    def app(environ, start_response):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"a", b"b"]

    measured = make_measured_app(app, metrics, "git", lambda path: "/git/{site}.git/info/refs")
    seen = []
    body = measured(
        {"PATH_INFO": "/git/abc.git/info/refs", "REQUEST_METHOD": "GET"},
        lambda status, headers, exc_info=None: seen.append(status),
    )
    assert b"".join(body) == b"ab"
    labels = {
        "service": "git",
        "route": "/git/{site}.git/info/refs",
        "method": "GET",
        "status": "404",
    }
    assert (
        registry.get_sample_value("ecstatic_http_requests_total", labels) is None
    )  # not until closed
    body.close()
    assert registry.get_sample_value("ecstatic_http_requests_total", labels) == 1.0
    assert (
        registry.get_sample_value(
            "ecstatic_http_request_duration_seconds_count",
            {"service": "git", "route": "/git/{site}.git/info/refs", "method": "GET"},
        )
        == 1.0
    )
    assert seen == ["404 Not Found"]
