"""The writer: batches by size and age, retries a failing storage, never double-counts."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.core.schema import insert_ingest
from services.intake.ingest import Ingest
from services.intake.recent import RecentIds
from services.intake.rows import RowMaker
from services.intake.spool import Spool
from services.intake.writer import Writer, is_data_error
from tests.intake.test_rows import Agents, Hosts, Salts

pytestmark = pytest.mark.integration


class Storage:
    """The storage client's seam: real chDB behind it, failures injected in front."""

    def __init__(self, chdb_storage, failing: bool = False):
        self.chdb, self.failing, self.calls, self.tokens = chdb_storage, failing, 0, []

    def insert(self, data: bytes, token: str) -> None:
        self.calls += 1
        if self.failing:
            raise ConnectionError("injected: storage unavailable")
        self.tokens.append(token)
        insert_ingest(self.chdb, data, token)


def count(chdb_storage, site: str) -> tuple[int, int]:
    found = chdb_storage.rows(
        "SELECT count() AS n, uniqExact(request_id) AS ids FROM requests"
        " WHERE site_id = {site:String}",
        {"site": site},
    )[0]
    return found["n"], found["ids"]


def bodies(site_host: str, n: int, start: int = 0) -> list[bytes]:
    now = int(time.time() * 1000)
    return [
        json.dumps(
            {
                "Host": site_host,
                "Status": 200,
                "Timestamp": now - 1000,
                "PathAndQuery": f"/{i}",
                "RemoteIp": f"10.0.{i % 250}.0",
                "UserAgent": "Mozilla/5.0",
                "RequestId": f"{i:032x}",
            }
        ).encode()  # fmt: skip
        for i in range(start, start + n)
    ]


