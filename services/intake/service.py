"""The intake room: Caddy's log file and Bunny's syslog in, ``requests`` rows out.

One asyncio loop in a daemon thread runs four tasks: the syslog listener (records
go to the durable spool), a follower on Caddy's access log, a follower on the spool,
and the batching sink. Parsing, host lookup and enrichment run in one worker thread
so network waits never stall the loop. Stopping closes the listener, lets the
followers finish their chunk, then flushes every buffered row; offsets only ever
cover stored rows, so whatever is not stored by the deadline is read again later.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from services.core.config import Config
from services.core.metrics import IntakeMetrics
from services.core.runtime import Context
from services.core.schema import REQUEST_COLUMNS
from services.core.storage import Storage

from .agents import AgentParser
from .enrich import Enricher
from .follow import Follower
from .hosts import HostResolver
from .offsets import OffsetStore
from .parse import parse_bunny, parse_caddy
from .pipeline import Pipeline
from .salts import SaltStore
from .sink import Sink
from .spool import Spool
from .syslog import SyslogServer

__all__ = ["IntakeService", "build"]

log = logging.getLogger(__name__)
UNHEALTHY_AFTER_SECONDS = 30.0


class IntakeService:
    """A ``Background`` task (see ``services.core.runtime``)."""

    name = "intake"

    def __init__(
        self,
        config: Config,
        storage: Storage,
        metrics: IntakeMetrics,
        resolver: HostResolver | None = None,
        enricher: Enricher | None = None,
        *,
        syslog_port: int | None = None,
        poll_seconds: float = 0.25,
        retry_seconds: float = 2.0,
        unhealthy_after: float = UNHEALTHY_AFTER_SECONDS,
    ):
        self._config = config
        self._storage = storage
        self._metrics = metrics
        self._resolver = resolver or HostResolver(config.api_url, config.intake_state_dir)
        self._agents = AgentParser()
        self._enricher = enricher or Enricher(SaltStore(storage), self._agents)
        self._syslog_port = config.port("intake_syslog") if syslog_port is None else syslog_port
        self._poll = poll_seconds
        self._retry = retry_seconds
        self._unhealthy_after = unhealthy_after
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._sink: Sink | None = None
        self._syslog: SyslogServer | None = None
        self._tasks: list[asyncio.Task] = []
        self._deadline = 0.0

    @property
    def syslog_port(self) -> int:
        """The port the syslog listener is bound to (after ``start``)."""
        assert self._syslog is not None, "not started"
        return self._syslog.port

    def start(self) -> None:
        """Start the loop thread; returns once the listener is bound.

        Raises:
            RuntimeError: the loop failed to start (e.g. the port is taken).
        """
        self._thread = threading.Thread(target=self._thread_main, name="intake", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"intake failed to start: {self._error!r}")

    def stop(self, timeout: float) -> None:
        """Stop accepting, flush what is buffered, save offsets; return within ``timeout``."""
        if self._thread is None or self._loop is None:
            return
        started = time.monotonic()
        self._deadline = started + max(0.0, timeout - 0.5)
        try:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        except RuntimeError:
            pass  # the loop already ended
        self._thread.join(max(0.0, timeout - (time.monotonic() - started)))
        if self._thread.is_alive():
            log.error("intake did not stop in time", extra={"timeout": timeout})

    def healthy(self) -> bool:
        """True while the loop runs, no task died and inserts are not failing for long."""
        if self._thread is None or not self._thread.is_alive() or not self._ready.is_set():
            return False
        if any(task.done() for task in self._tasks):
            return False
        return self._sink is not None and self._sink.failing_for() < self._unhealthy_after

    # -- the loop thread ------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported through start() and healthy()
            self._error = exc
            log.exception("intake loop crashed")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        state = self._config.intake_state_dir
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake-enrich")
        sink = self._sink = Sink(
            lambda rows: self._storage.insert("requests", rows, REQUEST_COLUMNS),
            self._metrics,
            batch_rows=self._config.intake.batch_rows,
            flush_seconds=self._config.intake.flush_seconds,
        )
        offsets = OffsetStore(state / "offsets.json")

        def follower(
            path, parse, source: str, key: str, count_received: bool, delete_finished: bool
        ):
            pipeline = Pipeline(
                source, parse, self._resolver, self._enricher, self._metrics, count_received
            )
            return Follower(
                path,
                _in(worker, pipeline.process),
                sink,
                offsets,
                key,
                poll_seconds=self._poll,
                retry_seconds=self._retry,
                delete_finished=delete_finished,
            )

        caddy = follower(self._config.access_log, parse_caddy, "caddy", "caddy", True, False)
        spool_path = state / "spool" / "bunny.log"
        # Spooled records were counted (received, invalid, duplicate) by the listener.
        bunny = follower(spool_path, parse_bunny, "bunny", "bunny-spool", False, True)
        spool = Spool(spool_path, on_append=bunny.wake)
        syslog = self._syslog = SyslogServer(
            spool.append,
            self._metrics,
            host=self._config.intake.syslog_host,
            port=self._syslog_port,
        )
        try:
            await syslog.start()
            # device-detector loads its rules in seconds: first job of the worker, so
            # start() returns at once and the first lines simply queue behind it.
            warm_up = self._loop.run_in_executor(worker, self._agents.warm_up)
            self._tasks = [
                asyncio.create_task(coro) for coro in (sink.run(), caddy.run(), bunny.run())
            ]
            self._ready.set()
            log.info(
                "intake started",
                extra={"syslog_port": syslog.port, "access_log": str(self._config.access_log)},
            )
            await self._stop_event.wait()
            await self._shutdown(syslog, spool, (caddy, bunny), sink)
            warm_up.cancel()
        finally:
            worker.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self, syslog: SyslogServer, spool: Spool, followers, sink: Sink) -> None:
        left = lambda: max(0.0, self._deadline - time.monotonic())  # noqa: E731
        await syslog.stop(timeout=min(2.0, left()))
        spool.close()
        for one in followers:
            one.stop()
        _, pending = await asyncio.wait(self._tasks[1:], timeout=min(5.0, left() / 2))
        for task in pending:
            task.cancel()  # a follower stuck on a dependency: its lines stay unread, not lost
        sink.close(time.monotonic() + left())
        await asyncio.wait(self._tasks[:1], timeout=left() + 0.2)
        log.info("intake stopped", extra={"unstored_rows": sink.buffered_rows})


def _in(executor: ThreadPoolExecutor, fn: Callable):
    async def run(items):
        return await asyncio.get_running_loop().run_in_executor(executor, fn, items)

    return run


def build(ctx: Context) -> IntakeService:
    """The intake room for this process."""
    return IntakeService(ctx.config, ctx.storage(), IntakeMetrics(ctx.registry))
