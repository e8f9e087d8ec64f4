"""Syslog headers: where a frame's MSG starts (RFC 5424, RFC 3164, or no header).

RFC 5424: ``<PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD
[SP MSG]``. STRUCTURED-DATA is ``-`` or bracketed elements whose quoted values may hold
spaces and escaped ``"``, ``\\`` and ``]``. Header fields must be PRINTUSASCII tokens
(the timestamp's shape is the body's business); SD values must be valid UTF-8.

RFC 3164 and its common variants: ``<PRI>Mmm dd [yyyy] hh:mm:ss[.frac]`` or an RFC 3339
timestamp, then ``HOST TAG: MSG``, ``TAG: MSG`` (no host) or ``HOST MSG``; TAG may carry
``[pid]``. A frame that does not open with ``<`` is a bare MSG. An optional UTF-8 BOM
before MSG is dropped. Anything else that opens with ``<`` is ``bad_syslog``.

Hot paths: ``lf_messages`` strips a whole run of LF-framed RFC 5424 lines in one
``findall``; ``messages`` takes one compiled regex per frame, and the general per-frame
code runs only for chunks where that did not fit every frame.
"""

from __future__ import annotations

import re
from collections import Counter

from .model import InvalidLine

__all__ = ["BOM", "lf_messages", "message", "messages", "strip_header"]

BOM = b"\xef\xbb\xbf"

_PRI = rb"<(?:1[0-8][0-9]|19[01]|[1-9]?[0-9])>"  # 0..191, no leading zeros
_TOKEN = rb"[!-~]++"  # PRINTUSASCII, as RFC 5424 wants every header field
_SD_NAME = rb"[!#-<>-\\^-~]{1,32}"  # PRINTUSASCII but = SP ] "


def _rfc5424(value: bytes, escaped: bytes) -> bytes:
    """The header up to and including STRUCTURED-DATA, SD values made of these bytes."""
    quoted = rb'"' + value + rb"*+(?:\\" + escaped + value + rb'*+)*+"'  # unrolled loop
    element = rb"\[" + _SD_NAME + rb"(?: " + _SD_NAME + rb"=" + quoted + rb")*+\]"
    fields = rb" ".join([_TOKEN] * 5)
    return _PRI + rb"[1-9][0-9]? " + fields + rb" (?:-|(?:" + element + rb")++)"


_5424 = _rfc5424(rb'[^"\\]', rb".")
# The hot paths take SD values in ASCII only, so a match needs no UTF-8 check: a whole
# header, its SP and an optional BOM, then MSG that starts non-blank.
_FAST = re.compile(
    _rfc5424(rb'[^"\\\x80-\xff]', rb"[\x00-\x7f]") + rb" (?:\xef\xbb\xbf)?+(?=\S)", re.S
)
# The same over a run of LF-terminated lines: a line that is not such a frame yields b"".
_LINES = re.compile(
    rb"^(?:"
    + _rfc5424(rb'[^"\\\n\x80-\xff]', rb"[^\n\x80-\xff]")
    + rb" (?:\xef\xbb\xbf)?+(\S[^\n]*+)|[^\n]*+)\n",
    re.M,
)
_HEADER_5424 = re.compile(_5424 + rb"(?: |\Z)", re.S)
_LOOKS_5424 = re.compile(rb"<[0-9]{1,3}>[0-9]{1,2} ")

_MONTH = rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_CLOCK = rb"[0-2][0-9]:[0-5][0-9]:[0-6][0-9](?:\.[0-9]{1,9})?"
_TS_3164 = _MONTH + rb" [ 0-3]?[0-9](?: [0-9]{4})? " + _CLOCK
_TS_3339 = rb"[0-9]{4}-[01][0-9]-[0-3][0-9]T" + _CLOCK + rb"(?:Z|[+-][0-2][0-9]:?[0-5][0-9])?"
_TAG = rb"[\w./@-]{1,48}(?:\[[^\] ]{0,32}\])?:(?: |\Z)"
_END = rb"(?: |\Z)"
_HEADER_3164 = re.compile(
    _PRI + rb"(?:" + _TS_3164 + rb"|" + _TS_3339 + rb") "
    rb"(?:" + _TAG + rb"|[^ ]++" + _END + rb"(?:" + _TAG + rb")?)",
    re.S,
)


def _bad(reason: str = "bad_syslog") -> InvalidLine:
    return InvalidLine(reason)


def message(frame: bytes) -> bytes:
    """The MSG part of one syslog frame, BOM dropped; empty when there is none.

    Raises:
        InvalidLine: ``bad_syslog`` for a malformed header, ``bad_encoding`` when the
            header is not valid UTF-8.
    """
    if not frame.startswith(b"<"):
        return frame[3:] if frame.startswith(BOM) else frame
    match = _HEADER_5424.match(frame)
    if match is None:
        if _LOOKS_5424.match(frame):
            raise _bad()
        match = _HEADER_3164.match(frame)
        if match is None:
            raise _bad()
    end = match.end()
    header = frame[:end]
    if not header.isascii():
        try:
            header.decode()
        except UnicodeDecodeError:
            raise _bad("bad_encoding") from None
    return frame[end + 3 :] if frame.startswith(BOM, end) else frame[end:]


def messages(frames: list[bytes], rejected: Counter) -> list[bytes]:
    """The MSG of each frame, in order; the unusable ones are counted in ``rejected``.

    A frame whose MSG is empty or only whitespace counts as ``empty``.
    """
    match = _FAST.match
    bodies = [frame[m.end() :] for frame in frames if (m := match(frame)) is not None]
    if len(bodies) == len(frames):
        return bodies
    bodies = []
    for frame in frames:
        try:
            body = message(frame)
        except InvalidLine as exc:
            rejected[exc.reason] += 1
            continue
        if not body or body.isspace():
            rejected["empty"] += 1
            continue
        bodies.append(body)
    return bodies


def lf_messages(data: bytes, end: int) -> list[bytes] | None:
    """The MSG parts of the LF-terminated lines in ``data[:end]``, if each one is a plain frame.

    Plain: an RFC 5424 header (SD values without LF), MSG starting non-blank, no CR.
    The caller checks that ``data`` has no CR; None means "do it frame by frame", for a
    run holding anything else (an empty line, a bare or RFC 3164 message, an octet
    count, a bad header, SD values beyond ASCII).
    """
    bodies = _LINES.findall(data, 0, end)
    return None if b"" in bodies else bodies


def strip_header(text: str) -> str:
    """The MSG part of a syslog line given as text (empty when there is none).

    Raises:
        InvalidLine: ``bad_syslog`` when the header is malformed.
    """
    # The header ends at an ASCII byte, so the slice after it is whole UTF-8.
    return message(text.encode()).decode()
