import asyncio
import json
import os
import time
from pathlib import Path

from services.intake.follow import Follower
from services.intake.model import InvalidLine
from services.intake.offsets import OffsetStore


class Store:
    """Where consumed lines end up (the spool, in the service)."""

    def __init__(self):
        self.rows = []
        self.down = False  # the spool takes nothing (e.g. full): the follower must wait


class Process:
    """The service's ``Ingest.accept_lines``: takes lines in order, says how many."""

    def __init__(self, store):
        self.store = store
        self.invalid = []
        self.hold = set()

    async def __call__(self, items):
        consumed = 0
        for item in items:
            if isinstance(item, InvalidLine):
                self.invalid.append(item.reason)
            elif item in self.hold or self.store.down:
                break
            else:
                self.store.rows.append(item.decode())
            consumed += 1
        return consumed


class Harness:
    """A follower on a loop, as the service runs it."""

    def __init__(self, tmp: Path, store=None, process=None, **options):
        self.dir = tmp / "logs"
        self.dir.mkdir(exist_ok=True)
        self.path = self.dir / "access.log"
        self.offsets_file = tmp / "state" / "offsets.json"
        self.store = store or Store()
        self.process = process or Process(self.store)
        self.options = {"poll_seconds": 0.01, "retry_seconds": 0.02, **options}

    def saved(self):
        if not self.offsets_file.exists():
            return None
        return json.loads(self.offsets_file.read_text()).get("caddy")

    async def start(self, metrics):
        self.follower = Follower(
            self.path,
            self.process,
            OffsetStore(self.offsets_file),
            "caddy",
            metrics,
            **self.options,
        )
        self.tasks = [asyncio.create_task(self.follower.run())]

    async def stop(self):
        self.follower.stop()
        await self.tasks[0]

    def session(self, metrics, done, settle: float = 0.0):
        """Run the follower until ``done()`` holds (then ``settle`` seconds more), then stop."""

        async def scenario():
            await self.start(metrics)
            await until(done)
            await asyncio.sleep(settle)
            await self.stop()

        run(scenario)


def append(path: Path, *lines: str, end="\n"):
    with open(path, "a") as out:
        out.write("".join(line + end for line in lines))


async def until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def run(scenario):
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_missing_file_then_lines_only_complete_ones(tmp_path, metrics):
    h = Harness(tmp_path)

    async def scenario():
        await h.start(metrics)
        await asyncio.sleep(0.05)  # the file does not exist yet
        append(h.path, "a", "b")
        append(h.path, "partial", end="")
        await until(lambda: h.store.rows == ["a", "b"])
        await asyncio.sleep(0.05)
        assert h.store.rows == ["a", "b"]  # no LF yet: not consumed
        append(h.path, " done")
        await until(lambda: h.store.rows == ["a", "b", "partial done"])
        await h.stop()

    run(scenario)
    assert h.saved()["offset"] == h.path.stat().st_size


def test_offset_saved_only_after_lines_are_taken(tmp_path, metrics):
    h = Harness(tmp_path)
    h.store.down = True
    append(h.path, "one", "two")

    async def scenario():
        await h.start(metrics)
        await asyncio.sleep(0.2)
        assert h.saved() is None and h.store.rows == []
        h.store.down = False
        await until(lambda: h.saved() is not None)
        assert h.store.rows == ["one", "two"]
        assert h.saved()["offset"] == len("one\ntwo\n")
        await h.stop()

    run(scenario)


def test_restart_resumes_where_it_stopped(tmp_path, metrics):
    first = Harness(tmp_path)
    append(first.path, "1", "2", "3")
    first.session(metrics, lambda: first.store.rows == ["1", "2", "3"])
    append(first.path, "4", "5")
    second = Harness(tmp_path)
    second.session(metrics, lambda: second.store.rows == ["4", "5"], settle=0.05)
    assert second.store.rows == ["4", "5"]


def test_stop_while_nothing_is_taken_then_restart_loses_nothing(tmp_path, metrics):
    first = Harness(tmp_path)
    append(first.path, "x", "y")
    first.store.down = True

    async def one():
        await first.start(metrics)
        await asyncio.sleep(0.1)
        await first.stop()

    run(one)
    assert first.saved() is None
    second = Harness(tmp_path)

    async def two():
        await second.start(metrics)
        await until(lambda: second.store.rows == ["x", "y"])
        await second.stop()

    run(two)


def rotate(path: Path, stamp: str) -> Path:
    target = path.with_name(f"access-{stamp}.log")
    os.rename(path, target)
    return target


def test_rotation_by_rename_mid_stream_loses_nothing(tmp_path, metrics):
    h = Harness(tmp_path)
    append(h.path, *[f"a{i}" for i in range(5)])

    async def scenario():
        await h.start(metrics)
        await until(lambda: len(h.store.rows) == 5)
        append(h.path, "a5", "a6")  # written just before the roller renames
        rotated = rotate(h.path, "2026-01-01T00-00-00.000")
        await asyncio.sleep(0.05)
        append(h.path, "b0", "b1")
        await until(lambda: len(h.store.rows) == 9)
        append(h.path, "b2")
        await until(lambda: len(h.store.rows) == 10)
        # All of it is taken (in the spool): the visitors' IPs in it go with the file.
        await until(lambda: not rotated.exists())
        await h.stop()

    run(scenario)
    assert h.store.rows == [f"a{i}" for i in range(7)] + ["b0", "b1", "b2"]
    assert h.saved()["inode"] == h.path.stat().st_ino


