"""The WSGI app of one process: its rooms side by side, one /metrics, one /healthz.

Routes are the same in every mode: each room owns its paths, so a process running
several rooms mounts them next to each other and the proxy never rewrites anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from services.core.metrics import make_metrics_app
from services.core.runtime import Background, Mount

__all__ = ["ProcessApp", "MOUNT_ORDER"]

log = logging.getLogger(__name__)

# query's paths (/v1/sites/{id}/stats/...) sit inside api's /v1/ prefix, so query is
# tried first; everything else is disjoint.
MOUNT_ORDER = ("query", "git", "api")


def _json(start_response, status: str, body: dict) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


class ProcessApp:
    """Dispatches by path to the mounted rooms; serves /metrics and /healthz itself."""

    def __init__(
        self,
        mounts: Sequence[Mount],
        backgrounds: Sequence[Background],
        registry: CollectorRegistry,
    ):
        rank = {name: i for i, name in enumerate(MOUNT_ORDER)}
        self.mounts = sorted(mounts, key=lambda m: rank.get(m.name, len(rank)))
        self.backgrounds = list(backgrounds)
        self._metrics_app = make_metrics_app(registry)

    def health(self) -> dict[str, bool]:
        """Each room's health, by name."""
        rooms: dict[str, bool] = {}
        for part in [*self.mounts, *self.backgrounds]:
            try:
                rooms[part.name] = bool(part.healthy())
            except Exception:  # noqa: BLE001 - a failing check is an unhealthy room
                log.exception("health check failed", extra={"room": part.name})
                rooms[part.name] = False
        return rooms

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            rooms = self.health()
            ok = all(rooms.values())
            status = "200 OK" if ok else "503 Service Unavailable"
            return _json(
                start_response, status, {"status": "ok" if ok else "unhealthy", "rooms": rooms}
            )
        for mount in self.mounts:
            if mount.paths.match(path):
                return mount.app(environ, start_response)
        return _json(
            start_response,
            "404 Not Found",
            {"error": "NotFound", "message": f"no route for {path}"},
        )
