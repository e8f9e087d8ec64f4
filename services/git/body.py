"""Request bodies of git POSTs: spooled to disk under a byte cap and a minimum rate.

dulwich reads the body while it answers (it sends ``200 OK`` before the first read),
inflates ``Content-Encoding: gzip`` without bound, and keeps a slow client's thread
for as long as the client likes. ``BodyGuard`` instead reads the whole body first:
de-chunked if the server did not, gunzipped with a bounded output per step, counted
on the wire and after inflation, into an unlinked temporary file. Only then does
dulwich see it, as a local file. A body that falls behind ``min_rate`` is cut by
``Watchdog`` (its socket's read side is shut down) and answered ``408``; one that is
too large reaches dulwich truncated, and reading past the cut raises ``PushTooLarge``,
which the receive-pack handler reports over the sideband (see ``receive.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from dulwich.web import ChunkReader

from .auth import text_response
from .hangup import client_socket, hang_up_after
from .limits import BodyTimeout, IntakeLimits, IntakeRefused, PushTooLarge

__all__ = ["BodyGuard", "Watchdog"]

log = logging.getLogger(__name__)

_READ = 64 << 10
_INFLATE_STEP = 1 << 20  # most bytes one zlib call may produce
_HEADER_ROOM = 64 << 10  # read of an over-declared body: enough for the ref commands


class _Meter:
    """A body's raw input, counting bytes; ``Watchdog`` cuts it when it falls behind."""

    def __init__(self, raw, sock: socket.socket | None, limits: IntakeLimits, clock):
        self._raw = raw
        self._sock = sock
        self._limits = limits
        self._clock = clock
        self._started = clock()
        self.received = 0
        self.expired = False

    def overdue(self, now: float) -> bool:
        allowed = self._limits.grace_seconds + self.received / self._limits.min_rate
        return now - self._started > allowed

    def cut(self) -> None:
        self.expired = True
        if self._sock is not None:
            # Wakes a thread blocked in recv(); the answer can still be written.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RD)

    def _check(self, data: bytes) -> bytes:
        self.received += len(data)
        if self.expired or self.overdue(self._clock()):
            self.expired = True
            raise BodyTimeout("the request body arrived too slowly")
        return data

    def read(self, size: int = -1) -> bytes:
        return self._guarded(self._raw.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self._guarded(self._raw.readline, size)

    def _guarded(self, reader, size: int) -> bytes:
        # A read the watchdog cut short surfaces as whatever the socket raised: say why.
        try:
            return self._check(reader(size))
        except IntakeRefused:
            raise
        except Exception:
            if self.expired:
                raise BodyTimeout("the request body arrived too slowly") from None
            raise


class Watchdog:
    """One daemon thread that cuts every watched body falling behind its rate."""

    def __init__(self, interval: float = 0.2, clock: Callable[[], float] = time.monotonic):
        """Create the watchdog; its thread starts with the first watched body."""
        self._interval = interval
        self._clock = clock
        self._meters: set[_Meter] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, meter: _Meter) -> None:
        """Start watching ``meter``."""
        with self._lock:
            self._meters.add(meter)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="body-watchdog", daemon=True)
                self._thread.start()

    def forget(self, meter: _Meter) -> None:
        """Stop watching ``meter``."""
        with self._lock:
            self._meters.discard(meter)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            now = self._clock()
            with self._lock:
                late = [m for m in self._meters if not m.expired and m.overdue(now)]
            for meter in late:
                meter.cut()


class _Spooled:
    """The spooled body as dulwich reads it; past a refusal's cut, reads raise it."""

    def __init__(self, file: BinaryIO, refusal: IntakeRefused | None):
        self._file = file
        self._refusal = refusal

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if not data and size != 0 and self._refusal is not None:
            raise self._refusal
        return data

    def readline(self, size: int = -1) -> bytes:
        return self._file.readline(size)

    def close(self) -> None:
        self._file.close()


