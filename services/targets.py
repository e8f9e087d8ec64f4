"""Loki-style targets: which rooms a process runs, and how they are built.

``ecstatic serve api`` runs one room; ``ecstatic serve intake,query`` runs two side by
side; ``ecstatic serve all`` runs everything. This is the only module that imports the
rooms. Aliases have no builder of their own: they are just lists of dependencies.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MODULES", "Module", "TargetError", "resolve", "visible_targets", "build"]


@dataclass(frozen=True)
class Module:
    """A room (``builder`` is ``module:function``) or an alias (no builder)."""

    deps: tuple[str, ...] = ()
    builder: str | None = None
    visible: bool = True


MODULES: dict[str, Module] = {
    "api": Module(builder="services.falcon_apps.api.app:build"),
    "git": Module(builder="services.git.app:build"),
    "query": Module(builder="services.falcon_apps.query.app:build"),
    "intake": Module(builder="services.intake.service:build"),
    # Aliases.
    "http": Module(deps=("api", "git", "query")),
    "all": Module(deps=("api", "git", "query", "intake")),
}

# Rooms that open the ClickHouse engine. On the embedded default (chDB) only one process
# may own the data path, so these must share a process there.
STORAGE_OWNERS = frozenset({"intake", "query"})


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
