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
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable

from services.core.intake_config import IntakeConfig
from services.core.metrics import IntakeMetrics

from .frames import FrameDecoder
from .syslog_header import messages
from .syslog_peers import Connection, Datagrams

__all__ = ["SyslogServer"]

log = logging.getLogger(__name__)
SOURCE = "bunny"
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
        self._udp: Datagrams | None = None
        self._udp_socket: socket.socket | None = None
        self._tcp_socket: socket.socket | None = None
        self._port = 0
        self._connections: set[Connection] = set()
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
        self._tcp = await loop.create_server(lambda: Connection(self), sock=tcp, backlog=_BACKLOG)
        self._tcp_socket = tcp
        self._udp, self._udp_socket = Datagrams(self), udp
        await loop.create_datagram_endpoint(lambda: self._udp, sock=udp)
        self._sweeper = asyncio.create_task(self._sweep())
        log.info("syslog listening", extra={"port": self._port})

    async def stop(self, deadline: float) -> None:
        """Hand over: stop listening, let every open connection finish, then close.

        The listening sockets close first, so a process sharing the port (SO_REUSEPORT)
        takes every new connection; connections the kernel had already completed but
        not yet handed over are taken in first, since closing would reset them (and
        what their senders wrote). Each open connection then gets a FIN and is read and
        delivered until its peer closes it (a sender that reconnects on EOF loses
        nothing) or ``deadline`` (a ``clock`` value) passes; what is still open then is
        cut and counted (``connections_closed{reason="stopping"}``).
        """
        await self._close_listener()
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        connections = list(self._connections)
        for connection in connections:
            connection.finish()
        tasks = [c.task for c in connections if c.task is not None]
        if self._udp is not None:
            tasks.append(self._udp.close(self._udp_socket))
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

    async def _close_listener(self) -> None:
        if self._tcp is None or self._tcp_socket is None:
            return
        waiting = []
        while True:  # no await until the listener is closed: nothing new can queue
            try:
                waiting.append(self._tcp_socket.accept()[0])
            except OSError:  # EAGAIN: the accept queue is empty
                break
        self._tcp.close()
        loop = asyncio.get_running_loop()
        for sock in waiting:
            sock.setblocking(False)
            try:
                await loop.connect_accepted_socket(lambda: Connection(self), sock)
            except OSError:
                sock.close()

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

    def admit(self, connection: Connection) -> bool:
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

    def forget(self, connection: Connection) -> None:
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
