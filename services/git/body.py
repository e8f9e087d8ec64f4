"""Request bodies of git POSTs: spooled to disk under a byte cap and a minimum rate.

dulwich reads the body while it answers (it sends ``200 OK`` before the first read),
inflates ``Content-Encoding: gzip`` without bound, and keeps a slow client's thread
for as long as the client likes. ``BodyGuard`` instead reads the body itself:
de-chunked if the server did not, gunzipped with a bounded output per step, counted
on the wire and after inflation, into an unlinked temporary file. A body that falls
behind ``min_rate`` is cut by ``Watchdog`` (its socket's read side is shut down) and
answered ``408``; one that is too large reaches dulwich truncated, and reading past the
cut raises ``PushTooLarge``, which the receive-pack handler reports over the sideband
(see ``receive.py``).

dulwich starts early: on its own thread it reads the spool as it grows, so the pack is
indexed while the client is still sending it (a 20 MB push then goes live about a
fifth of a second sooner). Two things keep that as safe as reading a finished spool:
no answer leaves before the whole body is in (dulwich's output is held and relayed by
the request's thread once it is), and no ref moves before it is either
(``await_whole_body``, called by the receive-pack handler before each ref update, waits
for it; a body that never arrives whole raises ``BodyAbandoned`` there and in every read).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import queue
import socket
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from dulwich.web import ChunkReader

from .auth import text_response
from .hangup import client_socket, hang_up_after
from .limits import BodyTimeout, IntakeLimits, IntakeRefused, PushTooLarge

__all__ = ["BodyAbandoned", "BodyGuard", "Watchdog", "await_whole_body"]

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


class BodyAbandoned(BaseException):
    """The body will never arrive whole (it was cut, or reading it failed).

    A ``BaseException``: no handler between the read and the request may take it for a
    bad pack or a failed hook and go on to answer, or to move a ref.
    """


# Set on the early thread: waits until the body is spooled whole (see the module doc).
_whole_body: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "git_whole_body", default=None
)


def await_whole_body() -> None:
    """Return once this request's body is spooled whole; at once outside ``BodyGuard``.

    Raises:
        BodyAbandoned: it never will be; nothing of the request may take effect.
    """
    wait = _whole_body.get()
    if wait is not None:
        wait()


class _GrowingSpool:
    """The spool file, written by the request's thread and read as it grows by dulwich's.

    Reads return what is there (at least a byte), wait for more while the body is still
    coming, raise ``BodyAbandoned`` once it never will, and past a refusal's cut raise
    the refusal. The file is closed when both sides have let go of it.
    """

    def __init__(self, file: BinaryIO):
        self._file = file
        self._fd = file.fileno()
        self._ready = threading.Condition()
        self._size = 0  # bytes written
        self._pos = 0  # bytes read
        self._whole = False
        self._abandoned = False
        self._refusal: IntakeRefused | None = None
        self._holders = 2

    # -- the writer: the request's thread ----------------------------------------------

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) :]
        with self._ready:
            self._size += len(data)
            self._ready.notify_all()

    def finish(self, refusal: IntakeRefused | None) -> None:
        with self._ready:
            self._whole, self._refusal = True, refusal
            self._ready.notify_all()

    def abandon(self) -> None:
        with self._ready:
            self._abandoned = True
            self._ready.notify_all()

    def release(self) -> None:
        with self._ready:
            self._holders -= 1
            last = self._holders == 0
        if last:
            self._file.close()

    # -- the reader: dulwich, on the early thread --------------------------------------

    def wait_whole(self) -> None:
        with self._ready:
            self._ready.wait_for(lambda: self._whole or self._abandoned)
            if self._abandoned:
                raise BodyAbandoned

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        with self._ready:
            self._ready.wait_for(
                lambda: self._whole or self._abandoned or (size > 0 and self._size > self._pos)
            )
            if self._abandoned:
                raise BodyAbandoned
            end = self._size if size < 0 else min(self._size, self._pos + size)
        data = os.pread(self._fd, end - self._pos, self._pos)
        self._pos += len(data)
        if not data and self._refusal is not None:
            raise self._refusal
        return data

    def readline(self, size: int = -1) -> bytes:
        # Nothing on the push path reads lines; wait for the whole body, then scan it.
        self.wait_whole()
        line = bytearray()
        while size < 0 or len(line) < size:
            want = _READ if size < 0 else min(_READ, size - len(line))
            chunk = os.pread(self._fd, want, self._pos)
            if not chunk:
                break
            cut = chunk.find(b"\n")
            if cut >= 0:
                chunk = chunk[: cut + 1]
            line += chunk
            self._pos += len(chunk)
            if cut >= 0:
                break
        return bytes(line)


_END = object()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


class _EarlyApp:
    """The wrapped app, run on its own thread while the body is still arriving.

    What it answers (its ``start_response`` and every byte it writes or yields) is
    queued; ``relay`` hands it to the server from the request's thread, once the body
    is whole. Once the client is gone its writes raise, as a dead socket's would.
    """

    def __init__(self, app, environ: dict[str, Any], spool: _GrowingSpool):
        self._spool = spool
        self._queue: queue.Queue = queue.Queue(maxsize=64)  # relayed chunks: bounded
        self._head: tuple | None = None
        self._gone = threading.Event()
        context = contextvars.copy_context()
        context.run(_whole_body.set, spool.wait_whole)
        self._thread = threading.Thread(
            target=context.run, args=(self._run, app, environ), name="git-early", daemon=True
        )
        self._thread.start()

    def _run(self, app, environ) -> None:
        try:
            result = app(environ, self._start_response)
            try:
                for chunk in result:
                    self._write(chunk)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except BodyAbandoned:
            pass  # the request was answered without us
        except BaseException as exc:  # noqa: BLE001 - handed to the request's thread
            self._put(_Raised(exc))
        else:
            self._put(_END)
        finally:
            self._spool.release()

    def _start_response(self, status, headers, exc_info=None):
        self._head = (status, headers, exc_info)
        return self._write

    def _write(self, data: bytes) -> None:
        if data and not self._put(bytes(data)):
            raise ConnectionError("the client went away")

    def _put(self, item) -> bool:
        while not self._gone.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def abandon(self) -> None:
        """The request is answered otherwise: drop whatever the app says from now on."""
        self._gone.set()

    def relay(self, start_response) -> _Relay:
        """The app's answer, for the server (call once the body is whole)."""
        return _Relay(self, start_response)


