"""Baseline (b): GoAccess (Debian's ``goaccess``) parsing the same requests as CLF.

No UI: ``goaccess FILE --log-format=COMBINED -o REPORT.json`` parses the whole file and
writes its JSON report, from which the count of valid requests is checked.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["command", "measure"]


def command(log: Path, report: Path) -> list[str]:
    """The timed command line (no global config file, no progress output)."""
    return [
        "goaccess",
        str(log),
        "--log-format=COMBINED",
        "--no-global-config",
        "--no-progress",
        "-o",
        str(report),
    ]


def measure(log: Path, report: Path) -> dict:
    """Time one GoAccess run over ``log``; its report's request counts come along."""
    if shutil.which("goaccess") is None:
        raise RuntimeError("goaccess is not installed (bootstrap.sh installs it for tests)")
    argv = command(log, report)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=3600, check=False
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"goaccess exited {result.returncode}: {result.stderr.strip()[-500:]}")
    general = json.loads(report.read_text())["general"]
    return {
        "seconds": seconds,
        "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "total_requests": int(general["total_requests"]),
        "valid_requests": int(general["valid_requests"]),
        "failed_requests": int(general["failed_requests"]),
        "command": " ".join(argv),
        "version": subprocess.run(
            ["goaccess", "--version"], capture_output=True, text=True, check=False
        )
        .stdout.splitlines()[0]
        .strip(),
    }
