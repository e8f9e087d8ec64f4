import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.intake.frames import FrameDecoder
from services.intake.model import InvalidLine


def decode(chunks, max_frame=100):
    decoder = FrameDecoder(max_frame=max_frame)
    out = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return [
        f"!{item.reason}" if isinstance(item, InvalidLine) else item.decode() for item in out
    ], decoder


CASES = [
    ([b"a\nb\r\n\n  \nc"], ["a", "b"]),
    ([b"5 hello3 abc"], ["hello", "abc"]),
    ([b"12 with\nnewline\n"], ["with\nnewline"]),
    ([b"{x}\n", b"3 abc", b"<1>1 - - - - - - m\n"], ["{x}", "abc", "<1>1 - - - - - - m"]),
    ([b"1", b"2", b" 0123456789a", b"b"], ["0123456789ab"]),
    ([b"12345678901 not a count\n"], ["12345678901 not a count"]),
    ([b"x" * 150 + b"\nok\n"], ["!too_long", "ok"]),
    ([b"x" * 150, b"y" * 150, b"\nok\n"], ["!too_long", "ok"]),
    ([b"150 " + b"z" * 60, b"z" * 90 + b"7 ok-afte\n"], ["!too_long", "ok-afte"]),
    ([b"0 x\n"], ["0 x"]),
]


@pytest.mark.parametrize("chunks, expected", CASES)
def test_frames(chunks, expected):
    assert decode(chunks)[0] == expected


def test_buffer_stays_bounded_on_endless_line():
    decoder = FrameDecoder(max_frame=100)
    for _ in range(1000):
        decoder.feed(b"x" * 64)
        assert decoder.buffered <= 100 + 64


@given(
    st.lists(st.binary(min_size=1, max_size=50).filter(lambda b: b.strip()), max_size=20),
    st.integers(1, 17),
    st.lists(st.booleans(), min_size=20, max_size=20),
)
def test_any_mix_of_framings_any_chunking(messages, step, octet):
    stream = b""
    for message, counted in zip(messages, octet, strict=False):
        if counted or b"\n" in message or message[:1].isdigit():
            stream += str(len(message)).encode() + b" " + message
        else:
            stream += message + b"\n"
    chunks = [stream[i : i + step] for i in range(0, len(stream), step)]
    decoder = FrameDecoder(max_frame=100)
    out = [frame for chunk in chunks for frame in decoder.feed(chunk)]
    expected = []
    for message, counted in zip(messages, octet, strict=False):
        expected.append(
            message
            if (counted or b"\n" in message or message[:1].isdigit())
            else message.rstrip(b"\r")
        )
    assert out == expected
