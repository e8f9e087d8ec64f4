"""Never lose an accepted line, with real processes (issue 7, point 6).

Each test runs ``ecstatic serve intake,query`` processes on one throwaway home and one
set of ports, streams numbered Bunny lines at them over TCP from a sender that
cooperates with the hand-over (on EOF it closes and reconnects), and at the end reads
every stored request id from the data path once no process holds it: each line the
sender wrote must be there exactly once. The storage-failing case runs in-process
(``test_writer.py``); here it is stops, restarts, a hand-over and SIGKILL.
"""

from __future__ import annotations

import asyncio.selector_events
import time

import pytest

from services.core.config import Config
from services.intake.syslog_peers import PAUSE_AT
from tests.intake.zero_loss_helpers import (
    CaddyWriter,
    IntakeProcess,
    Sender,
    StubApi,
    caddy_path,
    frame,
    process_env,
    request_id,
    spooled_ids,
    stored_ids,
    wait_for_count,
    wait_until_steady,
)

pytestmark = pytest.mark.integration

LINES = 60_000
RATE = 12_000  # lines/s: the stream lasts ~5 s, long enough to stop a process inside it
CADDY_LINES, CADDY_RATE = 6_000, 1_500
READ_SIZE = asyncio.selector_events._SelectorSocketTransport.max_size  # one recv()


@pytest.fixture
def api():
    stub = StubApi()
    yield stub
    stub.close()


@pytest.fixture
def env(tmp_path, api):
    return process_env(tmp_path / "home", api.url)


@pytest.fixture
def processes(tmp_path, env):
    """Start processes on the shared home and ports; every one is gone after the test."""
    started: list[IntakeProcess] = []

    def start() -> IntakeProcess:
        process = IntakeProcess(env, tmp_path / f"serve-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.ensure_gone()


def _wait_until_sent(sender: Sender, lines: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while sender.next < lines:
        assert sender.error is None, sender.error
        assert sender.is_alive(), "sender stopped"
        assert time.monotonic() < deadline, f"sender stuck at line {sender.next}"
        time.sleep(0.02)


def _finish(sender: Sender, timeout: float = 120.0) -> None:
    sender.join(timeout)
    assert not sender.is_alive(), f"sender stuck at line {sender.next}"
    assert sender.error is None, sender.error
    assert sender.written == list(range(LINES))  # each line fully written exactly once


def _assert_exactly_once(env, last: IntakeProcess, others: list[str] = ()) -> None:
    expected = [request_id(n) for n in range(LINES)] + list(others)
    counted = wait_for_count(last, len(expected))
    assert last.terminate() == 0, last.tail()
    stored = stored_ids(env)
    duplicated = {rid: n for rid, n in stored.items() if n > 1}
    missing = [line for line in expected if line not in stored]
    assert not duplicated, f"{len(duplicated)} lines stored twice, e.g. {list(duplicated)[:5]}"
    assert not missing, f"{len(missing)} lines lost, e.g. {missing[:5]} (stats API: {counted})"
    assert len(stored) == len(expected)
    assert counted == len(expected)


def test_sigterm_mid_stream_then_restart(processes, env):
    first = processes()
    first.wait_listening()
    sender = Sender(first.syslog_port, LINES, RATE)
    sender.start()
    _wait_until_sent(sender, LINES // 3)
    assert first.terminate() == 0, first.tail()  # drains its connections, spools the rest
    cut_at = sender.next
    assert cut_at < LINES, "the stream ended before the stop"
    second = processes()
    second.wait_listening()
    _finish(sender)
    assert sender.connections[0].ended_by == "eof"  # the FIN of the drain, not a reset
    assert len(sender.connections) >= 2
    print(f"\nSIGTERM at line {cut_at}; {len(sender.connections)} connections")
    _assert_exactly_once(env, second)


def test_restart_under_load_with_the_hand_over(processes, env):
    old = processes()
    old.wait_listening()
    sender = Sender(old.syslog_port, LINES, RATE)
    # Caddy's log meanwhile: old and new intake both see the file during the overlap.
    caddy = CaddyWriter(Config.from_env(env).access_log, CADDY_LINES, CADDY_RATE)
    sender.start()
    caddy.start()
    _wait_until_sent(sender, LINES // 4)
    new = processes()
    new.wait_listening()  # both listen on the port now (SO_REUSEPORT)
    assert old.listening()
    handed_at = sender.next
    assert old.terminate() == 0, old.tail()
    _finish(sender)
    caddy.join(60)
    assert caddy.error is None and caddy.written == CADDY_LINES, caddy.error
    assert handed_at < LINES, "the stream ended before the hand-over"
    assert sender.connections[0].ended_by == "eof"
    assert sender.refused == 0  # the port always had a listener
    print(f"\nhand-over at line {handed_at}; {len(sender.connections)} connections")
    _assert_exactly_once(env, new, [caddy_path(n) for n in range(CADDY_LINES)])


def test_kill_9_mid_stream_loses_at_most_the_unread(processes, env):
    victim = processes()
    victim.wait_listening()
    sender = Sender(victim.syslog_port, LINES, RATE, sndbuf=128 * 1024)
    sender.start()
    _wait_until_sent(sender, LINES // 3)
    buffers = victim.server_sockets()  # the kernel's receive side, just before
    victim.kill()
    killed_at = sender.next  # about: the sender may not have counted its last send yet
    spooled = spooled_ids(env)  # what reached the spool before the kill
    survivor = processes()
    survivor.wait_listening()
    sender.join(120)
    assert not sender.is_alive() and sender.error is None, sender.error
    assert killed_at < LINES, "the stream ended before the kill"
    written = sender.written
    assert sorted(written) == list(range(LINES))  # the sender resent what it had not fully written

    wait_until_steady(survivor)
    assert survivor.terminate() == 0, survivor.tail()
    stored = stored_ids(env)
    duplicated = {rid: n for rid, n in stored.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} lines stored twice, e.g. {list(duplicated)[:5]}"
    lost = [n for n in written if request_id(n) not in stored]
    assert spooled <= stored.keys(), f"{len(spooled - stored.keys())} spooled lines not replayed"
    to_victim = {n for connection in sender.connections[:1] for n in connection.lines}
    assert set(lost) <= to_victim, "a line sent to the survivor was lost"

    # What can be gone: the lines in the sender's send buffer and the victim's receive
    # buffer (unread by the listener), plus what the listener had read but not yet
    # spooled: up to PAUSE_AT + one recv queued, and as much again in flight to the spool.
    sndbuf = sender.connections[0].sndbuf
    rcvbuf = max((s["rcvbuf"] for s in buffers), default=0)
    assert rcvbuf, "no receive buffer found for the victim's connection"
    read_ahead = 2 * (PAUSE_AT + READ_SIZE)
    bound = (sndbuf + rcvbuf + read_ahead) // len(frame(0)) + 1  # line 0 is the shortest
    print(
        f"\nkill -9 at line {killed_at}: {len(lost)} lines lost (bound {bound}: send buffer "
        f"{sndbuf} + receive buffer {rcvbuf} + read ahead {read_ahead} bytes); "
        f"{len(spooled)} lines were in the spool, all replayed"
    )
    assert len(lost) <= bound
    assert len(stored) == LINES - len(lost)
