"""Access-log lines in, ``LogLine`` out: pure functions, no I/O.

Two producers: Caddy's JSON access log (one object per line) and Bunny's log
forwarding (a JSON record or a 12-field pipe line, bare or as the MSG of an
RFC 5424 syslog line). Anything else raises ``InvalidLine`` with a short reason
that is safe to use as a metric label; nothing else is ever raised.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from .model import InvalidLine, LogLine
from .syslog_header import strip_header

__all__ = [
    "LogLine",
    "InvalidLine",
    "MAX_LINE",
    "parse_caddy",
    "parse_bunny",
    "parse_line",
    "clean_host",
    "clean_referrer",
]

MAX_LINE = 64 * 1024
_BOM = "\ufeff"
# Timestamps outside this window are garbage, not traffic (ClickHouse DateTime64 range too).
_MIN_TS = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
_MAX_TS = datetime(2100, 1, 1, tzinfo=UTC).timestamp()


def _text(data: bytes | str) -> str:
    if len(data) > MAX_LINE:
        raise InvalidLine("too_long")
    if isinstance(data, str):
        return data
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidLine("bad_type")
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidLine("bad_encoding") from None


def _load_object(text: str) -> dict:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidLine("not_json") from None
    if not isinstance(obj, dict):
        raise InvalidLine("not_object")
    return obj


def _field(obj: dict, key: str, kind: type | tuple[type, ...], default=None):
    value = obj.get(key, default)
    if value is None:
        raise InvalidLine("missing_field")
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidLine("bad_type")
    return _encodable(value) if isinstance(value, str) else value


def _encodable(value: str) -> str:
    # JSON escapes can carry lone surrogates (e.g. "\ud800"), which no UTF-8 column
    # accepts: refuse the line here rather than poison a whole insert batch later.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidLine("bad_encoding") from None
    return value


def _int(value, low: int, high: int) -> int:
    # JSON producers sometimes write integers as 200.0; accept exact ones only.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidLine("bad_type")
    if not low <= value <= high:
        raise InvalidLine("bad_value")
    return value


def _timestamp(seconds: float) -> datetime:
    if not math.isfinite(seconds) or not _MIN_TS <= seconds < _MAX_TS:
        raise InvalidLine("bad_value")
    return datetime.fromtimestamp(seconds, UTC)


def clean_host(host: str) -> str:
    """Lowercase a Host value and drop its port (``[v6]:port`` included) and trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        host = host[1:end] if end > 0 else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _status(value) -> int:
    return _int(value, 100, 599)


