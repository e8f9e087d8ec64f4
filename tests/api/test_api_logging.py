"""No token or credential in any log line: not from Falcon, our handlers, nor gunicorn."""

from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace

from falcon import testing
from gunicorn.config import Config as GunicornConfig
from gunicorn.glogging import Logger as GunicornLogger
from prometheus_client import CollectorRegistry

from services.core.metrics import HttpMetrics
from services.core.runtime import Context
from services.falcon_apps.api import redact
from services.falcon_apps.api.app import build, create_app

SECRET = "secret"


class ExplodingStore:
    """Fails every store call, so the 500 path logs its traceback."""

    def __getattr__(self, name):
        raise RuntimeError("boom")


def records_text(caplog):
    return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)


def test_api_logs_no_query_string_nor_authorization_header(
    caplog, client, store, config, registry, alice
):
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": f"Bearer {SECRET}"}
    for path in ("/v1/sites", "/v1/nothing", "/v1/sites/abc/deploys", "/internal/hostmap"):
        client.simulate_get(path, query_string=f"token={SECRET}", headers=headers)
        client.simulate_post(path, query_string=f"token={SECRET}", headers=headers, json={})
    # A 500: the unhandled-error log names the path, never the query or the headers.
    broken = testing.TestClient(
        create_app(ExplodingStore(), config, HttpMetrics(CollectorRegistry()))
    )
    response = broken.simulate_get("/v1/sites", query_string=f"token={SECRET}", headers=headers)
    assert response.status_code == 500
    assert any(r.levelno >= logging.ERROR for r in caplog.records)
    assert SECRET not in records_text(caplog)


def gunicorn_logger():
    cfg = GunicornConfig()
    cfg.set("accesslog", "-")
    glog = GunicornLogger(cfg)
    return glog


def test_gunicorn_access_and_error_lines_lose_the_query_string(caplog, config):
    build(Context(config))  # installs the filter, as the worker does
    glog = gunicorn_logger()
    for name in redact.LOGGERS:
        logging.getLogger(name).addHandler(caplog.handler)
    try:
        environ = {
            "REQUEST_METHOD": "GET",
            "RAW_URI": f"/v1/sites?token={SECRET}",
            "PATH_INFO": "/v1/sites",
            "QUERY_STRING": f"token={SECRET}",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_REFERER": f"https://example.org/page?token={SECRET}",
            "REMOTE_ADDR": "127.0.0.1",
        }
        req = SimpleNamespace(headers=[("AUTHORIZATION", f"Bearer {SECRET}")])
        resp = SimpleNamespace(status="200 OK", sent=10, headers=[])
        glog.access(resp, req, environ, timedelta(milliseconds=5))
        glog.cfg.set("access_log_format", "%(r)s %(q)s %(f)s %({authorization}i)s")
        glog.access(resp, req, environ, timedelta(milliseconds=5))
        glog.error("Error handling request %s %s", "GET", f"/v1/sites?token={SECRET}")
        glog.warning(f"Invalid request from ip=1.2.3.4: bad line 'GET /?token={SECRET}'")
    finally:
        for name in redact.LOGGERS:
            logging.getLogger(name).removeHandler(caplog.handler)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4
    assert "GET /v1/sites HTTP/1.1" in messages[0]
    assert all(SECRET not in m for m in messages), messages


def test_install_is_idempotent():
    redact.install()
    redact.install()
    for name in redact.LOGGERS:
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, redact.QueryStringFilter) for f in filters) == 1
