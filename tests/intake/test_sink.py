import asyncio
import time

from services.intake.sink import Sink


class Store:
    def __init__(self, failures=0):
        self.batches = []
        self.failures = failures

    def insert(self, rows):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("clickhouse down")
        self.batches.append(list(rows))


class Committer:
    def __init__(self):
        self.tokens = []

    def commit(self, token):
        self.tokens.append(token)


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def run(scenario):
    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_flush_by_size_then_commit_last_token(metrics, sample):
    store, c = Store(), Committer()

    async def scenario():
        sink = Sink(store.insert, metrics, batch_rows=3, flush_seconds=60)
        task = asyncio.create_task(sink.run())
        await sink.add([((i,), c.commit, i) for i in range(3)])
        await until(lambda: c.tokens)
        sink.close(time.monotonic() + 1)
        await task

    run(scenario)
    assert store.batches == [[(0,), (1,), (2,)]]
    assert c.tokens == [2]
    assert sample("ecstatic_intake_rows_inserted_total") == 3
    assert sample("ecstatic_intake_buffered_rows") == 0
    assert sample("ecstatic_intake_last_insert_timestamp_seconds") > 0


def test_flush_by_time(metrics):
    store, c = Store(), Committer()

    async def scenario():
        sink = Sink(store.insert, metrics, batch_rows=1000, flush_seconds=0.05)
        task = asyncio.create_task(sink.run())
        await sink.add([(("r",), c.commit, "t1")])
        await until(lambda: c.tokens == ["t1"], timeout=2)
        sink.close(time.monotonic() + 1)
        await task

    run(scenario)
    assert store.batches == [[("r",)]]


def test_failed_insert_keeps_batch_retries_and_commits_only_after(metrics, sample):
    store, c = Store(failures=2), Committer()

    async def scenario():
        sink = Sink(store.insert, metrics, batch_rows=2, flush_seconds=0.01, backoff=(0.01, 0.05))
        task = asyncio.create_task(sink.run())
        await sink.add([((1,), c.commit, 1), ((2,), c.commit, 2), ((3,), c.commit, 3)])
        await until(lambda: sample("ecstatic_intake_insert_failures_total") >= 1)
        assert c.tokens == [] and sink.failing_for() >= 0 and sink._failing_since is not None
        await until(lambda: c.tokens == [2, 3])
        assert sink.failing_for() == 0
        sink.close(time.monotonic() + 1)
        await task

    run(scenario)
    assert store.batches == [[(1,), (2,)], [(3,)]]
    assert sample("ecstatic_intake_insert_failures_total") == 2


def test_markers_commit_without_insert_and_coalesce(metrics):
    store, a, b = Store(), Committer(), Committer()

    async def scenario():
        sink = Sink(store.insert, metrics, batch_rows=10, flush_seconds=0.01)
        await sink.add(
            [(None, a.commit, 1), (None, a.commit, 2), (None, b.commit, "x"), (None, a.commit, 3)]
        )
        assert len(sink._entries) == 3  # the first two markers of a merged
        task = asyncio.create_task(sink.run())
        await until(lambda: a.tokens and b.tokens)
        await sink.add([(("row",), a.commit, 4), (None, b.commit, "y")])
        await until(lambda: a.tokens[-1] == 4 and b.tokens[-1] == "y")
        sink.close(time.monotonic() + 1)
        await task

    run(scenario)
    assert store.batches == [[("row",)]]
    assert a.tokens == [3, 4] and b.tokens == ["x", "y"]


def test_producers_wait_when_buffer_is_full(metrics):
    store, c = Store(failures=3), Committer()

    async def scenario():
        sink = Sink(
            store.insert,
            metrics,
            batch_rows=2,
            flush_seconds=0.01,
            max_buffered=4,
            backoff=(0.05, 0.05),
        )
        task = asyncio.create_task(sink.run())
        await sink.add(
            [((i,), c.commit, i) for i in range(4)]
        )  # full: waits until a batch is stored
        assert store.batches  # returned only after space was made
        assert sink.buffered_rows <= 2
        sink.close(time.monotonic() + 2)
        await task

    run(scenario)
    assert [row for batch in store.batches for row in batch] == [(i,) for i in range(4)]
    assert c.tokens == [1, 3]