def _str(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return _encodable(value)
    raise InvalidLine("bad_type")


# -- Caddy -------------------------------------------------------------------------


def _header(headers: dict, name: str) -> str:
    # Caddy writes canonical names with list values; be lenient about both.
    for key, value in headers.items():
        if key.lower() == name:
            if isinstance(value, list):
                value = value[0] if value else ""
            return _str(value)
    return ""


def parse_caddy(data: bytes | str) -> LogLine:
    """Parse one line of Caddy's JSON access log.

    Raises:
        InvalidLine: the line is not a usable access-log entry.
    """
    obj = _load_object(_text(data))
    logger = obj.get("logger")
    if isinstance(logger, str) and not logger.startswith("http.log.access"):
        raise InvalidLine("not_access_log")
    request = _field(obj, "request", dict)
    headers = request.get("headers") or {}
    if not isinstance(headers, dict):
        raise InvalidLine("bad_type")
    host = clean_host(_field(request, "host", str))
    if not host:
        raise InvalidLine("missing_field")
    # client_ip (Caddy >= 2.7) honours trusted proxies; remote_ip is the socket peer.
    ip = request.get("client_ip") or request.get("remote_ip") or ""
    return LogLine(
        ts=_timestamp(_field(obj, "ts", (int, float))),
        host=host,
        method=_field(request, "method", str).upper(),
        path=_field(request, "uri", str),
        status=_status(_field(obj, "status", (int, float))),
        bytes=_int(obj.get("size") or 0, 0, 2**63 - 1),
        referrer=_header(headers, "referer"),
        user_agent=_header(headers, "user-agent"),
        remote_ip=_str(ip),
        country="",
        request_id="",
        source="caddy",
        range_request=bool(_header(headers, "range")),
    )


# -- Bunny -------------------------------------------------------------------------


def _country(value: str) -> str:
    value = value.strip().upper()
    return value if len(value) == 2 and value.isascii() and value.isalpha() else ""


def clean_referrer(value: str) -> str:
    """A CDN's referrer field: blank or "-" is no referrer."""
    return "" if value.strip() in ("", "-") else value


def _bunny_json(text: str) -> LogLine:
    obj = _load_object(text)
    host = clean_host(_field(obj, "Host", str))
    if not host:
        raise InvalidLine("missing_field")
    path = _field(obj, "PathAndQuery", str)
    return LogLine(
        ts=_timestamp(_int(_field(obj, "Timestamp", (int, float)), 0, 2**63 - 1) / 1000),
        host=host,
        # Bunny records carry no method; a CDN edge log is overwhelmingly GETs.
        method=_str(obj.get("Method") or "GET").upper(),
        path=path or "/",
        status=_status(_field(obj, "Status", (int, float))),
        bytes=_int(obj.get("BytesSent") or 0, 0, 2**63 - 1),
        referrer=clean_referrer(_str(obj.get("Referer"))),
        user_agent=_str(obj.get("UserAgent")),
        remote_ip=_str(obj.get("RemoteIp")),
        country=_country(_str(obj.get("Country"))),
        request_id=_str(obj.get("RequestId")),
        source="bunny",
        range_request=bool(_str(obj.get("HeaderRange")).strip()),
    )


def _number(text: str, low: int, high: int) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise InvalidLine("bad_type")
    if len(text) > 19:  # beyond any int64, and int() refuses very long digit strings
        raise InvalidLine("bad_value")
    return _int(int(text), low, high)


def _split_url(url: str) -> tuple[str, str]:
    # By hand rather than urlsplit, which drops an empty "?" and chokes on odd hosts.
    scheme = url.find("://")
    if scheme < 0:
        raise InvalidLine("bad_value")
    rest = url[scheme + 3 :]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    host = clean_host(rest[:cut].rpartition("@")[2])
    if not host:
        raise InvalidLine("bad_value")
    path = rest[cut:]
    return host, path if path.startswith("/") else "/" + path


def _bunny_pipe(text: str) -> LogLine:
    parts = text.split("|")
    if len(parts) < 12:
        raise InvalidLine("missing_field")
    # Fields 1-9 from the left, 11-12 from the right: a pipe inside the user agent
    # (field 10) cannot shift the columns.
    left, right = parts[:9], parts[-2:]
    user_agent = "|".join(parts[9:-2])
    host, path = _split_url(left[7].strip())
    return LogLine(
        ts=_timestamp(_number(left[2], 0, 2**63 - 1) / 1000),
        host=host,
        method="GET",
        path=path,
        status=_number(left[1], 100, 599),
        bytes=_number(left[3], 0, 2**63 - 1),
        referrer=clean_referrer(left[6]),
        user_agent=user_agent,
        remote_ip=left[5].strip(),
        country=_country(right[1]),
        request_id=right[0].strip(),
        source="bunny",
    )


def parse_bunny(data: bytes | str) -> LogLine:
    """Parse one Bunny record: JSON or pipe format, bare or inside RFC 5424 syslog.

    Raises:
        InvalidLine: the frame is not a usable Bunny record.
    """
    text = _text(data).strip("\r\n\x00 ")
    if text.startswith("<"):
        text = strip_header(text)
    text = text.lstrip(_BOM).strip()
    if not text:
        raise InvalidLine("empty")
    if text.startswith("{"):
        return _bunny_json(text)
    return _bunny_pipe(text)


_PARSERS = {"caddy": parse_caddy, "bunny": parse_bunny}


def parse_line(data: bytes | str, source: str) -> LogLine:
    """Parse a line from the named source (``caddy`` or ``bunny``).

    Raises:
        InvalidLine: the line cannot become a row.
    """
    try:
        parser = _PARSERS[source]
    except KeyError:
        raise InvalidLine("unknown_source") from None
    return parser(data)
