"""A parsed line plus its site id -> one ``requests`` row (``REQUEST_COLUMNS`` order).

Everything derived is decided here, once, at ingest, so every query agrees: the
file type and pageview rule, the referrer host, the parsed user agent and bot
verdict, and the visitor id. The raw IP and raw user agent go no further.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date
from typing import Protocol
from urllib.parse import urlsplit

from services.core.schema import REQUEST_COLUMNS

from .agents import AgentParser
from .model import LogLine

__all__ = ["Enricher", "file_type", "strip_query", "referrer_host", "visitor_id", "is_page"]

_TYPES = {
    "page": "html htm xhtml",
    "stylesheet": "css",
    "script": "js mjs cjs",
    "image": "png jpg jpeg gif webp avif svg ico bmp tif tiff apng jxl heic",
    "font": "woff woff2 ttf otf eot",
    "document": "pdf doc docx xls xlsx ppt pptx odt ods odp rtf txt md epub",
    "archive": "zip tar gz tgz bz2 xz 7z rar zst",
    "audio": "mp3 wav ogg oga flac aac m4a opus weba",
    "video": "mp4 webm mkv mov avi m4v ogv mpeg",
    "feed": "xml rss atom",
    "data": "json csv tsv yaml yml toml wasm map webmanifest geojson",
}
_BY_EXTENSION = {ext: kind for kind, exts in _TYPES.items() for ext in exts.split()}
_PAGE_STATUSES = frozenset((200, 201, 304))
_HOST_CHARS = re.compile(r"[\w.:-]{1,253}")  # \w: IDN hosts are fine


class Salts(Protocol):
    def salt(self, day: date) -> bytes: ...


def strip_query(path: str) -> str:
    """The path without its query string or fragment."""
    for mark in ("?", "#"):
        path = path.partition(mark)[0]
    return path


def file_type(path: str) -> str:
    """Classify a request path by extension (query stripped first).

    No extension or a trailing ``/`` is a page; unknown extensions are ``other``.
    """
    path = strip_query(path)
    last = path.rpartition("/")[2]
    if "." not in last:
        return "page"
    return _BY_EXTENSION.get(last.rpartition(".")[2].lower(), "other")


def is_page(method: str, status: int, kind: str, range_request: bool = False) -> bool:
    """The pageview rule: a successful full GET of a page (bots are judged apart)."""
    return method == "GET" and status in _PAGE_STATUSES and kind == "page" and not range_request


def referrer_host(referrer: str, host: str) -> str:
    """The referrer's lowercased host (``www.`` kept); "" for none or a self-referral."""
    referrer = referrer.strip()
    if not referrer or referrer == "-":
        return ""
    if "://" not in referrer and not referrer.startswith("//"):
        referrer = "//" + referrer  # bare "example.com/x": still has a host
    try:
        name = (urlsplit(referrer).hostname or "").rstrip(".")
    except ValueError:
        return ""
    if name == host.lower() or not _HOST_CHARS.fullmatch(name):
        return ""  # a self-referral, or junk that is not a host name
    return name


def visitor_id(salt: bytes, site_id: str, ip: str, user_agent: str) -> int:
    """Keyed BLAKE2b over length-prefixed (site, IP, UA), as a UInt64.

    Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    """
    digest = hashlib.blake2b(key=salt, digest_size=8)
    for part in (site_id, ip, user_agent):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return int.from_bytes(digest.digest(), "big")


class Enricher:
    """Builds rows; thread-safe given thread-safe collaborators."""

    def __init__(self, salts: Salts, agents: AgentParser | None = None):
        self._salts = salts
        self._agents = agents or AgentParser()

    def row(self, line: LogLine, site_id: str) -> tuple:
        """The ``requests`` row for ``line`` served by ``site_id``.

        Raises:
            RetryLater: the day's salt cannot be had right now.
        """
        ts = line.ts.astimezone(UTC)
        kind = file_type(line.path)
        method = line.method[:16]
        agent = self._agents.parse(line.user_agent)
        values = {
            "site_id": site_id,
            "ts": ts,
            "host": line.host,
            "method": method,
            "path": strip_query(line.path),
            "status": line.status,
            "status_class": f"{line.status // 100}xx",
            "bytes": line.bytes,
            "file_type": kind,
            "is_page": is_page(method, line.status, kind, line.range_request),
            "referrer_host": referrer_host(line.referrer, line.host),
            "browser": agent.browser,
            "os": agent.os,
            "device": agent.device,
            "country": line.country,
            "is_bot": agent.is_bot,
            "bot_reason": agent.bot_reason,
            "visitor_id": visitor_id(
                self._salts.salt(ts.date()), site_id, line.remote_ip, line.user_agent
            ),
            "log_source": line.source,
            "request_id": line.request_id,
        }
        return tuple(values[column] for column in REQUEST_COLUMNS)