class _Relay:
    def __init__(self, early: _EarlyApp, start_response):
        self._early = early
        self._start_response = start_response
        self._started = False

    def __iter__(self) -> Iterator[bytes]:
        early = self._early
        while True:
            item = early._queue.get()
            if isinstance(item, _Raised):
                raise item.exc
            if not self._started and early._head is not None:
                self._started = True
                self._start_response(*early._head)
            if item is _END:
                return
            yield item

    def close(self) -> None:
        # As a request's own thread would, wait for the app to finish: its writes
        # now raise, so only what it does without the client (a lock wait) remains.
        self._early._gone.set()
        self._early._thread.join()


class BodyGuard:
    """WSGI wrapper: spool git POST bodies within ``IntakeLimits``; dulwich reads the spool."""

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
            app: The git app (dulwich's chain), run early on the growing spool.
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
        if self._spool_dir is not None:
            os.makedirs(self._spool_dir, exist_ok=True)
        spool = _GrowingSpool(tempfile.TemporaryFile(dir=self._spool_dir, buffering=0))
        inner = dict(environ, **{"wsgi.input": spool})
        for key in ("HTTP_CONTENT_ENCODING", "HTTP_TRANSFER_ENCODING", "CONTENT_LENGTH"):
            inner.pop(key, None)  # dulwich reads a plain, finite local file
        early = _EarlyApp(self._app, inner, spool)
        self._watchdog.watch(meter)
        try:
            refusal = self._spool(environ, meter, spool)
        except BaseException as exc:
            early.abandon()
            spool.abandon()
            if not isinstance(exc, BodyTimeout):
                raise
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
            spool.release()
        spool.finish(refusal)
        response = early.relay(start_response)
        if refusal is None:
            return response
        log.info("oversized push body", extra={"received": meter.received})
        return hang_up_after(environ, response)

    def _spool(self, environ, meter: _Meter, spool: _GrowingSpool) -> IntakeRefused | None:
        limits = self._limits
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
        return refusal

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
    wire, out: _GrowingSpool, gzipped: bool, budget: int, refusal: PushTooLarge
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
