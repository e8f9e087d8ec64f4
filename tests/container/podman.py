"""Small helpers around the podman command line for the container tests.

Every call goes through ``podman()``, which points podman at the project's containers.conf
(runc, cgroupfs, no ulimits: see infra/images/containers.conf) unless the caller chose one.
A missing podman raises: the container tests fail on a machine that cannot run them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "CONTAINERS_CONF",
    "ROOT",
    "container",
    "free_ports",
    "host_pids",
    "http_status",
    "ids",
    "open_files",
    "podman",
    "podman_env",
    "require_tools",
    "stop",
    "wait_http",
]

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "infra" / "images" / "containers.conf"


def podman_env() -> dict[str, str]:
    """The environment podman needs here; also exported to this process's children."""
    os.environ.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return dict(os.environ)


def require_tools(*tools: str) -> None:
    """Raise when a tool the container tests need is not installed (never skip)."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"missing {', '.join(missing)}: run ./bootstrap.sh test (it installs podman, runc, "
            "debootstrap and prepares the base image)"
        )


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``podman ARGS``; raise with its output when ``check`` and it fails."""
    require_tools("podman")
    result = subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"podman {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports nothing listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def http_status(url: str, timeout: float = 5) -> int | None:
    """The HTTP status of GET ``url``; None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


def wait_http(url: str, name: str, timeout: float = 120) -> int | None:
    """Poll ``url`` until it answers 200 or container ``name`` stops; return the last status."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = http_status(url)
        if status == 200:
            return status
        state = podman("inspect", "--format", "{{.State.Running}}", name, check=False)
        if state.stdout.strip() != "true":
            return status
        time.sleep(0.5)
    return status


@contextlib.contextmanager
def container(
    name: str, image: str, run_args: Sequence[str], command: Sequence[str] = ()
) -> Iterator[str]:
    """Run ``image`` detached as ``name``; remove it (and print its log) afterwards."""
    podman("rm", "--force", "--ignore", name)
    podman("run", "--detach", "--name", name, *run_args, image, *command)
    try:
        yield name
    finally:
        logs = podman("logs", name, check=False)
        print(f"--- log of {name} ---\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}")
        podman("rm", "--force", "--ignore", "--time", "0", name, check=False)


def host_pids(name: str) -> list[int]:
    """Host pids of every process in container ``name`` (``podman top`` needs no ps here)."""
    out = podman("top", name, "hpid").stdout.split()
    return [int(pid) for pid in out[1:]]


def ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of a host process, from /proc (nothing runs inside the container)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def open_files(pid: int) -> list[str]:
    """Paths (as the container sees them) of the files a host process holds open."""
    paths = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            paths.append(os.readlink(fd))
    return paths


def stop(name: str, grace: int = 30) -> tuple[int, float, str]:
    """``podman stop -t grace`` (SIGTERM, then SIGKILL): the exit code, seconds taken, log."""
    started = time.monotonic()
    podman("stop", "--time", str(grace), name, timeout=grace + 30)
    took = time.monotonic() - started
    code = int(podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())
    logs = podman("logs", name)
    return code, took, logs.stdout + logs.stderr
