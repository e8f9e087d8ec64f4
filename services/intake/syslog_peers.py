"""The syslog listener's two kinds of peer: a TCP connection, and the UDP socket.

Both queue what arrives and deliver it from one task each, in arrival order, through
the server (``SyslogServer``): framing, counting and ``accept`` live there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter, deque
from typing import TYPE_CHECKING

from .frames import FrameDecoder

if TYPE_CHECKING:
    from .syslog import SyslogServer

__all__ = ["Connection", "Datagrams"]

log = logging.getLogger(__name__)
PAUSE_AT = 64 * 1024  # bytes queued on one connection before its reading pauses
UDP_QUEUE = 4 * 1024 * 1024  # bytes of datagrams waiting for accept; more are dropped


class Connection(asyncio.Protocol):
    """One TCP peer: chunks queue here; ``run`` frames and delivers them in order."""

    def __init__(self, server: SyslogServer):
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._queued = 0
        self._paused = False
        self._ended = False  # EOF or connection lost: nothing more will arrive
        self._waiter: asyncio.Future | None = None
        self.decoder = FrameDecoder(server.max_frame)
        self.last_active = server.clock()
        self.busy = False
        self._inflight = 0  # bodies handed to an accept that has not returned yet
        self.peer = None
        self.task: asyncio.Task | None = None

    def connection_made(self, transport) -> None:  # noqa: D102 - asyncio.Protocol
        self._transport = transport
        self.peer = transport.get_extra_info("peername")
        if self._server.admit(self):
            self.task = asyncio.get_running_loop().create_task(self._run())
        else:
            transport.abort()

    def data_received(self, data: bytes) -> None:  # noqa: D102 - asyncio.Protocol
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued >= PAUSE_AT and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:  # noqa: D102 - asyncio.Protocol
        self._ended = True
        self._wake()
        return True  # keep the transport: run() closes it once everything is delivered

    def connection_lost(self, exc) -> None:  # noqa: D102 - asyncio.Protocol
        self._ended = True
        self._wake()

    def finish(self) -> None:
        """Send FIN: the peer knows to reconnect, and may still send what is in flight."""
        transport = self._transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            with contextlib.suppress(OSError):
                transport.write_eof()

    def cut(self) -> None:
        """Close now; what was received is still delivered, nothing more is read."""
        self._ended = True
        if self._transport is not None:
            self._transport.abort()
        self._wake()
        if self.task is not None and self._server.stopping:
            self.task.cancel()  # the stop deadline passed: give up on what is left

    def _count_cut_off(self) -> None:
        """At the stop deadline: what accept did not finish and what was not framed yet."""
        server, lost = self._server, self._inflight
        for chunk in self._chunks:
            lost += len(server.deliver(self.decoder, chunk))
        self._chunks.clear()
        server.dropped(lost, "stopping")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _run(self) -> None:
        server = self._server
        try:
            while True:
                if not self._chunks:
                    if self._ended:
                        break
                    self._waiter = asyncio.get_running_loop().create_future()
                    await self._waiter
                    self._waiter = None
                    continue
                chunks, self._chunks, self._queued = self._chunks, [], 0
                if self._paused and not self._ended:
                    self._paused = False
                    self._transport.resume_reading()
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                bodies = server.deliver(self.decoder, data)
                if bodies:
                    self.busy, self._inflight = True, len(bodies)
                    try:
                        await server.accept(bodies)
                    finally:
                        self.busy = False
                    self._inflight = 0
                    self.last_active = server.clock()
        except asyncio.CancelledError:
            self._count_cut_off()
        except Exception:  # noqa: BLE001 - one connection's failure must not end the server
            log.exception("syslog connection failed")
        finally:
            if self.decoder.buffered:
                server.invalid("truncated")  # a frame the peer never finished
            server.forget(self)
            if self._transport is not None:
                self._transport.close()


class Datagrams(asyncio.DatagramProtocol):
    """UDP: each datagram is one frame (RFC 5426); a queue decouples it from accept."""

    def __init__(self, server: SyslogServer):
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None
        self._frames: deque[bytes] = deque()
        self._queued = 0
        self._closing = False
        self._waiter: asyncio.Future | None = None
        self._rejected: Counter[str] = Counter()
        self._inflight = 0
        self.task: asyncio.Task | None = None

    def connection_made(self, transport) -> None:  # noqa: D102 - asyncio.DatagramProtocol
        self._transport = transport
        self.task = asyncio.get_running_loop().create_task(self._run())

    def datagram_received(self, data: bytes, addr) -> None:  # noqa: D102
        server = self._server
        if not server.allowed(addr):
            server.invalid("not_allowed")
            return
        if data.endswith(b"\n"):  # some senders end datagrams with LF anyway
            data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
        if len(data) > server.max_frame:
            server.invalid("too_long")
        elif not data:
            server.invalid("empty")
        elif self._queued + len(data) > UDP_QUEUE:
            server.invalid("queue_full")  # accept is pushing back; UDP cannot wait
        else:
            self._frames.append(data)
            self._queued += len(data)
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def error_received(self, exc) -> None:  # noqa: D102 - asyncio.DatagramProtocol
        log.warning("syslog udp error", extra={"error": type(exc).__name__})

    def close(self, sock: socket.socket) -> asyncio.Task:
        """Stop receiving; the task ends once the queued datagrams are delivered.

        ``sock`` is the transport's socket: what the kernel already queued on it is read
        first, since closing would drop it (later datagrams go to the port's other
        SO_REUSEPORT sockets).
        """
        self._closing = True
        while self._transport is not None and not self._transport.is_closing():
            try:
                data, addr = sock.recvfrom(65_536)
            except OSError:  # EAGAIN: nothing left (or the socket is gone already)
                break
            self.datagram_received(data, addr)
        if self._transport is not None:
            self._transport.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        return self.task

    def cut(self) -> None:
        """Give up on what is still queued (counted as ``stopping``)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _run(self) -> None:
        server = self._server
        try:
            while True:
                if not self._frames:
                    if self._closing:
                        return
                    self._waiter = asyncio.get_running_loop().create_future()
                    await self._waiter
                    self._waiter = None
                    continue
                frames = list(self._frames)
                self._frames.clear()
                self._queued = 0
                started = time.perf_counter()
                bodies = server.strip(frames, self._rejected, started)
                if bodies:
                    self._inflight = len(bodies)
                    await server.accept(bodies)
                    self._inflight = 0
        except asyncio.CancelledError:
            server.invalid("stopping", len(self._frames))  # never framed: not counted yet
            server.dropped(self._inflight, "stopping")
        except Exception:  # noqa: BLE001 - keep serving the other datagrams
            log.exception("syslog udp delivery failed")
