from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.model import InvalidLine
from services.intake.syslog_header import lf_messages, message, messages, strip_header

BOM = b"\xef\xbb\xbf"
PIPE = (
    b"HIT|200|1507167062421|412|390|163.172.53.229|-|https://bunnycdn.b-cdn.net/assets/x.m4v"
    b"|WA|Mozilla/5.0 (Windows NT 10.0)|322b688bd63fb63f2babe9de30a5d262|DE"
)
JSON = b'{"Host":"site.b-cdn.net","Status":200,"UserAgent":"curl/8.0"}'
# Bunny's published example (bunny.md section 3): RFC 5424's example 3 with a Bunny line.
BUNNY_EXAMPLE = (
    b"<165>1 2021-01-01T22:14:15.003Z mymachine.example.com evntslog - ID47 "
    b'[exampleSDID@32473 iut="3" eventSource="BunnyCDN" eventID="1011"] ' + BOM + PIPE
)

GOOD = [
    (BUNNY_EXAMPLE, PIPE),
    (b"<165>1 2021-01-01T22:14:15.003Z host app - ID47 - " + JSON, JSON),
    (b"<0>1 - - - - - - " + JSON, JSON),
    (b"<191>12 2021 h a p m - x", b"x"),
    (b'<13>1 - h a - - [a@1 v="x \\] \\" \\\\ y"][b@2] ' + JSON, JSON),
    (b'<13>1 - h a - - [a@1 v="\xc3\xa9t\xc3\xa9"] ' + JSON, JSON),  # UTF-8 in an SD value
    (b"<13>1 - h a - - -", b""),  # no MSG at all
    (b"<13>1 - h a - - - ", b""),
    (b"<13>1 - h a - - - " + BOM, b""),
    (b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed", b"'su root' failed"),
    (b"<13>Jan  1 00:00:00 host sshd[12]: " + JSON, JSON),
    (b"<13>Jan 12 00:00:00 sshd: " + JSON, JSON),  # no HOSTNAME
    (b"<13>Jan 12 00:00:00 host " + JSON, JSON),  # no TAG
    (b"<13>Feb  3 2024 10:00:00.123 host app: x", b"x"),
    (b"<13>2021-01-01T00:00:00.5+01:00 host tag: " + PIPE, PIPE),
    (b"<13>2021-01-01T00:00:00Z caddy " + JSON, JSON),
    (JSON, JSON),  # bare messages
    (BOM + JSON, JSON),
    (PIPE, PIPE),
]

BAD = [
    (b'<165>1 2021-01-01T22:14:15.003Z host app - ID47 [unterminated x="1" ' + JSON, "bad_syslog"),
    (b"<165>1 2021 host app - ID47 nosd " + JSON, "bad_syslog"),
    (b"<999>1 2021 host app - ID47 - " + JSON, "bad_syslog"),
    (b"<192>1 2021 host app - ID47 - " + JSON, "bad_syslog"),
    (b"<01>1 2021 host app - ID47 - " + JSON, "bad_syslog"),
    (b"<165>0 2021 host app - ID47 - " + JSON, "bad_syslog"),
    (b"<165>1 2021 host app - ID47 -x", "bad_syslog"),
    (b"<165>1 2021 h\xc3\xa9 app - ID47 - " + JSON, "bad_syslog"),  # fields are ASCII
    (b"<165>2021-01-01 host: " + JSON, "bad_syslog"),
    (b"<165>broken", "bad_syslog"),
    (b"<165", "bad_syslog"),
    (b'<13>1 - h a - - [a@1 v="\xff\xfe"] ' + JSON, "bad_encoding"),
    (b"<13>Jan  1 00:00:00 h\xff host: x", "bad_encoding"),
]


@pytest.mark.parametrize("frame, body", GOOD)
def test_message(frame, body):
    assert message(frame) == body
    assert strip_header(frame.decode()) == body.decode()


@pytest.mark.parametrize("frame, reason", BAD)
def test_bad_headers(frame, reason):
    with pytest.raises(InvalidLine) as caught:
        message(frame)
    assert caught.value.reason == reason


def test_messages_keeps_order_and_counts_reasons():
    frames = [b"<13>1 - h a - - - one", b"<13>1 bad", b"<13>1 - h a - - -  ", PIPE, b" \t"]
    rejected = Counter()
    assert messages(frames, rejected) == [b"one", PIPE]
    assert rejected == {"bad_syslog": 1, "empty": 2}


def test_lf_messages_takes_only_plain_runs():
    run = b"<13>1 - h a - - - one\n" + BUNNY_EXAMPLE + b"\n<13>1 - h a - - - " + BOM + b"two\n"
    assert lf_messages(run + b"<13>1 - h a", len(run)) == [b"one", PIPE, b"two"]
    for odd in (b"\n", PIPE + b"\n", b"<13>1 bad\n", b"5 <13>\n", b"<13>1 - h a - - - \n"):
        assert lf_messages(run + odd, len(run) + len(odd)) is None


def test_lf_messages_never_joins_lines():
    # A header field may not run over an LF into the next line.
    run = b"<13>1 - h\na - - - x\n"
    assert lf_messages(run, len(run)) is None


_token = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8)
_value = st.text(max_size=10).map(
    lambda s: s.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
)
_element = st.builds(
    lambda name, params: "[" + name + "".join(f' {k}="{v}"' for k, v in params) + "]",
    _token.filter(lambda t: not set(t) & set('="]')),
    st.lists(st.tuples(_token.filter(lambda t: not set(t) & set('="]')), _value), max_size=3),
)


@settings(max_examples=300)
@given(
    st.integers(0, 191),
    st.lists(_token, min_size=5, max_size=5),
    st.one_of(st.just("-"), st.lists(_element, min_size=1, max_size=3).map("".join)),
    st.booleans(),
    st.binary(min_size=1, max_size=40).filter(lambda b: not b[:1].isspace() and b[:3] != BOM),
)
def test_any_rfc5424_header_comes_off(pri, fields, sd, bom, body):
    frame = f"<{pri}>1 {' '.join(fields)} {sd} ".encode() + (BOM if bom else b"") + body
    assert message(frame) == body
    assert messages([frame], Counter()) == [body]


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=120).map(lambda b: b"<" + b if b[:1] == b"1" else b)))
def test_arbitrary_frames_are_a_body_or_a_counted_reason(frames):
    rejected = Counter()
    bodies = messages(frames, rejected)
    assert len(bodies) + sum(rejected.values()) == len(frames)
    assert set(rejected) <= {"bad_syslog", "bad_encoding", "empty"}
