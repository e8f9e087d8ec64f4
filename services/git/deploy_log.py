"""A deploy's log: lines the steps write, followed live by the pusher and kept by the api.

The pipeline appends lines from its worker thread; the push request that started the
deploy follows them (``follow``) and writes each as a ``remote:`` line as it comes. The
pusher hanging up only ends the following: the deploy and its log go on, and every line
is shipped to the api in batches (``GET /v1/sites/{id}/deploys/{deploy_id}/log``).

Updates of the deploy record travel the same way (``then``, ``call``): on the shipper
thread, in order, each after every line written before it. So a client that sees the
record ``live`` or ``failed`` can read the whole log, and the pipeline's steps need not
wait for the api between them: the record follows a few milliseconds behind, in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

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
        self._actions: deque[tuple[Callable[[], Any], Future]] = deque()
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

    def then(self, action: Callable[[], Any]) -> Future:
        """Run ``action`` once every line written so far is shipped, after earlier actions.

        Returns at once; the future holds the action's result or exception. Without a
        shipper (nothing ships), the action runs here and now.
        """
        future: Future = Future()
        with self._cond:
            if self._shipper is not None and not self._closed and self._shipper.is_alive():
                self._actions.append((action, future))
                self._cond.notify_all()
                return future
        _run(action, future)
        return future

    def call(self, action: Callable[[], Any], timeout: float = 30.0) -> Any:
        """``then(action)`` and wait for it: its result, or the exception it raised."""
        return self.then(action).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """No more lines: followers finish, the last batch and actions are shipped."""
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
                while self._idle():
                    self._cond.wait()
                # Let a burst of lines travel together, unless an action or the end waits.
                deadline = time.monotonic() + self._batch_seconds
                while not self._actions and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._lines[self._shipped :]
                self._shipped = len(self._lines)
                actions = list(self._actions)
                self._actions.clear()
                done = self._closed and self._shipped >= len(self._lines)
            if batch:
                try:
                    self._ship(batch)
                except Exception:  # noqa: BLE001 - the log is best effort; the deploy goes on
                    log.warning("deploy log not shipped", extra={"lines": len(batch)})
            for action, future in actions:
                _run(action, future)
            if done:
                with self._cond:
                    left = list(self._actions)
                    self._actions.clear()
                for action, future in left:  # queued as the log closed
                    _run(action, future)
                return

    def _idle(self) -> bool:
        return self._shipped >= len(self._lines) and not self._actions and not self._closed


def _run(action: Callable[[], Any], future: Future) -> None:
    try:
        future.set_result(action())
    except Exception as exc:  # noqa: BLE001 - handed to whoever waits on the future
        future.set_exception(exc)
