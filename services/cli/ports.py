"""Who holds a TCP port: so a taken port is a clear error and health is our own.

``ecstatic up`` once printed "Ecstatic is up" while its processes were failing with
"Address already in use": the health checks were answered by another program on the same
ports. Here a port counts only when the listening socket belongs to the expected process.
"""

from __future__ import annotations

from collections.abc import Iterable

import psutil

__all__ = ["describe", "family", "holders", "owned_by", "taken"]


def holders(port: int) -> set[int]:
    """Pids with a TCP socket listening on ``port`` (any address)."""
    return {
        conn.pid
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid
    }


def describe(pid: int) -> str:
    """``pid 123 (caddy run --config …)``, or just the pid when it is gone."""
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())[:120]
    except psutil.Error:
        return f"pid {pid}"
    return f"pid {pid} ({cmdline})"


def family(pid: int | None) -> set[int]:
    """``pid`` and all its descendants (empty when there is no such process)."""
    if not pid:
        return set()
    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.Error:
        return set()


def taken(ports: Iterable[int], ours: int | None = None) -> list[str]:
    """One line per port in use: ``port 8080 is taken by pid 123 (...)``.

    Args:
        ports: The ports to check.
        ours: A process (this stack's supervisord) whose family's listeners are not
            "taken": a part it is restarting may hold its port before it is RUNNING.
    """
    mine = family(ours)
    problems = []
    for port in ports:
        pids = holders(port) - mine
        if pids:
            who = ", ".join(describe(pid) for pid in sorted(pids))
            problems.append(f"port {port} is taken by {who}")
    return problems


def owned_by(port: int, *pids: int | None) -> bool:
    """True when something listens on ``port`` and every listener is one of ``pids`` or
    their children (two during a hand-over: the old and the new process)."""
    members = set().union(*(family(pid) for pid in pids))
    listeners = holders(port)
    return bool(members) and bool(listeners) and listeners <= members
