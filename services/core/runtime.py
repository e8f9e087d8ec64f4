"""What a room's ``build(ctx)`` receives and returns.

A room is built once per process. It returns either a ``Mount`` (a WSGI app that owns
some URL paths) or a ``Background`` (a long-running task such as the intake's asyncio
loop). ``services.targets`` builds the rooms a process runs and ``services.wsgi`` mounts
them side by side with one ``/metrics`` and one ``/healthz``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from .config import Config
from .metrics import HttpMetrics, new_registry
from .schema import migrate
from .storage import Storage, open_storage

__all__ = ["Context", "Mount", "Background", "DeferredStorage"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class Mount:
    """A WSGI app and the paths it answers; ``healthy`` feeds ``/healthz``."""

    name: str
    paths: re.Pattern[str]
    app: WSGIApp
    healthy: Callable[[], bool] = lambda: True


class Background(Protocol):
    """A task that runs beside the WSGI apps, started after fork and stopped on SIGTERM."""

    name: str

    def start(self) -> None:
        """Start running (returns at once)."""

    def stop(self, timeout: float) -> None:
        """Stop, finishing or saving in-flight work; return within ``timeout``."""

    def healthy(self) -> bool:
        """True while the task is doing its job."""


@dataclass
class Context:
    """The config and the shared parts built so far in this process."""

    config: Config
    registry: CollectorRegistry = field(default_factory=new_registry)
    _http_metrics: HttpMetrics | None = None
    _storage: Storage | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def http_metrics(self) -> HttpMetrics:
        """The process's HTTP metrics, shared by every mounted room."""
        with self._lock:
            if self._http_metrics is None:
                self._http_metrics = HttpMetrics(self.registry)
            return self._http_metrics

    def storage(self) -> Storage:
        """The process's ClickHouse storage, opened and migrated on first use."""
        with self._lock:
            if self._storage is None:
                storage = open_storage(self.config.clickhouse_url)
                migrate(storage)
                self._storage = storage
            return self._storage


class DeferredStorage:
    """The process's storage, opened at its first successful use, not at build.

    A process may start while another still holds the embedded engine's data path (a
    hand-over: the new intake takes the port first, the old one stops after); until
    the path is free every call raises, and the callers (the intake's writer, the salt
    store) retry, while accepted lines wait in the spool.
    """

    def __init__(self, ctx: Context):
        self._ctx = ctx

    def __getattr__(self, name: str):
        return getattr(self._ctx.storage(), name)
