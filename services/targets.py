"""The map of what runs where: targets, their ports, routes, state and peers.

Loki-style: ``ecstatic serve api`` runs one room; ``ecstatic serve intake,query`` runs two
side by side; ``ecstatic serve all`` runs everything. Aliases have no builder: they are
just lists of dependencies.

This table is the one place that knows the layout. The local stack (supervisord programs,
Caddy's routes, Prometheus's targets, health checks) and the Pulumi program are generated
from it, and ``tests/core/test_layout.py`` fails when either disagrees with it. It is also
the only module that imports the rooms, lazily, so ``services.core`` may read it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MODULES",
    "PLATFORM",
    "STATE",
    "Listener",
    "Module",
    "Platform",
    "Process",
    "State",
    "TargetError",
    "build",
    "listeners",
    "processes",
    "resolve",
    "visible_targets",
]


@dataclass(frozen=True)
class Listener:
    """A port something listens on; ``name`` is its config key (``ECSTATIC_<NAME>_PORT``)."""

    name: str
    default: int
    protocol: str = "http"  # "http" or "syslog" (TCP)
    # Reachable from outside the box: only Caddy's port, and the intake's syslog port
    # (restricted to the CDN's edge addresses by the firewall).
    public: bool = False


@dataclass(frozen=True)
class State:
    """A piece of durable state: a directory under ``ECSTATIC_HOME`` (a volume in k8s)."""

    path: str
    what: str
    size_gi: int = 1  # the volume size production asks for, before the user's override


@dataclass(frozen=True)
class Module:
    """A room (``builder`` is ``module:function``) or an alias (no builder)."""

    deps: tuple[str, ...] = ()
    builder: str | None = None
    visible: bool = True
    # The first listener is the room's HTTP port: its /healthz and /metrics answer there.
    listeners: tuple[Listener, ...] = ()
    # Path regexp the public proxy (Caddy) sends to this room; None: never routed publicly.
    route: str | None = None
    # The proxy flushes responses as they come (git's live ``remote:`` lines).
    stream: bool = False
    writes: tuple[str, ...] = ()  # STATE names
    reads: tuple[str, ...] = ()
    # Opens the ClickHouse engine. On the embedded default (chDB: one engine per process and
    # per data path) every such room shares one process and the "clickhouse" state.
    storage: bool = False
    talks_to: tuple[str, ...] = ()  # rooms, or "clickhouse"


@dataclass(frozen=True)
class Platform:
    """A program of the platform that is not a room (Caddy, Prometheus)."""

    listeners: tuple[Listener, ...]
    health: tuple[str, str]  # (listener, path) answering 200 when ready
    metrics: tuple[str, str] | None  # (listener, path) Prometheus scrapes
    writes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    talks_to: tuple[str, ...] = ()


STATE: dict[str, State] = {
    "metadata": State("api", "users, token hashes, sites, hostnames, deploys (SQLite)"),
    "repositories": State("git", "bare git repositories, one per site", 10),
    "releases": State("cdn", "release directories and the live switch per hostname", 20),
    "access-logs": State("logs", "Caddy's JSON access log, which the intake follows", 10),
    "spool": State("intake", "the intake's offsets, spool and host cache", 5),
    # Only on the embedded default; production uses a ClickHouse server.
    "clickhouse": State("clickhouse", "the embedded ClickHouse engine's data", 20),
    "caddy": State("caddy", "Caddy's certificates (Let's Encrypt) and autosaved config"),
    "prometheus": State("prometheus", "Prometheus's time-series database", 10),
    "alertmanager": State("alertmanager", "Alertmanager's silences and notification log"),
}

MODULES: dict[str, Module] = {
    "api": Module(
        builder="services.falcon_apps.api.app:build",
        listeners=(Listener("api", 8101),),
        route=r"^/v1/",
        writes=("metadata",),
    ),
    "git": Module(
        builder="services.git.app:build",
        listeners=(Listener("git", 8102),),
        # Pushes, and restores (the git room holds the releases).
        route=r"^/(git/|v1/sites/[^/]+/deploys/[^/]+/restore$)",
        stream=True,
        writes=("repositories", "releases"),
        talks_to=("api",),
    ),
    "query": Module(
        builder="services.falcon_apps.query.app:build",
        listeners=(Listener("query", 8103),),
        # Inside the api's /v1/ prefix: the proxy tries it first (see ``routes``).
        route=r"^/v1/sites/[^/]+/stats(/|$)",
        storage=True,
        talks_to=("api", "clickhouse"),
    ),
    "intake": Module(
        builder="services.intake.service:build",
        listeners=(
            Listener("intake", 8104),
            Listener("intake_syslog", 8514, protocol="syslog", public=True),
        ),
        writes=("spool", "access-logs"),
        storage=True,
        talks_to=("api", "clickhouse"),
    ),
    # Aliases.
    "http": Module(deps=("api", "git", "query")),
    "all": Module(deps=("api", "git", "query", "intake")),
}

PLATFORM: dict[str, Platform] = {
    "caddy": Platform(
        listeners=(Listener("http", 8080, public=True), Listener("caddy_admin", 2119)),
        health=("http", "/healthz"),
        metrics=("caddy_admin", "/metrics"),
        writes=("access-logs", "caddy"),
        reads=("releases",),
        talks_to=("api", "git", "query"),
    ),
    "prometheus": Platform(
        listeners=(Listener("prometheus", 9190),),
        health=("prometheus", "/-/ready"),
        metrics=("prometheus", "/metrics"),
        writes=("prometheus",),
        talks_to=("api", "git", "query", "intake", "caddy", "alertmanager"),
    ),
    "alertmanager": Platform(
        # Not Debian's default 9093, which its own prometheus-alertmanager service takes.
        listeners=(Listener("alertmanager", 9193),),
        health=("alertmanager", "/-/ready"),
        metrics=("alertmanager", "/metrics"),
        writes=("alertmanager",),
    ),
}


def listeners() -> dict[str, Listener]:
    """Every listener of the layout by name: the ports config knows."""
    found: dict[str, Listener] = {}
    for part in [*MODULES.values(), *PLATFORM.values()]:
        for listener in part.listeners:
            found[listener.name] = listener
    return found


@dataclass(frozen=True)
class Process:
    """One process (a supervisord program, a Deployment): rooms that run together."""

    name: str
    rooms: tuple[str, ...]
    embedded: bool = False  # it opens the embedded engine, so it also owns its data

    @property
    def spec(self) -> str:
        """The ``ecstatic serve`` argument."""
        return ",".join(self.rooms)

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """Every port this process binds."""
        return tuple(lis for room in self.rooms for lis in MODULES[room].listeners)

    @property
    def http(self) -> Listener:
        """The port its /healthz and /metrics answer on (every room's port serves both)."""
        return self.listeners[0]

    @property
    def writes(self) -> tuple[str, ...]:
        """State it writes, in STATE order."""
        mine = {s for room in self.rooms for s in MODULES[room].writes}
        if self.embedded and self.storage:
            mine.add("clickhouse")
        return tuple(s for s in STATE if s in mine)

    @property
    def reads(self) -> tuple[str, ...]:
        """State it only reads."""
        mine = {s for room in self.rooms for s in MODULES[room].reads} - set(self.writes)
        return tuple(s for s in STATE if s in mine)

    @property
    def storage(self) -> bool:
        """True when it opens ClickHouse."""
        return any(MODULES[room].storage for room in self.rooms)

    @property
    def talks_to(self) -> tuple[str, ...]:
        """Peers outside this process (rooms or "clickhouse")."""
        peers = {p for room in self.rooms for p in MODULES[room].talks_to} - set(self.rooms)
        return tuple(sorted(peers))


def processes(embedded: bool) -> list[Process]:
    """The processes that run every room, in MODULES order.

    Args:
        embedded: ClickHouse is the embedded engine (chDB), which allows one engine per
            process and one process per data path: every storage room then shares one
            process, which also owns the "clickhouse" state. With a ClickHouse server each
            room runs alone.
    """
    rooms = [name for name, module in MODULES.items() if module.builder]
    if not embedded:
        return [Process(name, (name,)) for name in rooms]
    owners = tuple(r for r in rooms if MODULES[r].storage)
    result: list[Process] = []
    for name in rooms:
        if name not in owners:
            result.append(Process(name, (name,)))
        elif name == owners[0]:
            result.append(Process("-".join(sorted(owners)), owners, embedded=True))
    return result


def routes() -> list[tuple[str, Module]]:
    """Rooms the public proxy routes to, most specific first (query's stats sit in /v1/)."""
    routed = [(name, m) for name, m in MODULES.items() if m.route]
    return sorted(routed, key=lambda item: -len(item[1].route or ""))


class TargetError(ValueError):
    """An unknown target name or a dependency cycle."""


def visible_targets() -> list[str]:
    """Every name a user may pass to ``serve``."""
    return [name for name, module in MODULES.items() if module.visible]


def resolve(targets: Iterable[str] | str) -> list[str]:
    """Expand aliases and dependencies into an ordered, de-duplicated list of rooms.

    Raises:
        TargetError: for an unknown or invisible name, or a cycle.
    """
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    names = list(targets)
    if not names:
        raise TargetError("no target given; choose from " + ", ".join(visible_targets()))
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise TargetError("dependency cycle: " + " -> ".join((*path, name)))
        module = MODULES.get(name)
        if module is None or (not module.visible and not path):
            raise TargetError(
                f"unknown target {name!r}; choose from " + ", ".join(visible_targets())
            )
        for dep in module.deps:
            visit(dep, (*path, name))
        if module.builder and name not in ordered:
            ordered.append(name)

    for name in names:
        visit(name, ())
    return ordered


def build(name: str, ctx):
    """Build one room for this process: a ``Mount`` or a ``Background``."""
    module_name, _, function = MODULES[name].builder.partition(":")
    return getattr(importlib.import_module(module_name), function)(ctx)
