"""One deploy at a time per site, across threads and processes.

``flock`` locks belong to an open file description, so each ``hold`` opens the lock
file afresh: two threads of one gunicorn worker exclude each other exactly as two
workers do. The kernel drops the lock if the process dies, so a crash never wedges a site.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LockTimeout", "SiteLocks"]


class LockTimeout(Exception):
    """Another deploy of the site held the lock for too long."""


class SiteLocks:
    """Per-site exclusive locks backed by files in ``directory``."""

    def __init__(
        self,
        directory: Path,
        timeout: float = 300.0,
        poll: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """Create the lock set (the directory is made on first use).

        Args:
            directory: Where the lock files live.
            timeout: Seconds to wait for a busy site before giving up.
            poll: Seconds between attempts while waiting.
            clock: Monotonic clock, injectable for tests.
            sleep: Sleep function, injectable for tests.
        """
        self._directory = Path(directory)
        self._timeout = timeout
        self._poll = poll
        self._clock = clock
        self._sleep = sleep

    @contextmanager
    def hold(self, site_id: str) -> Iterator[None]:
        """Hold the site's lock for the duration of the ``with`` block.

        Raises:
            LockTimeout: the lock stayed busy for longer than the timeout.
        """
        self._directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            self._directory / f"{site_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            deadline = self._clock() + self._timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if self._clock() >= deadline:
                        raise LockTimeout(
                            f"another deploy of site {site_id} is still running"
                        ) from None
                    self._sleep(self._poll)
            yield
        finally:
            os.close(fd)  # closing the description releases the lock
