"""The syslog listener Bunny forwards its logs to: TCP (RFC 6587) and UDP (RFC 5426).

Each read chunk is cut into frames and stripped of its syslog header; the MSG parts go to
``accept`` in one call per chunk, awaited, so a connection reads nothing more while the
next stage pushes back (the kernel's buffers then slow the sender down). A bad frame is
counted and skipped; it never ends the connection or the server.

Hostile clients are bounded: a connection that delivers no valid frame for
``idle_seconds`` is closed (a slow-loris trickle never completes one); at the connection
cap a newcomer evicts the longest-idle connection, so idle sockets cannot hold the cap;
a peer outside ``allow_cidrs`` is closed at once. Both sockets bind with SO_REUSEPORT so
a new process can take the port before this one stops (see ``stop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable

from services.core.intake_config import IntakeConfig
from services.core.metrics import IntakeMetrics

from .frames import FrameDecoder
from .syslog_header import messages

__all__ = ["SyslogServer"]

log = logging.getLogger(__name__)
SOURCE = "bunny"
_PAUSE_AT = 256 * 1024  # bytes queued on one connection before its reading pauses
_UDP_QUEUE = 4 * 1024 * 1024  # bytes of datagrams waiting for accept; more are dropped
_BACKLOG = 1024

Accept = Callable[[list[bytes]], Awaitable[None]]


class SyslogServer:
    """Accepts syslog over TCP and UDP on one port; hands the MSG parts to ``accept``."""

    def __init__(
        self,
        accept: Accept,
        metrics: IntakeMetrics,
        config: IntakeConfig,
        port: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._accept = accept
        self._metrics = metrics
        self._config = config
        self._requested_port = port or 0
        self._clock = clock
        self._tcp: asyncio.AbstractServer | None = None
        self._udp: _Datagrams | None = None
        self._port = 0
        self._connections: set[_Connection] = set()
        self._sweeper: asyncio.Task | None = None
        self._received = metrics.lines_received.labels(SOURCE)
        self._read_seconds = metrics.stage_seconds.labels("read")
        self.stopping = False

    @property
    def port(self) -> int:
        """The bound port, TCP and UDP (useful when started on port 0)."""
        assert self._tcp is not None, "server not started"
        return self._port

    @property
    def clock(self) -> Callable[[], float]:
        """The clock idle times and deadlines are read on."""
        return self._clock

    @property
    def max_frame(self) -> int:
        """The frame size cap in bytes."""
        return self._config.max_frame_bytes

    async def start(self) -> None:
        """Bind TCP and UDP on one port number, SO_REUSEPORT on both, and start serving."""
        loop = asyncio.get_running_loop()
        tcp, udp = _bind_pair(self._config.syslog_host, self._requested_port)
        self._port = tcp.getsockname()[1]
        self._tcp = await loop.create_server(lambda: _Connection(self), sock=tcp, backlog=_BACKLOG)
        self._udp = _Datagrams(self)
        await loop.create_datagram_endpoint(lambda: self._udp, sock=udp)
        self._sweeper = asyncio.create_task(self._sweep())
        log.info("syslog listening", extra={"port": self._port})

    async def stop(self, deadline: float) -> None:
        """Hand over: stop listening, let every open connection finish, then close.

        The listening sockets close first, so a process sharing the port (SO_REUSEPORT)
        takes every new connection. Each open connection then gets a FIN and is read and
        delivered until its peer closes it (a sender that reconnects on EOF loses
        nothing) or ``deadline`` (a ``clock`` value) passes; what is still open then is
        cut and counted (``connections_closed{reason="stopping"}``).
        """
        self.stopping = True
        if self._tcp is not None:
            self._tcp.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        connections = list(self._connections)
        for connection in connections:
            connection.finish()
        tasks = [c.task for c in connections if c.task is not None]
        if self._udp is not None:
            tasks.append(self._udp.close())
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - self._clock()))
        cut = [c for c in connections if c.task is not None and not c.task.done()]
        for connection in cut:
            self._closed("stopping")
            connection.cut()
        if self._udp is not None:
            self._udp.cut()
        pending = [c.task for c in cut] + ([self._udp.task] if self._udp else [])
        await asyncio.gather(*filter(None, pending), return_exceptions=True)
        log.info(
            "syslog stopped",
            extra={"handed_over": len(connections) - len(cut), "cut_off": len(cut)},
        )

    def deliver(self, decoder: FrameDecoder, data: bytes) -> list[bytes]:
        """Frame and strip ``data``; count what arrived and what was unusable."""
        started = time.perf_counter()
        bodies = decoder.feed_messages(data)
        return self._counted(bodies, decoder.rejected, started)

    def strip(self, frames: list[bytes], rejected, started: float) -> list[bytes]:
        """The MSG parts of ``frames``; counts them, ``rejected`` and the time since ``started``."""
        return self._counted(messages(frames, rejected), rejected, started)

    def _counted(self, bodies: list[bytes], rejected, started: float) -> list[bytes]:
        received = len(bodies)
        if rejected:
            for reason, count in rejected.items():
                self._metrics.lines_invalid.labels(SOURCE, reason).inc(count)
                received += count
            rejected.clear()
        if received:
            self._received.inc(received)
        self._read_seconds.inc(time.perf_counter() - started)
        return bodies

    def dropped(self, count: int, reason: str) -> None:
        """Count ``count`` frames, already counted as received, that were dropped."""
        if count:
            self._metrics.lines_invalid.labels(SOURCE, reason).inc(count)

    def invalid(self, reason: str, count: int = 1) -> None:
        """Count ``count`` frames that arrived and were dropped for ``reason``."""
        if count:
            self._received.inc(count)
            self._metrics.lines_invalid.labels(SOURCE, reason).inc(count)

    async def accept(self, bodies: list[bytes]) -> None:
        """Hand ``bodies`` to the next stage."""
        await self._accept(bodies)

    def allowed(self, peer) -> bool:
        """Whether the peer address may send (always, without an allow-list)."""
        networks = self._config.allow_cidrs
        if not networks:
            return True
        try:
            address = ipaddress.ip_address(peer[0].split("%", 1)[0])
        except (TypeError, ValueError, IndexError):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in networks)

    def admit(self, connection: _Connection) -> bool:
        """Take a new connection in, or close it; at the cap, evict the longest-idle one."""
        if self.stopping:
            return False
        if not self.allowed(connection.peer):
            self._closed("not_allowed")
            return False
        if len(self._connections) >= self._config.max_connections:
            idle = [c for c in self._connections if not c.busy]
            if not idle:
                self._closed("over_cap")
                return False
            victim = min(idle, key=lambda c: c.last_active)
            self._closed("evicted")
            self.forget(victim)
            victim.cut()
        self._connections.add(connection)
        self._metrics.syslog_connections.inc()
        return True

    def forget(self, connection: _Connection) -> None:
        """Drop a connection from the open set (once)."""
        if connection in self._connections:
            self._connections.discard(connection)
            self._metrics.syslog_connections.dec()

    def _closed(self, reason: str) -> None:
        self._metrics.connections_closed.labels(reason).inc()

    async def _sweep(self) -> None:
        idle = self._config.idle_seconds
        while True:
            await asyncio.sleep(min(1.0, idle / 4))
            limit = self._clock() - idle
            for connection in list(self._connections):
                if not connection.busy and connection.last_active < limit:
                    self._closed("idle_timeout")
                    self.forget(connection)
                    connection.cut()


class _Connection(asyncio.Protocol):
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
        if self._queued >= _PAUSE_AT and not self._paused:
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


class _Datagrams(asyncio.DatagramProtocol):
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
        elif self._queued + len(data) > _UDP_QUEUE:
            server.invalid("queue_full")  # accept is pushing back; UDP cannot wait
        else:
            self._frames.append(data)
            self._queued += len(data)
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def error_received(self, exc) -> None:  # noqa: D102 - asyncio.DatagramProtocol
        log.warning("syslog udp error", extra={"error": type(exc).__name__})

    def close(self) -> asyncio.Task:
        """Stop receiving; the task ends once the queued datagrams are delivered."""
        self._closing = True
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


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A TCP listener and a UDP socket on the same port number, both SO_REUSEPORT."""
    for _ in range(20 if port == 0 else 1):
        tcp = _socket(host, port, socket.SOCK_STREAM)
        try:
            udp = _socket(host, tcp.getsockname()[1], socket.SOCK_DGRAM)
        except OSError:
            tcp.close()
            if port:
                raise
            continue  # the free TCP port is taken for UDP: try another one
        return tcp, udp
    raise OSError("no port free for both TCP and UDP")


def _socket(host: str, port: int, kind: int) -> socket.socket:
    family, _, proto, _, address = socket.getaddrinfo(
        host, port, type=kind, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        # Set after an ephemeral bind: the kernel picks a port no one else uses, and a
        # successor can still join it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
