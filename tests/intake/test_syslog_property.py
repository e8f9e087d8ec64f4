"""Arbitrary bytes between valid frames, against a live listener.

What "a valid frame the framing still delimits" means here: the stream is a sequence of
items, each a valid frame (an RFC 5424 header and a JSON body with a unique id, framed
by LF or by an octet count) or junk (arbitrary bytes). A valid frame is *still
delimited* when the bytes before it are a whole number of frames under RFC 6587 as the
intake reads it (an octet count ``[1-9][0-9]{0,8} SP`` runs that many bytes, anything
else runs to its LF, an oversized frame is skipped whole): then no junk left a frame
open that would swallow the valid frame's first byte, and its own bytes delimit it. That
is checked by reading the prefix with a fresh ``FrameDecoder`` and asking whether it
ends ``at_boundary``; the frame itself is complete, so it decodes to itself.

Junk may also swallow a valid frame (an octet count in the junk that runs over it, or
junk without an LF that joins it) or be merged into it: such a frame may be lost, or
arrive with junk in front, but never twice. The listener must stay up throughout.
"""

import asyncio
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from services.core.metrics import IntakeMetrics
from services.intake.frames import FrameDecoder
from services.intake.syslog import SyslogServer
from tests.intake.syslog_helpers import HEADER, Collect, config, eventually, line, record

MAX_FRAME = 2048


def _valid(index: int, octet: bool) -> tuple[bytes, bytes]:
    """A valid frame as sent, and the body it must arrive as."""
    body = record(f"v{index}")
    frame = HEADER + body
    if octet:
        return str(len(frame)).encode() + b" " + frame, body
    return frame + b"\n", body


_junk = st.one_of(
    st.binary(max_size=80),
    st.binary(max_size=80).map(lambda b: b + b"\n"),
    st.sampled_from(
        [
            b"<165>1 broken\n",
            b"\xff\xfe\xfd\n",
            b"99999 ",
            b"3 ",
            b"x" * (MAX_FRAME + 10) + b"\n",
            b"4000 " + b"y" * 4000,
            HEADER + b"\n",
            b"\r\n\n",
            b'<13>1 - h a - - [a@1 v="\xff"] x\n',
        ]
    ),
)
_items = st.lists(st.one_of(st.tuples(st.just("valid"), st.booleans()), _junk), max_size=25)


def _stream(items) -> tuple[bytes, list[str], list[bytes]]:
    """The bytes, every valid id, and the bodies of the frames still delimited."""
    stream, ids, delimited = b"", [], []
    for item in items:
        if isinstance(item, tuple):
            frame, body = _valid(len(ids), item[1])
            ids.append(f"v{len(ids)}")
            prefix = FrameDecoder(MAX_FRAME)
            prefix.feed(stream)
            if prefix.at_boundary:
                delimited.append(body)
            stream += frame
        else:
            stream += item
    return stream, ids, delimited


async def _send(port: int, stream: bytes, cuts: list[int]) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    pos = 0
    for size in [*cuts, len(stream)]:
        writer.write(stream[pos : pos + size])
        await writer.drain()
        await asyncio.sleep(0)
        pos += size
    writer.close()
    await writer.wait_closed()


def _value(registry, name, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_items, st.lists(st.integers(1, 200), max_size=40))
def test_valid_frames_survive_any_junk_exactly_once(items, cuts):
    stream, ids, delimited = _stream(items)
    registry = CollectorRegistry()
    accept = Collect()

    async def scenario():
        metrics = IntakeMetrics(registry)
        server = SyslogServer(accept, metrics, config(max_frame_bytes=MAX_FRAME))
        await server.start()
        try:
            await _send(server.port, stream, cuts)
            gauge = "ecstatic_intake_syslog_connections"
            await eventually(lambda: _value(registry, gauge) == 0)
            before = len(accept.bodies)
            await _send(server.port, line("probe"), [])  # still up: a new sender is served
            await eventually(lambda: len(accept.bodies) == before + 1)
        finally:
            await server.stop(time.monotonic() + 1)

    asyncio.run(scenario())
    bodies = accept.bodies
    assert bodies[-1] == record("probe")
    for body in delimited:
        assert bodies.count(body) == 1, body
    for request_id in ids:  # swallowed or merged frames: lost at worst, never doubled
        needle = b'"RequestId": "%s"' % request_id.encode()
        assert sum(body.count(needle) for body in bodies) <= 1, request_id
    invalid = sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "ecstatic_intake_lines_invalid"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    received = _value(registry, "ecstatic_intake_lines_received_total", source="bunny")
    assert received == len(bodies) + invalid
