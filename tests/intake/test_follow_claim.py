"""Two intakes during a hand-over: only the one holding the offsets follows Caddy's log."""

import asyncio

from services.intake.follow import Follower
from services.intake.offsets import OffsetStore


class Taken:
    """An ingest that keeps every line it is given."""

    def __init__(self):
        self.lines: list[bytes] = []

    async def __call__(self, lines):
        self.lines.extend(lines)
        return len(lines)


async def _until(predicate, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_the_successor_follows_only_after_the_old_follower_stopped(tmp_path):
    log = tmp_path / "access.log"
    offsets = tmp_path / "state" / "offsets.json"
    old_taken, new_taken = Taken(), Taken()

    def follower(taken):
        return Follower(log, taken, OffsetStore(offsets), "caddy", poll_seconds=0.01)

    async def scenario():
        log.write_bytes(b"".join(b"a%d\n" % i for i in range(100)))
        old, new = follower(old_taken), follower(new_taken)
        old_task = asyncio.create_task(old.run())
        await _until(lambda: len(old_taken.lines) == 100)
        new_task = asyncio.create_task(new.run())  # the new process starts: both running
        with log.open("ab") as out:
            out.write(b"".join(b"b%d\n" % i for i in range(100)))
        await _until(lambda: len(old_taken.lines) == 200)
        await asyncio.sleep(0.1)
        assert new_taken.lines == []  # waiting for the claim, not reading
        old.stop()
        await old_task
        with log.open("ab") as out:
            out.write(b"".join(b"c%d\n" % i for i in range(100)))
        await _until(lambda: len(new_taken.lines) == 100)
        new.stop()
        await new_task

    asyncio.run(scenario())
    lines = [line.decode() for line in old_taken.lines + new_taken.lines]
    assert lines == [f"{p}{i}" for p in "abc" for i in range(100)]  # each once, in order
