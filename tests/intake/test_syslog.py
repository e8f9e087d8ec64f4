import asyncio
import ipaddress
import socket
import time

from services.intake.syslog import SyslogServer
from tests.intake.syslog_helpers import (
    HEADER,
    Collect,
    config,
    eventually,
    line,
    record,
    serving,
)

BOM = b"\xef\xbb\xbf"
BUNNY_SD = b'[exampleSDID@32473 iut="3" eventSource="BunnyCDN" eventID="1011"] '
PIPE = b"HIT|200|1507167062421|1|2|163.172.53.0|-|https://a.b/x|WA|Mozilla/5.0 (a|b)|r3|DE"
CADDY = b'{"level":"info","ts":1700000000.5,"request":{"host":"a.localhost"},"status":200}'


def test_both_framings_all_headers_and_bodies_arrive_in_order(metrics, sample):
    accept = Collect()
    octet_body = b"<165>1 2021-01-01T22:14:15.003Z h app - ID47 " + BUNNY_SD + BOM + PIPE
    multi = record("r2", UserAgent="ua with\nnewline")
    frames = [
        line("r1"),  # RFC 5424, LF
        str(len(octet_body)).encode() + b" " + octet_body,  # octet-counted, Bunny's SD
        b"<13>Jan  1 00:00:00 edge caddy: " + CADDY + b"\r\n",  # RFC 3164, CRLF
        str(len(HEADER + multi)).encode() + b" " + HEADER + multi,  # an LF inside MSG
        record("r4") + b"\n",  # bare JSON
    ]
    expected = [record("r1"), PIPE, CADDY, multi, record("r4")]

    async def scenario():
        async with serving(accept, metrics) as server:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"".join(frames))
            await writer.drain()
            await eventually(lambda: len(accept.bodies) == 5)
            writer.close()

    asyncio.run(scenario())
    assert accept.bodies == expected
    assert sample("ecstatic_intake_lines_received_total", source="bunny") == 5
    assert sample("ecstatic_intake_stage_seconds_total", stage="read") > 0


def test_byte_by_byte_delivery(metrics):
    accept = Collect()
    stream = line("a") + b"5 hello" + line("b") + b"<13>1 - h a - - - \xef\xbb\xbfc\r\n"

    async def scenario():
        async with serving(accept, metrics) as server:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.transport.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
            for i in range(len(stream)):
                writer.write(stream[i : i + 1])
                await writer.drain()
                if i % 7 == 0:
                    await asyncio.sleep(0)
            await eventually(lambda: len(accept.bodies) == 4)
            writer.close()

    asyncio.run(scenario())
    assert accept.bodies == [record("a"), b"hello", record("b"), b"c"]


LATER = 300_000


def test_one_accept_call_per_read_and_backpressure_stops_reading(metrics):
    accept = Collect()

    async def scenario():
        async with serving(accept, metrics) as server:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"".join(line(f"r{i}") for i in range(200)))
            await writer.drain()
            await eventually(lambda: len(accept.bodies) == 200)
            assert len(accept.calls) < 200  # many frames per call
            accept.gate.clear()  # the spool is full
            writer.write(line("blocked"))
            await writer.drain()
            await asyncio.sleep(0.2)
            later = b"".join(line(f"later{i}") for i in range(LATER))  # about 40 MB
            writer.write(later)
            await asyncio.sleep(1.0)
            assert len(accept.bodies) == 200  # nothing delivered while accept waits
            # The listener stopped reading: the kernel's buffers filled, the sender holds
            # the rest (without backpressure it would all be in the listener's memory).
            assert writer.transport.get_write_buffer_size() > len(later) // 2
            accept.gate.set()
            await writer.drain()
            await eventually(lambda: len(accept.bodies) == 201 + LATER, timeout=60)
            writer.close()

    asyncio.run(scenario())
    ids = accept.ids()
    assert ids == [f"r{i}" for i in range(200)] + ["blocked"] + [f"later{i}" for i in range(LATER)]


