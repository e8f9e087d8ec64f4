"""Every metric Ecstatic exports, named here, built per room on a process registry.

Names follow ``ecstatic_<room>_<what>_<unit>``; counters get ``_total`` from the client
library. Labels stay low-cardinality: route templates, never raw paths or site ids.
A process builds only the groups of the rooms it runs, so ``/metrics`` shows what is there.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = [
    "new_registry",
    "HttpMetrics",
    "IntakeMetrics",
    "GitMetrics",
    "make_metrics_app",
    "make_measured_app",
]


def new_registry() -> CollectorRegistry:
    """A registry with the standard process, platform and GC collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class HttpMetrics:
    """Requests served by the WSGI rooms, by route template and status."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "ecstatic_http_requests",
            "HTTP requests served, by room, route template, method and status code.",
            ["service", "route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "ecstatic_http_request_duration_seconds",
            "Time to answer an HTTP request, by room and route template.",
            ["service", "route", "method"],
            registry=registry,
        )

    def observe(self, service: str, route: str, method: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        self.requests.labels(service, route, method, str(status)).inc()
        self.duration.labels(service, route, method).observe(seconds)


class IntakeMetrics:
    """Access-log lines through the intake: received, rejected, stored."""

    def __init__(self, registry: CollectorRegistry):
        self.lines_received = Counter(
            "ecstatic_intake_lines_received",
            "Access-log lines read, by source (caddy file, syslog).",
            ["source"],
            registry=registry,
        )
        self.lines_invalid = Counter(
            "ecstatic_intake_lines_invalid",
            "Lines skipped as malformed or unusable, by source and reason.",
            ["source", "reason"],
            registry=registry,
        )
        self.rows_inserted = Counter(
            "ecstatic_intake_rows_inserted",
            "Rows written to ClickHouse.",
            registry=registry,
        )
        self.insert_failures = Counter(
            "ecstatic_intake_insert_failures",
            "Batch inserts that failed and will be retried.",
            registry=registry,
        )
        self.insert_duration = Histogram(
            "ecstatic_intake_insert_duration_seconds",
            "Time to insert one batch into ClickHouse.",
            registry=registry,
        )
        self.buffered_rows = Gauge(
            "ecstatic_intake_buffered_rows",
            "Rows parsed and waiting for the next insert.",
            registry=registry,
        )
        self.syslog_connections = Gauge(
            "ecstatic_intake_syslog_connections",
            "Open syslog TCP connections.",
            registry=registry,
        )
        self.last_insert = Gauge(
            "ecstatic_intake_last_insert_timestamp_seconds",
            "Unix time of the last successful insert.",
            registry=registry,
        )
        self.lines_parsed = Counter(
            "ecstatic_intake_lines_parsed",
            "Lines parsed into a valid record, by source.",
            ["source"],
            registry=registry,
        )
        self.batch_rows = Histogram(
            "ecstatic_intake_batch_rows",
            "Rows per insert batch.",
            buckets=(1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000),
            registry=registry,
        )
        self.spool_batches = Gauge(
            "ecstatic_intake_spool_batches",
            "Batches on the disk spool that are not yet stored in ClickHouse.",
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "ecstatic_intake_spool_bytes",
            "Bytes on the disk spool that are not yet stored in ClickHouse.",
            registry=registry,
        )
        self.spool_capacity_bytes = Gauge(
            "ecstatic_intake_spool_capacity_bytes",
            "The spool's size cap; at the cap the intake stops reading its sources.",
            registry=registry,
        )
        self.oldest_unstored_age = Gauge(
            "ecstatic_intake_oldest_unstored_age_seconds",
            "Age of the oldest accepted line not yet inserted (0 when none waits).",
            registry=registry,
        )
        self.follower_lag_bytes = Gauge(
            "ecstatic_intake_follower_lag_bytes",
            "Bytes of a followed log file (Caddy's access log) not yet read.",
            ["source"],
            registry=registry,
        )
        self.connections_closed = Counter(
            "ecstatic_intake_syslog_connections_closed",
            "Syslog connections the intake closed itself, by reason "
            "(idle_timeout, evicted, not_allowed, over_cap, buffer_full, stopping).",
            ["reason"],
            registry=registry,
        )
        self.backpressure_seconds = Counter(
            "ecstatic_intake_backpressure_seconds",
            "Time the sources spent paused because the spool was full.",
            registry=registry,
        )
        self.stage_seconds = Counter(
            "ecstatic_intake_stage_seconds",
            "Thread time spent per pipeline stage (read, parse, enrich, spool, insert).",
            ["stage"],
            registry=registry,
        )


class GitMetrics:
    """Pushes and the deploys they trigger, step by step."""

    def __init__(self, registry: CollectorRegistry):
        self.deploys = Counter(
            "ecstatic_git_deploys",
            "Deploys by outcome (live, failed, superseded, rejected) and failure reason.",
            ["outcome", "reason"],
            registry=registry,
        )
        self.deploy_duration = Histogram(
            "ecstatic_git_deploy_duration_seconds",
            "Time from the end of a push to the deploy's outcome.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
            registry=registry,
        )
        self.step_duration = Histogram(
            "ecstatic_git_deploy_step_duration_seconds",
            "Time each pipeline step took (checkout, build, publish, activate, record).",
            ["step"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
            registry=registry,
        )
        self.build_duration = Histogram(
            "ecstatic_git_build_duration_seconds",
            "Time user builds ran in the sandbox, whatever their outcome.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
            registry=registry,
        )
        self.files = Counter(
            "ecstatic_git_deploy_files",
            "Files of published releases: uploaded, or skipped because the CDN had them.",
            ["result"],
            registry=registry,
        )
        self.uploaded_bytes = Counter(
            "ecstatic_git_deploy_uploaded_bytes",
            "Bytes sent to the CDN backend.",
            registry=registry,
        )
        self.deploy_bytes = Histogram(
            "ecstatic_git_deploy_bytes",
            "Bytes published per deploy.",
            buckets=(1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9),
            registry=registry,
        )


def make_metrics_app(registry: CollectorRegistry):
    """A WSGI app serving the registry in the Prometheus text format."""
    return make_wsgi_app(registry)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


class _MeasuredBody:
    """Wraps a WSGI response body so the request is recorded once it is fully sent."""

    def __init__(self, body, record):
        self._body = body
        self._record = record

    def __iter__(self):
        return iter(self._body)

    def close(self):
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            record, self._record = self._record, None
            if record is not None:
                record()


def make_measured_app(app, metrics: HttpMetrics, service: str, route_for):
    """Wrap a plain (non-Falcon) WSGI app with the shared HTTP request metrics.

    Args:
        app: the WSGI app.
        metrics: the process's ``HttpMetrics``.
        service: the room name used as the ``service`` label.
        route_for: maps a request path to a low-cardinality route template.
    """

    def measured(environ, start_response):
        started = time.perf_counter()
        status = ["500"]
        method = environ.get("REQUEST_METHOD", "GET")
        method = method if method in _METHODS else "OTHER"  # clients choose methods freely

        def capture(status_line, headers, exc_info=None):
            status[0] = status_line.split(" ", 1)[0]
            return start_response(status_line, headers, exc_info)

        def record():
            route = route_for(environ.get("PATH_INFO") or "/")
            metrics.observe(service, route, method, int(status[0]), time.perf_counter() - started)

        try:
            body = app(environ, capture)
        except BaseException:
            record()
            raise
        return _MeasuredBody(body, record)

    return measured