class BodyGuard:
    """WSGI wrapper: spool git POST bodies within ``IntakeLimits`` before dulwich reads."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        limits: IntakeLimits,
        spool_dir: Path | None = None,
        watchdog: Watchdog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """Wrap ``app``.

        Args:
            app: The git app (dulwich's chain), which then reads a local file.
            limits: Byte, rate and drain limits.
            spool_dir: Where bodies are spooled (unlinked files: a crash leaves none).
            watchdog: Cuts slow bodies; one is made if not given.
            clock: Monotonic clock.
        """
        self._app = app
        self._limits = limits
        self._spool_dir = spool_dir
        self._watchdog = watchdog or Watchdog(clock=clock)
        self._clock = clock

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Serve one request."""
        if environ.get("REQUEST_METHOD") != "POST":
            return self._app(environ, start_response)
        meter = _Meter(environ["wsgi.input"], client_socket(environ), self._limits, self._clock)
        self._watchdog.watch(meter)
        try:
            spool, refusal = self._spool(environ, meter)
        except BodyTimeout:
            log.info("slow request body cut", extra={"received": meter.received})
            return hang_up_after(
                environ,
                text_response(
                    start_response,
                    "408 Request Timeout",
                    f"the push was sent too slowly (under {self._limits.min_rate} bytes/s); "
                    "try again on a faster connection",
                    [("Connection", "close")],
                ),
            )
        finally:
            self._watchdog.forget(meter)
        environ["wsgi.input"] = _Spooled(spool, refusal)
        for key in ("HTTP_CONTENT_ENCODING", "HTTP_TRANSFER_ENCODING", "CONTENT_LENGTH"):
            environ.pop(key, None)  # dulwich now reads a plain, finite local file
        if refusal is None:
            return self._app(environ, start_response)
        log.info("oversized push body", extra={"received": meter.received})
        return hang_up_after(environ, self._app(environ, start_response))

    def _spool(self, environ, meter: _Meter) -> tuple[BinaryIO, IntakeRefused | None]:
        limits = self._limits
        if self._spool_dir is not None:
            os.makedirs(self._spool_dir, exist_ok=True)
        spool = tempfile.TemporaryFile(dir=self._spool_dir)
        try:
            declared = _declared_length(environ)
            budget = limits.max_push_bytes
            if declared is not None and declared > budget:
                budget = min(_HEADER_ROOM, budget)  # keep the ref commands, refuse the rest
            wire = self._wire(environ, meter, declared)
            gzipped = environ.get("HTTP_CONTENT_ENCODING") == "gzip"
            refusal = _copy(wire, spool, gzipped, budget, limits.push_too_large())
            if declared is not None and declared > limits.max_push_bytes:
                refusal = limits.push_too_large()
            if refusal is not None:
                _drain(wire, limits.drain_bytes)
            spool.seek(0)
            return spool, refusal
        except BaseException:
            spool.close()
            raise

    @staticmethod
    def _wire(environ, meter: _Meter, declared: int | None):
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("wsgi.input_terminated"):
            return ChunkReader(meter)  # the stdlib server passes the chunked body through
        if declared is None and not environ.get("wsgi.input_terminated"):
            return _Limited(meter, 0)  # no length and no de-chunking server: no body
        return meter if declared is None else _Limited(meter, declared)


class _Limited:
    def __init__(self, raw, length: int):
        self._raw = raw
        self._left = length

    def read(self, size: int) -> bytes:
        if self._left <= 0:
            return b""
        data = self._raw.read(min(size, self._left))
        self._left -= len(data)
        return data


def _declared_length(environ) -> int | None:
    try:
        value = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return value if value >= 0 else None


def _copy(
    wire, out: BinaryIO, gzipped: bool, budget: int, refusal: PushTooLarge
) -> PushTooLarge | None:
    """Copy the body into ``out``; a ``PushTooLarge`` if it went over ``budget``."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
    total = wire_total = 0
    while True:
        data = wire.read(_READ)
        if not data:
            break
        wire_total += len(data)
        if wire_total > budget:
            return refusal
        pieces = [data] if inflater is None else _inflate(inflater, data)
        for piece in pieces:
            total += len(piece)
            if total > budget:
                return refusal
            out.write(piece)
    if inflater is not None and not inflater.eof:
        raise ValueError("truncated gzip request body")
    return None


def _inflate(inflater, data: bytes):
    # Bounded steps: a gzip bomb yields its output a megabyte at a time, each counted.
    while data:
        yield inflater.decompress(data, _INFLATE_STEP)
        data = inflater.unconsumed_tail
        if inflater.eof and inflater.unused_data:
            raise ValueError("unexpected data after the gzip request body")


def _drain(wire, budget: int) -> None:
    # Reading (and dropping) a little more lets the client finish sending and read
    # our refusal; past the budget we stop and the connection is closed on it.
    with contextlib.suppress(Exception):
        while budget > 0:
            data = wire.read(min(_READ, budget))
            if not data:
                return
            budget -= len(data)