async def until(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def pipeline(tmp_path, storage, metrics, site, **writer_args):
    spool = Spool(tmp_path / "wal", max_bytes=writer_args.pop("max_bytes", 2**30))
    spool.open()
    writer = Writer(spool, storage.insert, metrics, backoff=(0.05, 0.2), **writer_args)
    maker = RowMaker("bunny", Hosts({f"{site}.example": site}), Salts(), Agents(),
                     recent=RecentIds())  # fmt: skip
    ingest = Ingest("bunny", maker, spool, writer, metrics, ThreadPoolExecutor(1))
    return spool, writer, ingest


def test_storage_failing_through_a_200000_line_stream_then_restored(
    tmp_path, chdb_storage, metrics, sample
):
    site = "w" + uuid.uuid4().hex[:10]
    storage = Storage(chdb_storage)

    async def run():
        spool, writer, ingest = pipeline(
            tmp_path, storage, metrics, site, batch_rows=20_000, flush_seconds=0.2
        )
        task = asyncio.create_task(writer.run())
        lines = bodies(f"{site}.example", 200_000)
        for i in range(0, 200_000, 500):
            if i == 40_000:
                storage.failing = True  # down for most of the stream
            await ingest.accept(lines[i : i + 500])
        await until(lambda: spool.pending_batches >= 5 and spool.bytes > 0)
        await until(lambda: sample("ecstatic_intake_insert_failures_total") > 0)
        await until(lambda: sample("ecstatic_intake_spool_bytes") > 0)
        storage.failing = False
        await until(lambda: count(chdb_storage, site)[0] >= 200_000)
        writer.close(time.time() + 5)
        await task
        return spool

    spool = asyncio.run(run())
    assert count(chdb_storage, site) == (200_000, 200_000)  # exact, no duplicates
    assert spool.bytes == 0 and not list((tmp_path / "wal").glob("*.wal"))


def test_a_batch_stored_but_not_marked_is_not_counted_twice(tmp_path, chdb_storage, metrics):
    site = "d" + uuid.uuid4().hex[:10]
    storage = Storage(chdb_storage)

    async def first_life():
        spool, writer, ingest = pipeline(tmp_path, storage, metrics, site, flush_seconds=0.1)
        await ingest.accept(bodies(f"{site}.example", 1000))
        batch = spool.close_batch()
        storage.insert(batch.data(), batch.token)  # stored, then the process dies
        return spool

    old = asyncio.run(first_life())
    os.close(old._owner_lock)  # kill -9 releases the owner lock

    async def second_life():
        spool, writer, _ = pipeline(tmp_path, storage, metrics, site, flush_seconds=0.1)
        task = asyncio.create_task(writer.run())
        await until(lambda: spool.pending_batches == 0 and storage.calls >= 2)
        writer.close(time.time() + 2)
        await task

    asyncio.run(second_life())
    assert storage.tokens[0] == storage.tokens[1]  # the replay carried the same token
    assert count(chdb_storage, site) == (1000, 1000)


def test_stop_leaves_what_cannot_be_stored_in_the_spool(tmp_path, chdb_storage, metrics):
    site = "s" + uuid.uuid4().hex[:10]
    storage = Storage(chdb_storage, failing=True)

    async def life(failing: bool):
        storage.failing = failing
        spool, writer, ingest = pipeline(tmp_path, storage, metrics, site, flush_seconds=0.1)
        task = asyncio.create_task(writer.run())
        if failing:
            await ingest.accept(bodies(f"{site}.example", 300))
            await asyncio.sleep(0.3)
        else:
            await until(lambda: count(chdb_storage, site)[0] == 300)
        started = time.monotonic()
        writer.close(time.time() + 1.0)
        await task
        assert time.monotonic() - started < 3  # a failing storage does not hold the stop

    asyncio.run(life(True))
    assert count(chdb_storage, site) == (0, 0)
    asyncio.run(life(False))
    assert count(chdb_storage, site) == (300, 300)


def test_a_row_refused_as_data_is_dropped_alone(tmp_path, metrics, sample):
    inserted: list[bytes] = []

    def insert(data: bytes, token: str) -> None:
        if b"poison" in data:
            raise RuntimeError("Code: 27. DB::Exception: Cannot parse input")
        inserted.append(data)

    async def run():
        spool = Spool(tmp_path, max_bytes=2**20)
        spool.open()
        writer = Writer(spool, insert, metrics, backoff=(0.01, 0.02), flush_seconds=0.05)
        task = asyncio.create_task(writer.run())
        payload = b"".join(b'["ok%d"]\n' % i for i in range(7)) + b'["poison"]\n'
        spool.append(payload, 8)
        writer.rows_added()
        await until(lambda: spool.pending_batches == 0 and inserted)
        writer.close(time.time() + 1)
        await task

    asyncio.run(run())
    assert sum(part.count(b"\n") for part in inserted) == 7
    name = "ecstatic_intake_lines_invalid_total"
    assert sample(name, source="storage", reason="unstorable_row") == 1


def test_a_cancelled_writer_stops_even_while_storage_fails(tmp_path, metrics):
    async def run():
        spool = Spool(tmp_path, max_bytes=2**20)
        spool.open()

        def insert(data, token):
            raise ConnectionError("down")

        writer = Writer(spool, insert, metrics, backoff=(0.01, 0.02), flush_seconds=0.01)
        task = asyncio.create_task(writer.run())
        spool.append(b'["x"]\n', 1)
        writer.rows_added()
        await asyncio.sleep(0.2)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        assert done, "the writer swallowed its cancellation"

    asyncio.run(run())


def test_only_parse_errors_count_as_the_data_s_fault():
    assert is_data_error(RuntimeError("Code: 27. DB::Exception: Cannot parse input"))
    assert not is_data_error(RuntimeError("Code: 243. DB::Exception: Not enough space"))
    assert not is_data_error(ConnectionError("refused"))


def test_a_full_spool_pauses_the_source(tmp_path, metrics, sample):
    async def run():
        spool = Spool(tmp_path, max_bytes=2000, segment_bytes=500)
        spool.open()
        storage_up = asyncio.Event()

        def insert(data, token):
            if not storage_up.is_set():
                raise ConnectionError("down")

        writer = Writer(spool, insert, metrics, backoff=(0.01, 0.05), flush_seconds=0.05)
        maker = RowMaker("bunny", Hosts({"x.example": "x"}), Salts(), Agents())
        ingest = Ingest("bunny", maker, spool, writer, metrics, ThreadPoolExecutor(1))
        task = asyncio.create_task(writer.run())
        chunk = 0
        while not spool.full:
            await ingest.accept(bodies("x.example", 10, chunk * 10))
            chunk += 1
        blocked = asyncio.create_task(ingest.accept(bodies("x.example", 10, 100)))
        await asyncio.sleep(0.3)
        assert not blocked.done()  # backpressure: the source waits, nothing is dropped
        storage_up.set()
        await asyncio.wait_for(blocked, 10)
        writer.close(time.time() + 2)
        await task

    asyncio.run(run())
    assert sample("ecstatic_intake_backpressure_seconds_total") > 0.2


def test_a_burst_is_stored_when_the_sources_pause_and_a_trickle_waits_for_the_age(
    tmp_path, metrics
):
    inserted: list[int] = []

    def insert(data: bytes, token: str) -> None:
        inserted.append(data.count(b"\n"))

    async def run():
        spool = Spool(tmp_path, max_bytes=2**20)
        spool.open()
        # The age alone would hold either batch for a minute.
        writer = Writer(spool, insert, metrics, batch_rows=1000, flush_seconds=60)
        task = asyncio.create_task(writer.run())
        # A trickle: under a tenth of a batch, its pause does not close it.
        spool.append(b'["t"]\n' * 99, 99)
        writer.rows_added()
        await asyncio.sleep(0.5)
        assert inserted == []
        # The burst that follows: past a tenth, the pause after it closes the batch.
        spool.append(b'["b"]\n' * 101, 101)
        writer.rows_added()
        await until(lambda: inserted, timeout=5)
        writer.close(time.time() + 1)
        await task

    asyncio.run(run())
    assert inserted == [200]


def test_a_batch_is_on_disk_before_it_is_inserted_and_closing_it_does_not_wait_for_the_disk(
    tmp_path, metrics, monkeypatch
):
    import services.intake.spool as spool_module

    events: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", fsync)

    def insert(data: bytes, token: str) -> None:
        events.append("insert")

    async def run():
        spool = Spool(tmp_path, max_bytes=2**20)
        spool.open()
        writer = Writer(spool, insert, metrics, batch_rows=2, flush_seconds=60)
        spool.append(b'["a"]\n["b"]\n', 2)
        writer.rows_added()  # full: closes the batch on the caller's thread
        assert events == []  # the loop never waits on fsync
        task = asyncio.create_task(writer.run())
        await until(lambda: "insert" in events, timeout=5)
        writer.close(time.time() + 1)
        await task

    asyncio.run(run())
    assert events.index("fsync") < events.index("insert")


def test_a_disk_that_fails_the_batch_s_fsync_is_retried_not_the_end_of_the_writer(
    tmp_path, metrics, monkeypatch
):
    from services.intake.spool import Batch

    failures = [OSError(28, "No space left on device")] * 2
    real_sync = Batch.sync

    def sync(self) -> None:
        if failures:
            raise failures.pop()
        real_sync(self)

    monkeypatch.setattr(Batch, "sync", sync)
    inserted: list[bytes] = []

    async def run():
        spool = Spool(tmp_path, max_bytes=2**20)
        spool.open()
        writer = Writer(spool, lambda data, token: inserted.append(data), metrics,
                        batch_rows=2, backoff=(0.01, 0.02))  # fmt: skip
        task = asyncio.create_task(writer.run())
        spool.append(b'["a"]\n["b"]\n', 2)
        writer.rows_added()
        await until(lambda: inserted or task.done(), timeout=5)
        assert not task.done(), task.exception()
        writer.close(time.time() + 1)
        await task

    asyncio.run(run())
    assert inserted == [b'["a"]\n["b"]\n'] and not failures
