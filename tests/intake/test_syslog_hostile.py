"""Idle, slow and greedy clients cannot lock a real sender out of the listener."""

import asyncio
import contextlib

from tests.intake.syslog_helpers import HEADER, Collect, eventually, line, record, serving


async def _connect(port):
    return await asyncio.open_connection("127.0.0.1", port)


async def _trickle(writer, data: bytes, every: float):
    """A slow-loris: one byte every ``every`` seconds, never a whole frame."""
    with contextlib.suppress(ConnectionError, OSError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)


async def _ended(reader, timeout=2.0) -> bool:
    """The listener closed this connection (FIN, or RST when bytes were left unread)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionError:  # reset, or our own write hit the closed socket
        return True


def _closed(sample, reason):
    return sample("ecstatic_intake_syslog_connections_closed_total", reason=reason)


def test_idle_and_slow_connections_time_out_busy_ones_do_not(metrics, sample):
    accept = Collect()

    async def scenario():
        async with serving(accept, metrics, idle_seconds=0.6) as server:
            idle_reader, _ = await _connect(server.port)
            slow_reader, slow = await _connect(server.port)
            trickle = asyncio.create_task(_trickle(slow, HEADER * 10, 0.05))
            _, busy = await _connect(server.port)
            started = asyncio.get_running_loop().time()
            for i in range(20):  # a real sender: a frame every 0.1 s for 2 s
                busy.write(line(f"b{i}"))
                await busy.drain()
                await asyncio.sleep(0.1)
            assert await _ended(idle_reader, 1)
            assert await _ended(slow_reader, 1)
            assert asyncio.get_running_loop().time() - started > 1.5
            await eventually(lambda: len(accept.bodies) == 20)
            assert sample("ecstatic_intake_syslog_connections") == 1  # only the busy one
            trickle.cancel()
            busy.close()

    asyncio.run(scenario())
    assert accept.ids() == [f"b{i}" for i in range(20)]
    assert _closed(sample, "idle_timeout") == 2
    # The slow-loris left half a frame behind: counted, not delivered.
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="truncated") == 1


def test_a_real_sender_gets_through_hundreds_of_idle_and_slow_connections(metrics, sample):
    accept = Collect()
    cap = 64

    async def scenario():
        async with serving(accept, metrics, max_connections=cap, idle_seconds=3600) as server:
            idle = [await _connect(server.port) for _ in range(300)]
            slow = [await _connect(server.port) for _ in range(100)]
            trickles = [asyncio.create_task(_trickle(w, HEADER * 5, 0.5)) for _, w in slow]
            await eventually(lambda: sample("ecstatic_intake_syslog_connections") == cap)
            # Every newcomer took the place of the longest-idle connection.
            assert _closed(sample, "evicted") == 400 - cap

            _, sender = await _connect(server.port)
            sender.write(line("first"))
            await sender.drain()
            await eventually(lambda: accept.ids() == ["first"], timeout=5)

            # More attackers arrive while the sender keeps sending: the sender is never
            # the longest-idle connection, so it is never the one evicted.
            more = []
            for i in range(1, 200):
                more.append(await _connect(server.port))
                sender.write(line(f"r{i}"))
                await sender.drain()
            await eventually(lambda: len(accept.bodies) == 200, timeout=10)
            assert sample("ecstatic_intake_syslog_connections") == cap
            for task in trickles:
                task.cancel()
            for _, writer in idle + slow + more:
                writer.close()
            sender.close()

    asyncio.run(scenario())
    assert accept.ids() == ["first"] + [f"r{i}" for i in range(1, 200)]
    assert sample("ecstatic_intake_syslog_connections_closed_total", reason="over_cap") == 0


def test_at_the_cap_busy_connections_are_not_evicted(metrics, sample):
    accept = Collect()
    accept.gate.clear()  # the next stage pushes back: both connections stay in accept

    async def scenario():
        async with serving(accept, metrics, max_connections=2) as server:
            writers = []
            for name in ("a", "b"):
                _, writer = await _connect(server.port)
                writer.write(line(name))
                await writer.drain()
                writers.append(writer)
            await eventually(lambda: sample("ecstatic_intake_syslog_connections") == 2)
            await asyncio.sleep(0.2)
            reader, _ = await _connect(server.port)
            assert await _ended(reader)  # refused: over the cap
            accept.gate.set()
            await eventually(lambda: len(accept.bodies) == 2)
            for writer in writers:
                writer.close()

    asyncio.run(scenario())
    assert sorted(accept.ids()) == ["a", "b"]
    assert _closed(sample, "over_cap") == 1
    assert _closed(sample, "evicted") == 0


def test_an_endless_line_costs_one_frame_not_the_connection(metrics, sample):
    accept = Collect()

    async def scenario():
        async with serving(accept, metrics, max_frame_bytes=4096) as server:
            _, writer = await _connect(server.port)
            for _ in range(200):  # 10 MB without an LF
                writer.write(b"x" * 50_000)
                await writer.drain()
            writer.write(b"\n" + line("after"))
            await writer.drain()
            await eventually(lambda: accept.bodies == [record("after")])
            writer.close()

    asyncio.run(scenario())
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="too_long") == 1
