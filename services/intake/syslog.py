"""The TCP listener Bunny forwards its logs to.

Each connection is read in bounded chunks, cut into frames, parsed and de-duplicated,
and the good records are handed to ``accept`` (in the service: the durable spool).
A malformed frame is counted and skipped; it never ends the connection or the server.
Handing over is synchronous, so stopping can only interrupt a connection while it
waits for bytes, never half-way through records already received.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable

from services.core.metrics import IntakeMetrics

from .frames import FrameDecoder
from .model import InvalidLine, LogLine
from .parse import parse_bunny

__all__ = ["SyslogServer", "RecentIds"]

log = logging.getLogger(__name__)
SOURCE = "bunny"


class RecentIds:
    """The last ``capacity`` request ids seen, to drop records Bunny sends twice."""

    def __init__(self, capacity: int = 100_000):
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, request_id: str) -> bool:
        """Remember ``request_id``; True if it was already among the recent ones."""
        if request_id in self._ids:
            self._ids.move_to_end(request_id)
            return True
        self._ids[request_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return False


class SyslogServer:
    """Accepts Bunny log records over TCP, framed by LF or by octet counting."""

    def __init__(
        self,
        accept: Callable[[list[LogLine]], None],
        metrics: IntakeMetrics,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = 512,
        read_size: int = 64 * 1024,
        recent: RecentIds | None = None,
    ):
        self._accept = accept
        self._metrics = metrics
        self._host = host
        self._port = port
        self._max_connections = max_connections
        self._read_size = read_size
        self._recent = recent or RecentIds()
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task] = set()

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        assert self._server is not None, "server not started"
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=self._read_size
        )
        log.info("syslog listening", extra={"host": self._host, "port": self.port})

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, then close every open connection."""
        if self._server is not None:
            self._server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=timeout)
        log.info("syslog stopped", extra={"closed_connections": len(handlers)})

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._handlers) >= self._max_connections:
            log.warning("syslog connection refused", extra={"reason": "too_many_connections"})
            writer.close()
            return
        task = asyncio.current_task()
        self._handlers.add(task)
        self._metrics.syslog_connections.inc()
        decoder = FrameDecoder()
        try:
            while data := await reader.read(self._read_size):
                self._take(decoder.feed(data))
        except (ConnectionError, asyncio.CancelledError):
            pass  # peer went away, or we are stopping: both end this connection only
        except Exception:  # noqa: BLE001 - one bad connection must not take the server down
            log.exception("syslog connection failed")
        finally:
            self._handlers.discard(task)
            self._metrics.syslog_connections.dec()
            writer.close()

    def _take(self, frames: list[bytes | InvalidLine]) -> None:
        good: list[LogLine] = []
        received = self._metrics.lines_received.labels(SOURCE)
        for frame in frames:
            received.inc()
            try:
                if isinstance(frame, InvalidLine):
                    raise frame
                line = parse_bunny(frame)
            except InvalidLine as exc:
                self._metrics.lines_invalid.labels(SOURCE, exc.reason).inc()
                continue
            except Exception:  # noqa: BLE001 - a parser bug must cost one frame, not the batch
                log.exception("syslog frame could not be parsed")
                self._metrics.lines_invalid.labels(SOURCE, "parse_error").inc()
                continue
            if line.request_id and self._recent.seen(line.request_id):
                self._metrics.lines_invalid.labels(SOURCE, "duplicate").inc()
                continue
            good.append(line)
        if good:
            self._accept(good)
