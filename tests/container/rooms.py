"""How a test runs one Ecstatic process in the image: its env, its volumes, its flags.

Derived from the layout map (``services.targets``), so a new room or piece of state shows up
here by itself. Without a ClickHouse server, the storage rooms (query, intake) share one
process and the embedded engine, as ``processes(embedded=True)`` groups them.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.targets import STATE, Process, listeners, processes
from tests.container.podman import free_ports

__all__ = ["HOME", "SERVICE_UID", "free_layout_ports", "run_args", "server_less", "volumes"]

HOME = "/var/lib/ecstatic"  # ECSTATIC_HOME in the image
SERVICE_UID = 10001  # the image's ecstatic user and group


def server_less() -> list[Process]:
    """One process per room of ``processes(embedded=False)``; storage rooms grouped on chDB."""
    grouped = processes(embedded=True)
    result: list[Process] = []
    for alone in processes(embedded=False):
        owner = next(p for p in grouped if set(alone.rooms) <= set(p.rooms))
        if owner not in result:
            result.append(owner)
    return result


def free_layout_ports() -> dict[str, int]:
    """Every listener of the layout on its own free loopback port (config wants them distinct).

    All of them, not only the process's: the defaults may be taken by a stack running here.
    """
    names = list(listeners())
    return dict(zip(names, free_ports(len(names)), strict=True))


def volumes(process: Process, root: Path) -> dict[str, Path]:
    """Host directories for the state ``process`` writes: owned by the service user, 0700."""
    made = {}
    for name in process.writes:
        path = root / STATE[name].path
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, SERVICE_UID, SERVICE_UID)
        path.chmod(0o700)
        made[name] = path
    return made


def run_args(process: Process, ports: dict[str, int], state: dict[str, Path]) -> list[str]:
    """``podman run`` flags: read-only root, service user, host network, loopback only."""
    env = {
        # Nothing listens beyond loopback on the shared host network.
        "ECSTATIC_BIND_HOST": "127.0.0.1",
        "ECSTATIC_API_URL": f"http://127.0.0.1:{ports['api']}",
        **{f"ECSTATIC_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    if process.embedded:
        env["ECSTATIC_CLICKHOUSE_URL"] = f"chdb://{HOME}/{STATE['clickhouse'].path}"
    args = [
        "--read-only",
        # podman adds writable tmpfs on /tmp, /var/tmp, /run by default: only /tmp is declared.
        "--read-only-tmpfs=false",
        "--tmpfs", "/tmp",  # gunicorn's worker heartbeat file
        "--user", f"{SERVICE_UID}:{SERVICE_UID}",
        "--network", "host",
    ]
    for name, value in env.items():
        args += ["--env", f"{name}={value}"]
    for name, path in state.items():
        args += ["--volume", f"{path}:{HOME}/{STATE[name].path}"]
    return args
