import asyncio
import json
import time
from datetime import UTC, datetime

from services.intake.follow import Follower
from services.intake.model import LogLine
from services.intake.offsets import OffsetStore, Position
from services.intake.parse import parse_bunny
from services.intake.sink import Sink
from services.intake.spool import Spool


def record(i: int) -> LogLine:
    return LogLine(
        datetime(2026, 1, 1, tzinfo=UTC),
        "a.b-cdn.net",
        "GET",
        f"/{i}",
        200,
        i,
        "",
        "ua",
        "198.51.100.0",
        "DE",
        f"r{i}",
        "bunny",
    )


def test_spool_rotates_by_rename_with_sortable_names(tmp_path):
    ticks = iter(range(1, 100))
    woken = []
    spool = Spool(
        tmp_path / "bunny.log",
        max_bytes=300,
        on_append=lambda: woken.append(1),
        clock=lambda: next(ticks),
    )
    for i in range(6):
        spool.append([record(i)])
    spool.close()
    rotated = sorted(tmp_path.glob("bunny-*.log"))
    assert [path.name for path in rotated][:2] == [
        "bunny-00000000000000000001.log",
        "bunny-00000000000000000002.log",
    ]
    lines = [
        line
        for path in [*rotated, tmp_path / "bunny.log"]
        if path.exists()
        for line in path.read_bytes().splitlines()
    ]
    assert [parse_bunny(line) for line in lines] == [record(i) for i in range(6)]
    assert len(woken) == 6


def test_follower_drains_many_rotations_and_deletes_finished_files(tmp_path, metrics):
    stored = []

    async def process(items):
        return [(parse_bunny(item).path,) for item in items]

    async def scenario():
        sink = Sink(
            lambda rows: stored.extend(row[0] for row in rows),
            metrics,
            batch_rows=7,
            flush_seconds=0.01,
        )
        follower = Follower(
            tmp_path / "bunny.log",
            process,
            sink,
            OffsetStore(tmp_path / "offsets.json"),
            "spool",
            poll_seconds=0.01,
            delete_finished=True,
        )
        spool = Spool(tmp_path / "bunny.log", max_bytes=500, on_append=follower.wake)
        tasks = [asyncio.create_task(sink.run()), asyncio.create_task(follower.run())]
        for i in range(60):
            spool.append([record(i)])
            if i % 7 == 0:
                await asyncio.sleep(0.003)
        deadline = time.monotonic() + 10
        while len(stored) < 60 or list(tmp_path.glob("bunny-*.log")):
            assert time.monotonic() < deadline, (len(stored), list(tmp_path.glob("bunny-*.log")))
            await asyncio.sleep(0.01)
        follower.stop()
        await tasks[1]
        sink.close(time.monotonic() + 1)
        await tasks[0]
        spool.close()

    asyncio.run(scenario())
    assert stored == [f"/{i}" for i in range(60)]


def test_offset_store_round_trip_and_corrupt_file(tmp_path):
    store = OffsetStore(tmp_path / "offsets.json")
    assert store.load("caddy") is None
    store.save("caddy", Position(5, 10, 10, "ab"), "/x/access.log")
    store.save("spool", Position(6, 0, 0, "cd"))
    again = OffsetStore(tmp_path / "offsets.json")
    assert again.load("caddy") == Position(5, 10, 10, "ab") and again.load("spool").inode == 6
    assert json.loads((tmp_path / "offsets.json").read_text())["caddy"]["path"] == "/x/access.log"
    (tmp_path / "offsets.json").write_text("{not json")
    assert OffsetStore(tmp_path / "offsets.json").load("caddy") is None
