import asyncio
import json

from services.intake.syslog import RecentIds, SyslogServer

RECORD = {
    "Host": "site.b-cdn.net",
    "PathAndQuery": "/p",
    "Status": 200,
    "Timestamp": 1507167062421,
    "RemoteIp": "163.172.53.0",
    "UserAgent": "curl/8.0",
}


def record(request_id: str, **extra) -> bytes:
    return json.dumps({**RECORD, "RequestId": request_id, **extra}).encode()


class FakeAccept:
    def __init__(self):
        self.lines = []

    def __call__(self, lines):
        self.lines.extend(lines)


async def eventually(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_garbage_between_good_frames_keeps_connection(metrics, sample):
    accept = FakeAccept()

    async def scenario():
        server = SyslogServer(accept, metrics, "127.0.0.1", 0)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        syslog = b'<165>1 2021-01-01T22:14:15.003Z h app - ID47 [x@1 a="b ] c"] \xef\xbb\xbf'
        writer.write(record("r1") + b"\n")
        writer.write(b"\x00\xffgarbage{{{\n")
        writer.write(b"<165>1 broken header\n")
        body = syslog + record("r2", UserAgent="ua with\nnewline")
        writer.write(str(len(body)).encode() + b" " + body)
        writer.write(b"x" * 70_000 + b"\n")  # over the frame cap
        writer.write(record("r1") + b"\n")  # duplicate request id
        pipe = b"HIT|200|1507167062421|1|2|163.172.53.0|-|https://a.b/x|WA|Mozilla/5.0 (a|b)|r3|DE"
        writer.write(syslog + pipe + b"\r\n")
        await writer.drain()
        await eventually(lambda: len(accept.lines) == 3)
        assert await asyncio.wait_for(_still_open(writer, accept), 5)
        assert sample("ecstatic_intake_syslog_connections") == 1
        await server.stop()
        assert await reader.read() == b""  # stop closed the connection
        assert sample("ecstatic_intake_syslog_connections") == 0

    asyncio.run(scenario())
    assert [line.request_id for line in accept.lines] == ["r1", "r2", "r3", "r4"]
    assert accept.lines[1].user_agent == "ua with\nnewline"
    assert accept.lines[2].user_agent == "Mozilla/5.0 (a|b)"
    assert sample("ecstatic_intake_lines_received_total", source="bunny") == 9
    assert (
        sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="missing_field") == 1
    )
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="bad_encoding") == 1
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="bad_syslog") == 1
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="too_long") == 1
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="duplicate") == 1


async def _still_open(writer, accept):
    writer.write(b"17 " + b"not a record ok!!")
    writer.write(record("r4") + b"\n")
    await writer.drain()
    await eventually(lambda: len(accept.lines) == 4)
    return True


def test_many_connections_and_a_crashing_accept_does_not_kill_server(metrics, sample):
    calls = []

    def accept(lines):
        calls.extend(lines)
        if lines[0].request_id == "boom":
            raise OSError("disk full")

    async def scenario():
        server = SyslogServer(accept, metrics, "127.0.0.1", 0, max_connections=2)
        await server.start()
        first = await asyncio.open_connection("127.0.0.1", server.port)
        first[1].write(record("boom") + b"\n")
        await first[1].drain()
        assert await asyncio.wait_for(first[0].read(), 5) == b""  # that connection ended
        a = await asyncio.open_connection("127.0.0.1", server.port)
        b = await asyncio.open_connection("127.0.0.1", server.port)
        await eventually(lambda: sample("ecstatic_intake_syslog_connections") == 2)
        c = await asyncio.open_connection("127.0.0.1", server.port)
        assert await asyncio.wait_for(c[0].read(), 5) == b""  # over the cap: refused
        b[1].write(record("fine") + b"\n")
        await b[1].drain()
        await eventually(lambda: len(calls) == 2)
        await server.stop()
        for _, writer in (a, b):
            writer.close()

    asyncio.run(scenario())
    assert [line.request_id for line in calls] == ["boom", "fine"]


def test_recent_ids_is_bounded():
    recent = RecentIds(capacity=2)
    assert not recent.seen("a") and not recent.seen("b")
    assert recent.seen("a")
    assert not recent.seen("c")  # evicts b, the least recently seen
    assert not recent.seen("b")
    assert recent.seen("c")


def test_a_frame_that_breaks_the_parser_costs_only_that_frame(metrics, sample, monkeypatch):
    from services.intake import syslog as syslog_module

    real = syslog_module.parse_bunny

    def flaky(frame):
        if b"boom" in frame:
            raise ValueError("a parser bug")
        return real(frame)

    monkeypatch.setattr(syslog_module, "parse_bunny", flaky)
    accept = FakeAccept()

    async def scenario():
        server = SyslogServer(accept, metrics, "127.0.0.1", 0)
        await server.start()
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(record("r1") + b"\n" + record("boom") + b"\n" + record("r2") + b"\n")
        await writer.drain()
        await eventually(lambda: len(accept.lines) == 2)
        writer.write(record("r3") + b"\n")
        await writer.drain()
        await eventually(lambda: len(accept.lines) == 3)  # the connection is still open
        await server.stop()

    asyncio.run(scenario())
    assert [line.request_id for line in accept.lines] == ["r1", "r2", "r3"]
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="parse_error") == 1
