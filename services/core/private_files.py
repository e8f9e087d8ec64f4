"""Owner-only files: the umask every Ecstatic process runs with, and a check for it.

Everything under ``ECSTATIC_HOME`` is 0600 (files) or 0700 (directories): logs and
spools may hold what a visitor sent, the data directory holds salts, token hashes and
every site's sources. The umask makes that the default for whatever a process (or a
program it starts: Caddy, ClickHouse's engine, git) creates; ``offenders`` finds what
escaped it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["OWNER_ONLY_UMASK", "offenders", "owner_only"]

OWNER_ONLY_UMASK = 0o077


def owner_only() -> None:
    """Make this process, and whatever it starts, create owner-only files.

    Called first by every entry point (the ``ecstatic`` command, ``serve``); the local
    stack's supervisord sets the same umask for every part it runs.
    """
    os.umask(OWNER_ONLY_UMASK)


def offenders(root: Path) -> list[str]:
    """Every path under ``root`` (itself included) with a group or other permission
    bit, as ``"0644 path"``; symlinks are skipped (their own mode means nothing)."""
    found = _check(root)
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            found += _check(Path(top, name))
    return sorted(found)


def _check(path: Path) -> list[str]:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return []  # removed while we walked
    if stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o077:
        return []
    return [f"{stat.S_IMODE(info.st_mode):04o} {path}"]
