"""The write-ahead spool: batches, tokens, replay after a crash, the cap, deletion."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from services.intake import spool as spool_module
from services.intake.spool import Spool


def rows(n: int, tag: str = "r") -> bytes:
    return b"".join(f'["{tag}{i}"]\n'.encode() for i in range(n))


def new_spool(path, **kwargs) -> Spool:
    spool = Spool(path, max_bytes=kwargs.pop("max_bytes", 2**20), **kwargs)
    spool.open()
    return spool


def crash(spool: Spool) -> None:
    """What kill -9 leaves: files as written, the owner lock released by the kernel."""
    if spool._current is not None:
        spool._current.handle.flush()
    os.close(spool._owner_lock)
    for fd in spool._adopted.values():
        os.close(fd)


def test_a_batch_holds_what_was_appended_since_the_last_one(tmp_path):
    spool = new_spool(tmp_path)
    spool.append(rows(2, "a"), 2)
    spool.append(rows(3, "b"), 3)
    first = spool.close_batch()
    spool.append(rows(1, "c"), 1)
    second = spool.close_batch()
    assert (first.rows, second.rows) == (5, 1) and first.token != second.token
    assert first.data() == rows(2, "a") + rows(3, "b")
    first.forget_payload()
    assert first.data() == rows(2, "a") + rows(3, "b")  # read back from the segment
    assert spool.close_batch() is None


def test_stored_batches_free_their_segment_and_files_are_owner_only(tmp_path):
    spool = new_spool(tmp_path / "wal", segment_bytes=1)
    tmp_path = tmp_path / "wal"
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    spool.append(rows(10), 10)
    batch = spool.close_batch()
    (segment,) = [p for p in tmp_path.iterdir() if p.suffix == ".wal"]
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600
    spool.done(batch)
    assert not segment.exists() and spool.bytes == 0 and spool.pending_batches == 0


def test_after_a_crash_pending_batches_come_back_with_their_tokens(tmp_path):
    old = new_spool(tmp_path)
    old.append(rows(4, "a"), 4)
    stored = old.close_batch()
    old.done(stored)
    old.append(rows(2, "b"), 2)
    pending = old.close_batch()
    old.append(rows(3, "c"), 3)  # still filling when the process died
    crash(old)

    new = new_spool(tmp_path)
    adopted = new.adopt()
    assert [b.rows for b in adopted] == [2, 3]
    assert adopted[0].token == pending.token and adopted[0].data() == rows(2, "b")
    assert adopted[1].data() == rows(3, "c")
    # A second adopter (this one died too, before storing) finds the very same batches.
    crash(new)
    again = new_spool(tmp_path).adopt()
    assert [b.token for b in again] == [b.token for b in adopted]


def test_a_live_owner_is_left_alone(tmp_path):
    alive = new_spool(tmp_path)
    alive.append(rows(2), 2)
    alive.close_batch()
    assert new_spool(tmp_path).adopt() == []


def test_replayed_batches_are_deleted_once_stored(tmp_path):
    old = new_spool(tmp_path)
    old.append(rows(2), 2)
    old.close_batch()
    crash(old)
    new = new_spool(tmp_path)
    (batch,) = new.adopt()
    new.done(batch)
    assert not list(tmp_path.glob("*.wal"))
    assert [p.name for p in tmp_path.glob("*.lock")] == [f"{new._owner}.lock"]


def test_a_torn_record_at_the_end_is_dropped(tmp_path):
    old = new_spool(tmp_path)
    old.append(rows(2, "a"), 2)
    old.close_batch()
    old.append(rows(5, "b"), 5)
    crash(old)
    (segment,) = tmp_path.glob("*.wal")
    with open(segment, "r+b") as handle:
        handle.truncate(segment.stat().st_size - 3)  # the kill hit mid-write
    adopted = new_spool(tmp_path).adopt()
    assert [b.rows for b in adopted] == [2]


def test_a_write_that_fails_part_way_leaves_no_torn_record_behind(tmp_path, monkeypatch):
    # Replay stops at the first torn record: one left mid-file would hide every record
    # appended after it, accepted lines included.
    old = new_spool(tmp_path)
    old.append(rows(2, "a"), 2)
    real_writev = os.writev

    def disk_full_part_way(fd, buffers):
        real_writev(fd, [bytes(buffers[0])[:5]])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "writev", disk_full_part_way)
    with pytest.raises(OSError):
        old.append(rows(3, "lost"), 3)
    monkeypatch.setattr(spool_module.os, "writev", real_writev)
    old.append(rows(4, "b"), 4)
    crash(old)

    (adopted,) = new_spool(tmp_path).adopt()
    assert adopted.rows == 6 and adopted.data() == rows(2, "a") + rows(4, "b")


def test_the_cap_makes_the_spool_full_until_batches_are_stored(tmp_path):
    spool = new_spool(tmp_path, max_bytes=300, segment_bytes=100)
    batches = []
    while not spool.full:
        spool.append(rows(5), 5)
        batches.append(spool.close_batch())
    for batch in batches:
        spool.done(batch)
    assert not spool.full and spool.bytes < 300