def test_bad_frames_are_counted_and_the_connection_lives_on(metrics, sample):
    accept = Collect()

    async def scenario():
        async with serving(accept, metrics, max_frame_bytes=2048) as server:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(line("r1"))
            writer.write(b"\x00\xffgarbage{{{\n")  # bare: the lead's body parser judges it
            writer.write(b"<165>1 broken header\n")
            writer.write(b'<13>1 - h a - - [a@1 v="\xff"] x\n')  # invalid UTF-8 in the header
            writer.write(HEADER + b"\n")  # empty MSG
            writer.write(b"x" * 5000 + b"\n")  # over the frame cap
            writer.write(b"9000 " + b"y" * 9000)  # counted, over the cap
            writer.write(line("r2"))
            await writer.drain()
            await eventually(lambda: len(accept.bodies) == 3)
            writer.close()

    asyncio.run(scenario())
    assert accept.bodies == [record("r1"), b"\x00\xffgarbage{{{", record("r2")]
    invalid = lambda reason: sample(  # noqa: E731
        "ecstatic_intake_lines_invalid_total", source="bunny", reason=reason
    )
    assert invalid("bad_syslog") == 1
    assert invalid("bad_encoding") == 1
    assert invalid("empty") == 1
    assert invalid("too_long") == 2
    assert sample("ecstatic_intake_lines_received_total", source="bunny") == 8


def test_a_failing_accept_ends_only_its_connection(metrics):
    seen = []

    async def accept(bodies):
        seen.extend(bodies)
        if b"boom" in bodies[0]:
            raise OSError("disk full")

    async def scenario():
        async with serving(accept, metrics) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(line("boom"))
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # that connection ended
            _, other = await asyncio.open_connection("127.0.0.1", server.port)
            other.write(line("fine"))
            await other.drain()
            await eventually(lambda: len(seen) == 2)
            other.close()

    asyncio.run(scenario())
    assert seen == [record("boom"), record("fine")]


def test_udp_one_datagram_one_frame(metrics, sample):
    accept = Collect()

    async def scenario():
        async with serving(accept, metrics, max_frame_bytes=1024) as server:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            target = ("127.0.0.1", server.port)
            sock.sendto(HEADER + record("u1"), target)
            sock.sendto(HEADER + record("u2", UserAgent="two\nlines") + b"\n", target)
            sock.sendto(b"<165>1 nonsense", target)
            sock.sendto(b"z" * 2000, target)  # over the cap
            sock.sendto(b"5 hello", target)  # no octet counting over UDP
            await eventually(lambda: len(accept.bodies) == 3)
            sock.close()

    asyncio.run(scenario())
    assert accept.bodies == [record("u1"), record("u2", UserAgent="two\nlines"), b"5 hello"]
    assert sample("ecstatic_intake_lines_received_total", source="bunny") == 5
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="too_long") == 1
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="bad_syslog") == 1


def test_allow_list_closes_other_peers(metrics, sample):
    accept = Collect()
    elsewhere = (ipaddress.ip_network("192.0.2.0/24"),)
    local = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.0/8"))

    async def scenario():
        async with serving(accept, metrics, allow_cidrs=elsewhere) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(line("no"))
            assert await asyncio.wait_for(reader.read(), 5) == b""
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.sendto(HEADER + record("no-udp"), ("127.0.0.1", server.port))
            await eventually(
                lambda: (
                    sample(
                        "ecstatic_intake_lines_invalid_total", source="bunny", reason="not_allowed"
                    )
                    == 1
                )
            )
            sock.close()
        async with serving(accept, metrics, allow_cidrs=local) as server:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(line("yes"))
            await writer.drain()
            await eventually(lambda: accept.bodies == [record("yes")])
            writer.close()

    asyncio.run(scenario())
    assert sample("ecstatic_intake_syslog_connections_closed_total", reason="not_allowed") == 1


def test_tcp_and_udp_share_the_port_and_the_gauge_counts_open_connections(metrics, sample):
    async def scenario():
        server = SyslogServer(Collect(), metrics, config())
        await server.start()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", server.port))
            raise AssertionError("the UDP port should be taken")
        except OSError:
            pass
        finally:
            udp.close()
        conns = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        await eventually(lambda: sample("ecstatic_intake_syslog_connections") == 3)
        conns[0][1].close()
        await eventually(lambda: sample("ecstatic_intake_syslog_connections") == 2)
        await server.stop(time.monotonic() + 0.5)
        assert sample("ecstatic_intake_syslog_connections") == 0
        for _, writer in conns[1:]:
            writer.close()

    asyncio.run(scenario())
