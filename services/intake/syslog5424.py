"""The RFC 5424 header around a Bunny record: find where MSG starts.

``<PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]``.
STRUCTURED-DATA is ``-`` or bracketed elements whose quoted values may hold spaces
and escaped ``"``, ``\\`` and ``]``, so it needs a small scanner, not a split.
"""

from __future__ import annotations

import re

from .model import InvalidLine

__all__ = ["strip_header"]

_HEADER = re.compile(r"<(\d{1,3})>([1-9]\d?) (\S+) (\S+) (\S+) (\S+) (\S+) ")


def _invalid() -> InvalidLine:
    return InvalidLine("bad_syslog")


def _skip_element(text: str, i: int) -> int:
    """Index just past the SD-ELEMENT starting at ``text[i] == '['``."""
    quoted = False
    i += 1
    while i < len(text):
        char = text[i]
        if quoted:
            if char == "\\":
                i += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "]":
            return i + 1
        i += 1
    raise _invalid()


def strip_header(text: str) -> str:
    """The MSG part of an RFC 5424 line (possibly empty, BOM left in place).

    Raises:
        InvalidLine: ``bad_syslog`` when the header or structured data is malformed.
    """
    match = _HEADER.match(text)
    if match is None or int(match.group(1)) > 191:
        raise _invalid()
    i = match.end()
    if text.startswith("-", i):
        i += 1
    elif text.startswith("[", i):
        while text.startswith("[", i):
            i = _skip_element(text, i)
    else:
        raise _invalid()
    if i == len(text):
        return ""
    if text[i] != " ":
        raise _invalid()
    return text[i + 1 :]
