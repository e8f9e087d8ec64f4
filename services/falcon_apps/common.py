"""What every Falcon room shares: JSON errors, request metrics, access logging."""

from __future__ import annotations

import logging
import time

import falcon

from services.core import errors
from services.core.metrics import HttpMetrics

__all__ = ["install", "create_base_app", "MetricsMiddleware"]

log = logging.getLogger(__name__)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_STATUS = {
    errors.BadRequest: falcon.HTTPBadRequest,
    errors.Unauthorized: falcon.HTTPUnauthorized,
    errors.NotFound: falcon.HTTPNotFound,
    errors.Conflict: falcon.HTTPConflict,
    errors.Unavailable: falcon.HTTPServiceUnavailable,
}


def _serialize_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    # Always JSON with a message, whatever the client accepts: API clients and the
    # git client's error display both read it.
    resp.content_type = falcon.MEDIA_JSON
    resp.media = {"error": _error_name(exc.title), "message": exc.description or exc.title}


def _error_name(title: str) -> str:
    # Falcon's own errors are titled like "404 Not Found"; ours like "NotFound".
    code, _, reason = title.partition(" ")
    return reason.replace(" ", "") if code.isdigit() and reason else title


def _domain_error(req, resp, exc: errors.EcstaticError, params) -> None:
    http_error = _STATUS.get(type(exc), falcon.HTTPInternalServerError)
    kwargs = {"title": http_error.__name__.removeprefix("HTTP"), "description": exc.message}
    if http_error is falcon.HTTPUnauthorized:
        kwargs["challenges"] = ["Bearer"]
    raise http_error(**kwargs)


def _unexpected_error(req, resp, exc: Exception, params) -> None:
    if isinstance(exc, falcon.HTTPError):
        raise exc
    log.exception("unhandled error", extra={"path": req.path, "method": req.method})
    raise falcon.HTTPInternalServerError(title="InternalServerError", description="internal error")


class MetricsMiddleware:
    """Counts and times every request by its route template, never its raw path."""

    def __init__(self, metrics: HttpMetrics, service: str):
        self._metrics = metrics
        self._service = service

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(self, req, resp, resource, req_succeeded) -> None:
        route = req.uri_template or "unmatched"
        status = int(str(resp.status).split()[0]) if resp.status else 200
        elapsed = time.perf_counter() - req.context.get("started", time.perf_counter())
        method = req.method if req.method in _METHODS else "OTHER"  # clients pick methods
        self._metrics.observe(self._service, route, method, status, elapsed)


def install(app: falcon.App) -> falcon.App:
    """Wire the shared error handling into a Falcon app."""
    app.set_error_serializer(_serialize_error)
    app.add_error_handler(Exception, _unexpected_error)
    app.add_error_handler(errors.EcstaticError, _domain_error)
    return app


def create_base_app(
    metrics: HttpMetrics, service: str, middleware: list | None = None
) -> falcon.App:
    """A Falcon app with the shared middleware and error handling installed."""
    app = falcon.App(middleware=[MetricsMiddleware(metrics, service), *(middleware or [])])
    return install(app)
