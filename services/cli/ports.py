"""Who holds a TCP port: so a taken port is a clear error and health is our own.

``ecstatic up`` once printed "Ecstatic is up" while its processes were failing with
"Address already in use": the health checks were answered by another program on the same
ports. Here a port counts only when the listening socket belongs to the expected process.
"""

from __future__ import annotations

from collections.abc import Iterable

import psutil

__all__ = ["describe", "holders", "owned_by", "taken"]


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


def taken(ports: Iterable[int]) -> list[str]:
    """One line per port in use: ``port 8080 is taken by pid 123 (...)``."""
    problems = []
    for port in ports:
        pids = holders(port)
        if pids:
            who = ", ".join(describe(pid) for pid in sorted(pids))
            problems.append(f"port {port} is taken by {who}")
    return problems


def owned_by(port: int, pid: int | None) -> bool:
    """True when something listens on ``port`` and every listener is ``pid`` or its child."""
    if not pid:
        return False
    try:
        root = psutil.Process(pid)
        family = {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.Error:
        return False
    listeners = holders(port)
    return bool(listeners) and listeners <= family
