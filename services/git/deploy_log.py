"""A deploy's log: lines the steps write, followed live by the pusher and kept by the api.

The pipeline appends lines from its worker thread; the push request that started the
deploy follows them (``follow``) and writes each as a ``remote:`` line as it comes. The
pusher hanging up only ends the following: the deploy and its log go on, and every line
is shipped to the api in batches (``GET /v1/sites/{id}/deploys/{deploy_id}/log``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

__all__ = ["DeployLog"]

log = logging.getLogger(__name__)

MAX_LINE = 2000  # characters; a longer line is cut, as the api would cut it
MAX_KEPT = 20_000  # lines kept in memory for followers; the api keeps the head and tail

Ship = Callable[[Sequence[str]], None]


class DeployLog:
    """Append-only lines with live followers and batched shipping to the api."""

    def __init__(self, ship: Ship | None = None, batch_seconds: float = 0.5):
        """Create an empty, open log.

        Args:
            ship: Sends a batch of lines to the api; None keeps them in memory only.
            batch_seconds: How long lines wait to be shipped together.
        """
        self._lines: list[str] = []
        self._dropped = 0
        self._closed = False
        self._cond = threading.Condition()
        self._ship = ship
        self._shipped = 0
        self._batch_seconds = batch_seconds
        self._shipper: threading.Thread | None = None
        if ship is not None:
            self._shipper = threading.Thread(target=self._ship_loop, name="deploy-log", daemon=True)
            self._shipper.start()

    def write(self, line: str) -> None:
        """Append one line (newlines inside it start new lines)."""
        with self._cond:
            for part in line.rstrip("\n").split("\n"):
                if len(self._lines) >= MAX_KEPT:
                    self._dropped += 1
                    continue
                self._lines.append(part[:MAX_LINE])
            self._cond.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        """No more lines: followers finish, the last batch is shipped."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._shipper is not None:
            self._shipper.join(timeout)

    @property
    def lines(self) -> list[str]:
        """Every line so far."""
        with self._cond:
            return list(self._lines)

    def follow(self, poll: float = 1.0) -> Iterator[str]:
        """Yield every line, from the first, as it is written, until the log closes."""
        sent = 0
        while True:
            with self._cond:
                while sent >= len(self._lines) and not self._closed:
                    self._cond.wait(poll)
                batch = self._lines[sent:]
                done = self._closed
            yield from batch
            sent += len(batch)
            if done and sent >= len(self._lines):
                return

    def _ship_loop(self) -> None:
        while True:
            with self._cond:
                while self._shipped >= len(self._lines) and not self._closed:
                    self._cond.wait()
                done = self._closed
            if not done:
                time.sleep(self._batch_seconds)  # let a burst of lines travel together
            with self._cond:
                batch = self._lines[self._shipped :]
                self._shipped = len(self._lines)
                done = self._closed and self._shipped >= len(self._lines)
            if batch:
                try:
                    self._ship(batch)
                except Exception:  # noqa: BLE001 - the log is best effort; the deploy goes on
                    log.warning("deploy log not shipped", extra={"lines": len(batch)})
            if done:
                return