def test_rotations_while_stopped_are_followed_in_order(tmp_path, metrics):
    first = Harness(tmp_path)
    append(first.path, "a0")
    first.session(metrics, lambda: first.saved() is not None)
    append(first.path, "a1")
    rotate(first.path, "2026-01-01T00-00-00.000")
    append(first.path, "b0")
    rotate(first.path, "2026-01-01T00-00-01.000")
    append(first.path, "c0")
    (first.dir / "access-2025-01-01T00-00-00.000.log").write_text("old\n")  # finished long ago
    second = Harness(tmp_path)
    second.session(metrics, lambda: len(second.store.rows) >= 3, settle=0.1)
    assert second.store.rows == ["a1", "b0", "c0"]


def test_truncation_restarts_at_zero(tmp_path, metrics):
    h = Harness(tmp_path)
    append(h.path, "long line one", "long line two")

    async def scenario():
        await h.start(metrics)
        await until(lambda: len(h.store.rows) == 2)
        with open(h.path, "w") as out:
            out.write("n1\n")
        await until(lambda: h.store.rows[-1:] == ["n1"])
        with open(h.path, "r+") as out:  # rewritten in place, same size or longer
            out.write("m1\nm2\nm3\nm4 padded to be longer\n")
        await until(lambda: h.store.rows[-1:] == ["m4 padded to be longer"])
        await h.stop()

    run(scenario)
    assert h.store.rows == [
        "long line one",
        "long line two",
        "n1",
        "m1",
        "m2",
        "m3",
        "m4 padded to be longer",
    ]


def test_saved_inode_with_other_content_is_not_trusted(tmp_path, metrics):
    first = Harness(tmp_path)
    append(first.path, "first file line")
    first.session(metrics, lambda: first.saved() is not None)
    with open(first.path, "r+") as out:  # same inode, new content (as after inode reuse)
        out.write("X" * 15 + "\nsecond\n")
    second = Harness(tmp_path)
    second.session(metrics, lambda: len(second.store.rows) == 2)
    assert second.store.rows == ["X" * 15, "second"]


def test_too_long_line_skipped_without_buffering(tmp_path, metrics):
    h = Harness(tmp_path, max_line=100, read_bytes=150)
    append(h.path, "ok1", "z" * 1000, "ok2")

    async def scenario():
        await h.start(metrics)
        await until(lambda: h.store.rows == ["ok1", "ok2"])
        await h.stop()

    run(scenario)
    assert h.process.invalid == ["too_long"]
    assert h.saved()["offset"] == h.path.stat().st_size


def test_retry_later_holds_the_line(tmp_path, metrics):
    h = Harness(tmp_path)
    h.process.hold.add(b"new-site")
    append(h.path, "a", "new-site", "b")

    async def scenario():
        await h.start(metrics)
        await until(lambda: h.store.rows == ["a"])
        await until(lambda: h.saved() is not None)
        await asyncio.sleep(0.1)
        assert h.store.rows == ["a"] and h.saved()["offset"] == 2
        h.process.hold.clear()
        await until(lambda: h.store.rows == ["a", "new-site", "b"])
        await h.stop()

    run(scenario)


def test_finished_files_are_deleted_once_taken(tmp_path, metrics):
    h = Harness(tmp_path)
    append(h.path, "s0")

    async def scenario():
        await h.start(metrics)
        await until(lambda: h.store.rows == ["s0"])
        append(h.path, "s1")
        rotated = rotate(h.path, "00000000000000000001")
        append(h.path, "t0")
        await until(lambda: h.store.rows == ["s0", "s1", "t0"])
        await until(lambda: not rotated.exists())
        assert h.path.exists()
        await h.stop()

    run(scenario)


def test_rotated_file_ending_without_newline_is_counted_and_passed(tmp_path, metrics):
    h = Harness(tmp_path)
    append(h.path, "a")
    append(h.path, "cut", end="")

    async def scenario():
        await h.start(metrics)
        await until(lambda: h.store.rows == ["a"])
        rotate(h.path, "2026-01-01T00-00-00.000")
        append(h.path, "b")
        await until(lambda: h.store.rows == ["a", "b"])
        await h.stop()

    run(scenario)
    assert h.process.invalid == ["partial_line"]


def test_file_deleted_by_the_roller_while_stopped_resumes_at_the_oldest_rolled(tmp_path, metrics):
    first = Harness(tmp_path)
    append(first.path, "a0")
    first.session(metrics, lambda: first.saved() is not None)
    append(first.path, "a1")
    rotate(first.path, "2026-01-01T00-00-00.000")
    # roll_keep exceeded: the file holding the saved position is deleted
    (first.dir / "access-2026-01-01T00-00-00.000.log").unlink()
    append(first.path, "b0")
    rotate(first.path, "2026-01-01T00-00-01.000")
    append(first.path, "c0")
    rotate(first.path, "2026-01-01T00-00-02.000")
    append(first.path, "d0")
    second = Harness(tmp_path)
    second.session(metrics, lambda: len(second.store.rows) >= 3, settle=0.1)
    # a1 went with the deleted file; everything still on disk is read, in order
    assert second.store.rows == ["b0", "c0", "d0"]
