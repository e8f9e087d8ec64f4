"""The query room's WSGI app: stats of one site, answered from ClickHouse."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import falcon

from services.core.auth import SiteAuthorizer
from services.core.metrics import HttpMetrics
from services.core.runtime import Context, Mount
from services.core.storage import Budget
from services.falcon_apps.common import create_base_app

from .resources import Authorizer, Breakdown, Timeseries
from .store import StatsStore

__all__ = ["create_app", "build", "PATHS"]

PATHS = re.compile(r"^/v1/sites/[^/]+/stats(/|$)")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_app(
    stats_store: StatsStore,
    authorizer: Authorizer,
    http_metrics: HttpMetrics,
    clock: Callable[[], datetime] = _utcnow,
) -> falcon.App:
    """Wire the stats routes from already-built collaborators.

    Args:
        stats_store: runs the SQL (``StatsStore`` or a fake with the same methods).
        authorizer: answers whether a token may see a site (``SiteAuthorizer`` or a fake).
        http_metrics: the process's request metrics.
        clock: returns the current instant, timezone-aware.
    """
    app = create_base_app(http_metrics, "query")
    app.add_route(
        "/v1/sites/{site_id}/stats/timeseries", Timeseries(stats_store, authorizer, clock)
    )
    app.add_route("/v1/sites/{site_id}/stats/breakdown", Breakdown(stats_store, authorizer, clock))
    return app


class _StorageOnFirstUse:
    """Opens the process's storage at the first query rather than at build time.

    chDB must not be opened in a parent process that then forks (gunicorn), and the
    embedded engine is shared with the intake in the same process through ``ctx``.
    """

    def __init__(self, ctx: Context):
        self._ctx = ctx

    def rows(
        self, sql: str, parameters: dict[str, Any] | None = None, budget: Budget | None = None
    ) -> list[dict[str, Any]]:
        return self._ctx.storage().rows(sql, parameters, budget)


def build(ctx: Context) -> Mount:
    """The query room for this process: real authorizer and ClickHouse store.

    Every query runs under ``config.query``'s caps, and on the embedded engine it waits
    behind the intake's inserts (see ``services.core.storage``).
    """
    authorizer = SiteAuthorizer(ctx.config.api_url, ctx.config.auth_cache_seconds)
    store = StatsStore(_StorageOnFirstUse(ctx), ctx.config.query)
    app = create_app(store, authorizer, ctx.http_metrics)

    def healthy() -> bool:
        # /healthz reports; opening the storage may raise when ClickHouse is down.
        try:
            return ctx.storage().ping()
        except Exception:  # noqa: BLE001
            return False

    return Mount(name="query", paths=PATHS, app=app, healthy=healthy)
