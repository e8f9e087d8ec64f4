"""A rolling restart: the new listener shares the port, the old one hands its senders over."""

import asyncio
import socket
import time

from services.intake.syslog import SyslogServer
from tests.intake.syslog_helpers import Collect, config, eventually, line


class Sender:
    """Sends numbered frames; on EOF from the listener it reconnects and goes on."""

    def __init__(self, port: int, total: int):
        self.port, self.total = port, total
        self.sent = 0
        self.connections = 0

    async def run(self) -> None:
        while self.sent < self.total:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.connections += 1
            eof = asyncio.create_task(reader.read())  # the listener sends nothing but FIN
            while self.sent < self.total and not eof.done():
                batch = range(self.sent, min(self.sent + 50, self.total))
                writer.write(b"".join(line(f"n{i}") for i in batch))
                self.sent = batch.stop
                await writer.drain()
                await asyncio.sleep(0.001)
            eof.cancel()
            writer.close()  # our FIN, after the data: the listener delivers the rest
            await writer.wait_closed()


def test_rolling_restart_loses_and_duplicates_nothing(metrics, sample, registry):
    old_accept, new_accept = Collect(), Collect()
    total = 20_000

    async def scenario():
        old = SyslogServer(old_accept, metrics, config())
        await old.start()
        sender = Sender(old.port, total)
        sending = asyncio.create_task(sender.run())
        await eventually(lambda: len(old_accept.bodies) > 2_000)
        new = SyslogServer(new_accept, metrics, config(), port=old.port)
        await new.start()  # both bound to one port now (SO_REUSEPORT)
        await old.stop(time.monotonic() + 10)
        await asyncio.wait_for(sending, 60)
        await eventually(lambda: len(old_accept.bodies) + len(new_accept.bodies) == total)
        await new.stop(time.monotonic() + 5)
        assert sender.connections >= 2

    asyncio.run(scenario())
    delivered = old_accept.ids() + new_accept.ids()
    assert delivered == [f"n{i}" for i in range(total)]  # each once, in order
    assert old_accept.bodies and new_accept.bodies
    assert sample("ecstatic_intake_syslog_connections_closed_total", reason="stopping") == 0


def test_a_peer_that_ignores_fin_is_cut_at_the_deadline(metrics, sample):
    accept = Collect()

    async def scenario():
        server = SyslogServer(accept, metrics, config())
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(line("before"))
        await writer.drain()
        await eventually(lambda: len(accept.bodies) == 1)
        stopping = asyncio.create_task(server.stop(time.monotonic() + 0.5))
        assert await asyncio.wait_for(reader.read(), 2) == b""  # FIN arrived
        writer.write(line("after-fin"))  # still read: in flight when the FIN came
        writer.write(b"<165>1 - h a - - - half a fra")
        await writer.drain()
        await eventually(lambda: len(accept.bodies) == 2)
        started = time.monotonic()
        await asyncio.wait_for(stopping, 5)
        assert time.monotonic() - started < 1.5
        writer.close()

    asyncio.run(scenario())
    assert accept.ids() == ["before", "after-fin"]
    assert sample("ecstatic_intake_syslog_connections_closed_total", reason="stopping") == 1
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="truncated") == 1


def test_at_the_deadline_a_connection_stuck_in_accept_is_counted(metrics, sample):
    accept = Collect()
    accept.gate.clear()  # the spool never frees up

    async def scenario():
        server = SyslogServer(accept, metrics, config())
        await server.start()
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"".join(line(f"s{i}") for i in range(10)))
        await writer.drain()
        await asyncio.sleep(0.2)
        await asyncio.wait_for(server.stop(time.monotonic() + 0.3), 5)
        writer.close()

    asyncio.run(scenario())
    assert accept.bodies == []
    assert sample("ecstatic_intake_lines_received_total", source="bunny") == 10
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="stopping") == 10
    assert sample("ecstatic_intake_syslog_connections_closed_total", reason="stopping") == 1


def test_stop_reads_the_datagrams_the_kernel_already_holds(metrics):
    accept = Collect()

    async def scenario():
        server = SyslogServer(accept, metrics, config())
        await server.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(100):  # the loop does not run in between: all wait in the kernel
            sock.sendto(line(f"d{i}"), ("127.0.0.1", server.port))
        sock.close()
        await server.stop(time.monotonic() + 5)

    asyncio.run(scenario())
    assert accept.ids() == [f"d{i}" for i in range(100)]


def test_stop_takes_in_the_connections_the_kernel_already_accepted(metrics):
    accept = Collect()

    async def scenario():
        server = SyslogServer(accept, metrics, config())
        await server.start()
        senders = []
        for i in range(20):  # the loop does not run: these wait in the accept queue
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(line(f"c{i}"))
            sock.shutdown(socket.SHUT_WR)
            senders.append(sock)
        await server.stop(time.monotonic() + 5)
        for sock in senders:
            sock.close()

    asyncio.run(scenario())
    assert sorted(accept.ids(), key=lambda i: int(i[1:])) == [f"c{i}" for i in range(20)]
