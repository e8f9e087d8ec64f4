import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.frames import FrameDecoder

HEADER = b"<165>1 2021-01-01T22:14:15.003Z h app - ID47 - "


def decode(chunks, max_frame=100, method="feed"):
    decoder = FrameDecoder(max_frame=max_frame)
    out = []
    for chunk in chunks:
        out += getattr(decoder, method)(chunk)
    return [frame.decode() for frame in out], decoder


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


CASES = [
    ([b"a\nb\r\n\n\r\nc"], ["a", "b"]),  # empty lines are no frames; c is incomplete
    ([b"5 hello3 abc"], ["hello", "abc"]),
    ([b"12 with\nnewline\n"], ["with\nnewline"]),
    ([b"{x}\n", b"3 abc", b"<1>1 - - - - - - m\n"], ["{x}", "abc", "<1>1 - - - - - - m"]),
    ([b"1", b"2", b" 0123456789a", b"b"], ["0123456789ab"]),
    ([b"12345678901 not a count\n"], ["12345678901 not a count"]),
    ([b"x" * 150 + b"\nok\n"], ["ok"]),
    ([b"x" * 150, b"y" * 150, b"\nok\n"], ["ok"]),
    ([b"150 " + b"z" * 60, b"z" * 90 + b"7 ok-afte\n"], ["ok-afte"]),
    ([b"0 x\n"], ["0 x"]),
    ([b"a\n12"], ["a"]),  # a count at the end of a chunk waits for its frame
    ([b"a\n12", b" abcdefghijkl5 hello"], ["a", "abcdefghijkl", "hello"]),
    ([b"a\r", b"\nb\n"], ["a", "b"]),  # CR LF split across reads
    ([b"3 a\r\n"], ["a\r\n"]),  # octet-counted: the frame keeps its bytes
]


@pytest.mark.parametrize("chunks, expected", CASES)
def test_frames(chunks, expected):
    assert decode(chunks)[0] == expected
    assert decode(bytewise(b"".join(chunks)))[0] == expected


def test_oversized_frames_are_counted_once_each():
    frames, decoder = decode([b"x" * 150 + b"\n", b"150 " + b"z" * 150, b"y" * 101, b"\nok\n"])
    assert frames == ["ok"]
    assert decoder.rejected == {"too_long": 3}


def test_a_frame_of_exactly_the_cap_passes():
    frames, decoder = decode([b"x" * 100 + b"\r\n", b"100 " + b"y" * 100])
    assert frames == ["x" * 100, "y" * 100]
    assert not decoder.rejected


def test_buffer_stays_bounded_on_endless_line():
    decoder = FrameDecoder(max_frame=100)
    for _ in range(1000):
        decoder.feed(b"x" * 7)
        assert decoder.buffered <= 101
    assert decoder.rejected == {"too_long": 1}


def test_buffer_stays_bounded_byte_by_byte_on_a_counted_frame():
    decoder = FrameDecoder(max_frame=100)
    for byte in bytewise(b"100 " + b"y" * 99):
        assert decoder.feed(byte) == []
        assert decoder.buffered <= 100 + len("100 ")
    assert decoder.feed(b"y") == [b"y" * 100]
    assert decoder.buffered == 0


def test_many_frames_per_read_take_the_fast_path_and_keep_the_tail():
    lines = [HEADER + b'{"n": %d}' % i for i in range(500)]
    stream = b"\n".join(lines) + b"\n"
    decoder = FrameDecoder(max_frame=64 * 1024)
    cut = len(stream) // 2 + 7
    bodies = decoder.feed_messages(stream[:cut]) + decoder.feed_messages(stream[cut:])
    assert bodies == [b'{"n": %d}' % i for i in range(500)]
    assert decoder.buffered == 0 and not decoder.rejected


def test_feed_messages_counts_what_has_no_message():
    stream = HEADER + b"ok\n" + b"<165>1 bad\n" + HEADER + b"\n" + b"5 12345" + b"3 \xef\xbb\xbf"
    bodies, decoder = decode([stream], method="feed_messages")
    assert bodies == ["ok", "12345"]
    assert decoder.rejected == {"bad_syslog": 1, "empty": 2}


def _stream(messages, octet):
    stream = b""
    for message, counted in zip(messages, octet, strict=False):
        if counted or b"\n" in message or message[:1].isdigit() or message.endswith(b"\r"):
            stream += str(len(message)).encode() + b" " + message
        else:
            stream += message + b"\n"
    return stream


@settings(max_examples=300)
@given(
    st.lists(st.binary(min_size=1, max_size=50), max_size=20),
    st.integers(1, 17),
    st.lists(st.booleans(), min_size=20, max_size=20),
)
def test_any_mix_of_framings_any_chunking(messages, step, octet):
    stream = _stream(messages, octet)
    chunks = [stream[i : i + step] for i in range(0, len(stream), step)]
    decoder = FrameDecoder(max_frame=100)
    out = [frame for chunk in chunks for frame in decoder.feed(chunk)]
    assert out == messages
    assert decoder.buffered == 0 and not decoder.rejected


@settings(max_examples=300)
@given(st.binary(max_size=400), st.lists(st.integers(1, 64), max_size=30))
def test_arbitrary_bytes_never_raise_and_stay_bounded(data, cuts):
    decoder = FrameDecoder(max_frame=50)
    pos = 0
    for size in [*cuts, len(data)]:
        decoder.feed_messages(data[pos : pos + size])
        pos += size
        assert decoder.buffered <= 50 + len("999999999 ")