def test_close_flushes_everything(metrics):
    store, c = Store(), Committer()

    async def scenario():
        sink = Sink(store.insert, metrics, batch_rows=2, flush_seconds=60)
        task = asyncio.create_task(sink.run())
        await sink.add([((i,), c.commit, i) for i in range(5)])
        sink.close(time.monotonic() + 2)
        await task

    run(scenario)
    assert [row for batch in store.batches for row in batch] == [(i,) for i in range(5)]
    assert c.tokens[-1] == 4


def test_close_gives_up_at_deadline_without_committing(metrics):
    store, c = Store(failures=10**6), Committer()

    async def scenario():
        sink = Sink(store.insert, metrics, batch_rows=2, flush_seconds=60, backoff=(0.01, 0.02))
        task = asyncio.create_task(sink.run())
        await sink.add([((1,), c.commit, 1)])
        started = time.monotonic()
        sink.close(started + 0.3)
        await task
        assert time.monotonic() - started < 1.0
        assert sink.buffered_rows == 1

    run(scenario)
    assert store.batches == [] and c.tokens == []


def test_commit_callback_error_does_not_break_the_sink(metrics):
    store = Store()
    seen = []

    def bad(token):
        seen.append(token)
        raise OSError("disk full")

    async def scenario():
        sink = Sink(store.insert, metrics, batch_rows=1, flush_seconds=0.01)
        task = asyncio.create_task(sink.run())
        await sink.add([((1,), bad, 1)])
        await sink.add([((2,), bad, 2)])
        await until(lambda: seen == [1, 2])
        sink.close(time.monotonic() + 1)
        await task

    run(scenario)
    assert store.batches == [[(1,)], [(2,)]]


class PickyStore:
    """Refuses to encode any batch holding a row with a lone surrogate, as the driver does."""

    def __init__(self):
        self.batches = []
        self.attempts = 0

    def insert(self, rows):
        self.attempts += 1
        for row in rows:
            row[0].encode("utf-8")  # raises UnicodeEncodeError, a ValueError
        self.batches.append(list(rows))


def test_one_unstorable_row_is_dropped_and_the_rest_stored(metrics, sample):
    store, c = PickyStore(), Committer()
    rows = [(f"ok{i}",) for i in range(7)]
    rows.insert(4, ("bad\ud800",))

    async def scenario():
        sink = Sink(store.insert, metrics, batch_rows=8, flush_seconds=0.01)
        task = asyncio.create_task(sink.run())
        await sink.add([(row, c.commit, i) for i, row in enumerate(rows)])
        await until(lambda: c.tokens and c.tokens[-1] == 7)
        sink.close(time.monotonic() + 1)
        await task

    run(scenario)
    stored = [row for batch in store.batches for row in batch]
    assert stored == [row for row in rows if row[0] != "bad\ud800"]
    assert (
        sample("ecstatic_intake_lines_invalid_total", source="storage", reason="unstorable_row")
        == 1
    )
    assert sample("ecstatic_intake_rows_inserted_total") == 7
    assert sample("ecstatic_intake_buffered_rows") == 0
    assert store.attempts < 12  # halving, not row by row


def test_storage_errors_never_drop_rows(metrics, sample):
    store, c = Store(failures=3), Committer()

    async def scenario():
        sink = Sink(store.insert, metrics, batch_rows=4, flush_seconds=0.01, backoff=(0.01, 0.02))
        task = asyncio.create_task(sink.run())
        await sink.add([((i,), c.commit, i) for i in range(4)])
        await until(lambda: c.tokens)
        sink.close(time.monotonic() + 1)
        await task

    run(scenario)
    assert store.batches == [[(0,), (1,), (2,), (3,)]]
    assert (
        sample("ecstatic_intake_lines_invalid_total", source="storage", reason="unstorable_row")
        == 0
    )


def test_backoff_holds_while_stopping(metrics):
    attempts = []

    def insert(rows):
        attempts.append(time.monotonic())
        raise ConnectionError("clickhouse down")

    async def scenario():
        sink = Sink(insert, metrics, flush_seconds=0.01, backoff=(0.3, 30))
        task = asyncio.create_task(sink.run())
        await sink.add([(("row",), lambda token: None, 1)])
        await until(lambda: attempts)
        before = len(attempts)
        sink.close(time.monotonic() + 1.0)
        await task
        return len(attempts) - before

    during_stop = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert during_stop <= 4, f"{during_stop} attempts in a 1 s stop window"
