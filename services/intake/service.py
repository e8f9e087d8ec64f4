"""The intake room: Caddy's log file and Bunny's syslog in, ``requests`` rows out.

One asyncio loop in a daemon thread runs the syslog listener (TCP and UDP), a follower
on Caddy's access log, and the writer. Both sources go through ``Ingest``: bodies
become rows in one worker thread (``rows.RowMaker``), the rows go to the write-ahead
spool at once, and the writer inserts them from there in batches, each under its
deduplication token. So a line counts as accepted once it is in the spool, and nothing
accepted is lost to a ClickHouse outage, a stop or a crash. When the spool is full
the sources stop reading. Stopping hands the port over (the listener closes first,
drains its connections), then the writer inserts what it can before the deadline and
leaves the rest in the spool for the next process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from services.core.config import Config
from services.core.metrics import IntakeMetrics
from services.core.runtime import Context, DeferredStorage
from services.core.schema import apply_ttl, insert_ingest
from services.core.storage import Storage

from .agents import AgentParser
from .follow import Follower
from .geo import CountryLookup
from .hosts import HostResolver
from .ingest import Ingest
from .offsets import OffsetStore
from .recent import RecentIds
from .rows import RowMaker
from .salts import SaltStore
from .spool import Spool
from .syslog import SyslogServer
from .writer import Writer

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
        salts: SaltStore | None = None,
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
        self._salts = salts or SaltStore(storage)
        self._syslog_port = config.port("intake_syslog") if syslog_port is None else syslog_port
        self._poll = poll_seconds
        self._retry = retry_seconds
        self._unhealthy_after = unhealthy_after
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._writer: Writer | None = None
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
        return self._writer is not None and self._writer.failing_for() < self._unhealthy_after

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
        config = self._config
        state = config.intake_state_dir
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake-rows")
        spool = Spool(state / "wal", max_bytes=config.intake.spool_max_mb * 2**20)
        spool.open()
        storage = self._storage

        writer = self._writer = Writer(
            spool,
            functools.partial(insert_ingest, storage),
            self._metrics,
            batch_rows=config.intake.batch_rows,
            flush_seconds=config.intake.flush_seconds,
        )
        recent = RecentIds()

        def ingest(source: str, **extra) -> Ingest:
            maker = RowMaker(source, self._resolver, self._salts, self._agents, **extra)
            return Ingest(source, maker, spool, writer, self._metrics, worker)

        countries = CountryLookup()  # for lines without a country (Caddy's)
        bunny = ingest("bunny", recent=recent, countries=countries)
        caddy = ingest("caddy", countries=countries)
        follower = Follower(
            config.access_log,
            caddy.accept_lines,
            OffsetStore(state / "offsets.json"),
            "caddy",
            self._metrics,
            poll_seconds=self._poll,
            retry_seconds=self._retry,
        )
        syslog = self._syslog = SyslogServer(
            bunny.accept, self._metrics, config.intake, port=self._syslog_port
        )
        try:
            await self._loop.run_in_executor(worker, self._prepare_storage)
            await syslog.start()
            # device-detector loads its rules in seconds: first job of the worker, so
            # start() returns at once and the first lines simply queue behind it.
            warm_up = self._loop.run_in_executor(worker, self._warm_up)
            self._tasks = [
                asyncio.create_task(writer.run(), name="writer"),
                asyncio.create_task(follower.run(), name="caddy-follower"),
                asyncio.create_task(self._retry_held(bunny), name="held"),
            ]
            self._ready.set()
            log.info(
                "intake started",
                extra={"syslog_port": syslog.port, "access_log": str(config.access_log)},
            )
            await self._stop_event.wait()
            await self._shutdown(syslog, follower, writer)
            warm_up.cancel()
        finally:
            worker.shutdown(wait=False, cancel_futures=True)

    def _warm_up(self) -> None:
        loaded = self._agents.load(self._agents_file)
        self._agents.warm_up()
        log.info("user agents loaded", extra={"agents": loaded})

    def _save_agents(self) -> None:
        try:
            self._agents.save(self._agents_file)
        except OSError as exc:
            log.warning("user agents not saved", extra={"error": str(exc)})

    @property
    def _agents_file(self):
        return self._config.intake_state_dir / "agents.json"

    def _prepare_storage(self) -> None:
        try:
            apply_ttl(self._storage, self._config.intake.ttl_days)
        except Exception as exc:  # noqa: BLE001 - storage down at start: the spool covers it
            log.warning("ttl not applied", extra={"error": type(exc).__name__})

    async def _retry_held(self, bunny: Ingest) -> None:
        while True:
            await asyncio.sleep(self._retry)
            await bunny.retry_held()

    async def _shutdown(self, syslog: SyslogServer, follower: Follower, writer: Writer) -> None:
        left = lambda: max(0.0, self._deadline - time.monotonic())  # noqa: E731
        # Listener first: the port goes to a new process (if any) while we drain.
        await syslog.stop(time.monotonic() + min(5.0, left() / 3))
        follower.stop()
        writer_task, follower_task, held_task = self._tasks
        held_task.cancel()
        _, pending = await asyncio.wait([follower_task], timeout=min(5.0, left() / 2))
        for task in pending:
            task.cancel()  # stuck on a dependency: its lines stay in the file, not lost
        writer.close(time.time() + left())
        await asyncio.wait([writer_task], timeout=left() + 0.5)
        self._save_agents()
        log.info("intake stopped", extra={"unstored_rows": writer.unstored_rows})


def build(ctx: Context) -> IntakeService:
    """The intake room for this process."""
    return IntakeService(ctx.config, DeferredStorage(ctx), IntakeMetrics(ctx.registry))
