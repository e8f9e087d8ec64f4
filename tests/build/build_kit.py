"""Helpers for the build room's tests: tree writing, process checks, a sandbox runner."""

from __future__ import annotations

import os
import time
from pathlib import Path

from services.build.bwrap import Sandbox
from services.build.limits import BuildLimits
from services.build.sandbox import run

BASE_UID = 200_000


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def uid_processes(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                pids.append(int(entry))
    return pids


def wait_no_processes(uid: int, seconds: float = 2.0) -> list[int]:
    # bwrap's pid 1 and its children die asynchronously after the outer bwrap.
    deadline = time.monotonic() + seconds
    while (left := uid_processes(uid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


class Runner:
    """Runs commands in the sandbox over a fresh copy of a small tree."""

    def __init__(self, root: Path, sandbox: Sandbox):
        self.root = root
        self.sandbox = sandbox
        self.source = write_tree(root / "source", {"index.html": "<h1>hello</h1>\n"})
        self._count = 0

    def __call__(self, command: str, *, limits: BuildLimits | None = None, **kwargs):
        self._count += 1
        lines: list[str] = []
        kwargs.setdefault("on_line", lines.append)
        kwargs.setdefault("sandbox", self.sandbox)
        result = run(
            command,
            kwargs.pop("source", self.source),
            self.root / f"work{self._count}",
            limits=limits or BuildLimits(timeout_seconds=60),
            **kwargs,
        )
        return result, lines
