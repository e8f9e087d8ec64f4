"""Message bodies in, ``INGEST_COLUMNS`` rows out: the intake's per-line Python work.

The hot path is Bunny's JSON record: msgspec decodes and type-checks it straight into
a struct (one C call), the host, user agent and salt lookups hit dicts, and the row is
a tuple that ``encode`` turns into JSONCompactEachRow for the whole batch at once. A
call whose records are all plain takes them a column at a time (``_bunny_columns``,
``map`` and ``zip`` over C functions, no bytecode per line); one odd record sends that
call through the per-line closure (``_bunny_fast``), which builds the same rows.
What the engine can derive (path without query, file type, pageview rule, referrer
host, status class, the timestamp) it derives on insert (``clickhouse/002``). Anything
the fast path refuses falls back to the lenient parsers in ``parse`` (pipe records,
syslog-wrapped bodies, nulls, ``200.0``), so a record is judged once, by one set of
rules, whichever path reads it.

The raw IP ends here: it feeds the visitor hash and goes no further.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import repeat
from operator import attrgetter
from typing import Protocol

import msgspec
from msgspec.structs import astuple

from services.core.schema import INGEST_COLUMNS

from .agents import PARSE_CHARS, AgentParser
from .model import InvalidLine, LogLine, RetryLater
from .parse import clean_host, clean_referrer, parse_bunny, parse_caddy
from .recent import RecentIds

__all__ = ["RowMaker", "Result", "encode", "visitor_id"]

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
# A line older than this or further ahead is garbage or a replay, not traffic.
MAX_AGE_MS = 400 * DAY_MS
MAX_AHEAD_MS = DAY_MS
_METHOD_CHARS = 16
_REQUEST_ID = INGEST_COLUMNS.index("request_id")


class _Bunny(msgspec.Struct, gc=False):  # str and int fields: no cycles to track
    """The fields of Bunny's JSON record that Ecstatic reads (bunny.md section 3)."""

    Host: str
    Status: int
    Timestamp: int
    PathAndQuery: str = "/"
    BytesSent: int = 0
    UserAgent: str = ""
    Referer: str = ""
    RemoteIp: str = ""
    Country: str = ""
    RequestId: str = ""
    HeaderRange: str = ""
    Method: str = "GET"  # not in Bunny's records today; honoured if it ever is


_decode_bunny = msgspec.json.Decoder(_Bunny).decode
_BUNNY_FIELDS = _Bunny.__struct_fields__
_AGENT_COLUMNS = attrgetter("browser", "os", "device", "is_bot", "bot_reason")
_Hasher = type(hashlib.blake2b())
_encoder = msgspec.json.Encoder()


def encode(rows: list[tuple]) -> bytes:
    """Rows as JSONCompactEachRow, one line each, in one call."""
    return _encoder.encode_lines(rows)


class _NeedsWorker(Exception):
    """Raised inside ``make(inline=True)`` where going on would wait on the network."""


class Resolver(Protocol):
    def known(self) -> dict[str, str]: ...
    def stale(self) -> bool: ...
    def site_id(self, host: str, since: float | None = None) -> str | None: ...


class Salts(Protocol):
    def salt(self, day: date) -> bytes: ...


class Countries(Protocol):
    def country(self, ip: str) -> str: ...


def visitor_id(salt: bytes, site_id: str, ip: str, user_agent: str) -> int:
    """Keyed BLAKE2b over (site, IP, UA) as a UInt64 (the Plausible scheme).

    NUL separates the parts: site ids and IP text never hold one, so no two
    different triples hash the same input.
    """
    digest = hashlib.blake2b(f"{site_id}\0{ip}\0{user_agent}".encode(), key=salt, digest_size=8)
    return int.from_bytes(digest.digest(), "big")


@dataclass
class Result:
    """What became of one call's bodies."""

    rows: list[tuple] = field(default_factory=list)
    # Bodies to try again later: the host map or the day's salt is unavailable.
    held: list[bytes] = field(default_factory=list)
    # With ``inline``: the bodies from the first one that needs the network (a host
    # the map lacks, a day without a salt yet) on, for the worker thread.
    rest: list = field(default_factory=list)
    invalid: Counter = field(default_factory=Counter)


class RowMaker:
    """Turns bodies of one source into rows; one instance per source, one thread."""

    def __init__(
        self,
        source: str,
        resolver: Resolver,
        salts: Salts,
        agents: AgentParser,
        countries: Countries | None = None,
        recent: RecentIds | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self._source = source
        self._resolver = resolver
        self._salts = salts
        self._agents = agents.parse
        self._agents_cached = agents.cached
        self._countries = countries
        self._recent = recent  # duplicate request ids, checked per call over its rows
        self._clock = clock
        self._hashers: dict[int, object] = {}
        self._inline = False
        self._since: float | None = None
        self._today = -1

    def make(
        self,
        bodies: list,
        stop_at_hold: bool = False,
        inline: bool = False,
        since: float | None = None,
    ) -> Result:
        """Rows for ``bodies`` in order; the invalid ones counted by reason.

        ``bodies`` may hold ``InvalidLine`` items (a framing or file-level verdict), which
        are counted like any other. With ``stop_at_hold`` the first body that must wait
        and every one after it are held, so the caller can offer them again in order.
        With ``inline`` (the caller is an event loop) nothing here may wait on the
        network: the first body that would is left, with the rest, in ``Result.rest``.
        ``since`` is when (the resolver's clock) the bodies first arrived: a host is
        unknown only if a host map fetched after that lacks it.
        """
        result = Result()
        self._inline = inline
        self._since = since
        if inline and self._resolver.stale():
            result.rest = list(bodies)
            return result
        now_ms = int(self._clock() * 1000)
        if now_ms // DAY_MS != self._today:
            # A new day: yesterday's keyed hashers go, so salts live no longer in memory
            # than SaltStore keeps them.
            self._today = now_ms // DAY_MS
            self._hashers.clear()
        self._window = (now_ms - MAX_AGE_MS, now_ms + MAX_AHEAD_MS)
        self._hosts = self._resolver.known()
        bunny = self._source == "bunny"
        rows = self._bunny_columns(bodies) if bunny else None
        if rows is not None:
            result.rows = rows
        else:
            self._per_line(bodies, self._bunny_fast() if bunny else None, result, stop_at_hold)
        rows, invalid = result.rows, result.invalid
        if self._recent is not None and rows:
            # Only rows: a line held above (RetryLater) must not count as seen when it
            # returns.
            duplicates = self._recent.duplicates([row[_REQUEST_ID] for row in rows])
            if duplicates:
                for index in reversed(duplicates):
                    del rows[index]
                invalid["duplicate"] += len(duplicates)
        return result

    def _per_line(self, bodies: list, fast, result: Result, stop_at_hold: bool) -> None:
        rows, invalid = result.rows, result.invalid
        for index, body in enumerate(bodies):
            try:
                row = fast(body) if fast is not None and type(body) is bytes else None
                if row is None:
                    row = self._slow(body)
            except InvalidLine as exc:
                invalid[exc.reason] += 1
                continue
            except _NeedsWorker:
                result.rest = bodies[index:]
                break
            except RetryLater:
                if stop_at_hold:
                    result.held.extend(bodies[index:])
                    break
                result.held.append(body)
                continue
            except Exception:  # noqa: BLE001 - a poison line costs itself, never the batch
                log.exception("line could not be made a row", extra={"source": self._source})
                invalid["enrich_error"] += 1
                continue
            rows.append(row)

    # -- Bunny's JSON records, the hot paths -----------------------------------------

    def _bunny_columns(self, bodies: list) -> list[tuple] | None:
        """The rows of a whole call at once, or None to judge its bodies line by line.

        The same rows as ``_bunny_fast`` gives one by one, built a column at a time
        with ``map`` and ``zip`` over C functions: per line that is no bytecode at all,
        which is most of what the per-line closure spends. It takes only calls where
        every body is a record the per-line path would take as it is, on one day whose
        hasher is ready, for hosts the map knows; anything else (a refusal, an unknown
        host, a new day's salt, a huge user agent) goes back line by line, where each
        body is judged alone and nothing here has been kept.
        """
        if not bodies:
            return []
        try:
            records = list(map(_decode_bunny, bodies))
        except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
            return None  # one bad body (or an InvalidLine from the framing)
        columns = dict(zip(_BUNNY_FIELDS, zip(*map(astuple, records)), strict=True))
        ts, status, size = columns["Timestamp"], columns["Status"], columns["BytesSent"]
        hosts, agents = columns["Host"], columns["UserAgent"]
        low, high = self._window
        day = ts[0] // DAY_MS
        if not (
            low <= min(ts)
            and max(ts) <= high
            and min(ts) // DAY_MS == day == max(ts) // DAY_MS
            and 100 <= min(status)
            and max(status) <= 599
            and 0 <= min(size)
            and max(size) < 2**63
            and max(map(len, agents)) <= PARSE_CHARS
        ):
            return None
        sites = list(map(self._hosts.get, hosts))
        hasher = self._hashers.get(day)
        if None in sites or hasher is None:  # a host to look up, a day to salt
            return None
        count = len(records)
        # Each rule is applied only to a column that needs it.
        methods = columns["Method"]
        if methods.count("GET") != count:
            methods = list(map(_method, methods))
        paths = columns["PathAndQuery"]
        if "" in paths:
            paths = [path or "/" for path in paths]
        referrers = columns["Referer"]
        stripped = list(map(str.strip, referrers))
        if "-" in stripped or stripped.count("") != referrers.count(""):
            referrers = list(map(clean_referrer, referrers))
        countries = list(map(_COUNTRIES.get, columns["Country"]))
        if None in countries:
            countries = [c or _country(raw) for c, raw in zip(countries, columns["Country"])]
        try:
            keys = list(map(str.encode, map("\0".join, zip(sites, columns["RemoteIp"], agents))))
            browser, os_name, device, is_bot, bot_reason = zip(
                *map(_AGENT_COLUMNS, map(self._agents_cached, agents))
            )
        except Exception:  # noqa: BLE001 - a lone surrogate, a parser failure: the
            return None  # per-line path finds the line and counts it alone
        digests = list(map(_Hasher.copy, repeat(hasher, count)))
        deque(map(_Hasher.update, digests, keys), maxlen=0)
        visitors = map(int.from_bytes, map(_Hasher.digest, digests))  # big-endian (3.11+)
        return list(
            zip(
                sites, ts, hosts, methods, paths, status, size, referrers, browser, os_name,
                device, is_bot, bot_reason, countries, visitors, repeat("bunny"),
                columns["RequestId"], map(bool, columns["HeaderRange"]),
            )
        )  # fmt: skip

    def _bunny_fast(self):
        """The hot path for this call of ``make``: body -> row, or None to let the slow
        path judge the record.

        The same row ``_row`` would build, written out flat in a closure over this
        call's state: this runs per line, and each call and attribute lookup saved here
        is a share of the intake's speed.
        """
        low, high = self._window
        hosts, site_of = self._hosts, self._site
        hashers, hasher_of = self._hashers, self._hasher
        agents, parse_agent = self._agents_cached, self._agents
        countries = _COUNTRIES

        def row(body: bytes):
            try:
                record = _decode_bunny(body)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return None
            ts = record.Timestamp
            status = record.Status
            size = record.BytesSent
            host = record.Host
            if not (low <= ts <= high and 100 <= status <= 599 and 0 <= size < 2**63 and host):
                return None  # out of range or odd: the slow path names the reason
            site = hosts.get(host) or site_of(host)
            hasher = hashers.get(ts // DAY_MS) or hasher_of(ts // DAY_MS)
            user_agent = record.UserAgent
            digest = hasher.copy()
            digest.update(f"{site}\0{record.RemoteIp}\0{user_agent}".encode())
            # Only a UA short enough to key the cache skips parse (which truncates).
            agent = (
                agents(user_agent) if len(user_agent) <= PARSE_CHARS else parse_agent(user_agent)
            )
            country = record.Country
            return (
                site,
                ts,
                host,
                _method(record.Method),
                record.PathAndQuery or "/",
                status,
                size,
                clean_referrer(record.Referer),
                agent.browser,
                agent.os,
                agent.device,
                agent.is_bot,
                agent.bot_reason,
                countries.get(country) or _country(country),
                int.from_bytes(digest.digest(), "big"),
                "bunny",
                record.RequestId,
                bool(record.HeaderRange),
            )

        return row

    # -- everything else: the lenient parsers ---------------------------------------

    def _slow(self, body):
        if isinstance(body, InvalidLine):
            raise body
        line = self._parse_syslog(body) if self._source == "bunny" else parse_caddy(body)
        ts = round(line.ts.timestamp() * 1000)
        if not self._window[0] <= ts <= self._window[1]:
            raise InvalidLine("stale_timestamp" if ts < self._window[0] else "future_timestamp")
        site = self._hosts.get(line.host) or self._site(line.host)
        if ts // DAY_MS not in self._hashers:
            self._hasher(ts // DAY_MS)  # may wait (RetryLater)
        return self._line_row(line, ts, site)

    @staticmethod
    def _parse_syslog(body: bytes) -> LogLine:
        """A syslog body: Bunny's JSON or pipe record, or Caddy's JSON access-log line
        (Caddy's ``net`` writer can forward it), told apart by Caddy's request object."""
        try:
            return parse_bunny(body)
        except InvalidLine:
            if b'"request"' not in body:
                raise
            return parse_caddy(body)

    def _line_row(self, line: LogLine, ts: int, site: str) -> tuple:
        country = line.country
        if not country and self._countries is not None and line.remote_ip:
            country = self._countries.country(line.remote_ip)
        return self._row(
            site,
            ts,
            line.host,
            line.method[:_METHOD_CHARS],
            line.path,
            line.status,
            line.bytes,
            line.referrer,
            line.user_agent,
            line.remote_ip,
            country,
            line.request_id,
            line.range_request,
            line.source,
        )

    # -- shared -----------------------------------------------------------------------

    def _site(self, host: str) -> str:
        if self._inline:
            raise _NeedsWorker
        site = self._resolver.site_id(clean_host(host), self._since)  # may raise RetryLater
        if site is None:
            raise InvalidLine("unknown_host")
        return site

    def _row(
        self, site, ts, host, method, path, status, size, referrer, user_agent, ip, country,
        request_id, range_request, source=None,
    ) -> tuple:  # fmt: skip
        day = ts // DAY_MS
        hasher = self._hashers.get(day)
        if hasher is None:
            hasher = self._hasher(day)
        digest = hasher.copy()
        digest.update(f"{site}\0{ip}\0{user_agent}".encode())
        agent = self._agents(user_agent)
        return (
            site,
            ts,
            host,
            method,
            path,
            status,
            size,
            referrer,
            agent.browser,
            agent.os,
            agent.device,
            agent.is_bot,
            agent.bot_reason,
            country,
            int.from_bytes(digest.digest(), "big"),
            source or self._source,
            request_id,
            range_request,
        )

    def _hasher(self, day: int):
        if self._inline:
            raise _NeedsWorker  # the salt may have to come from ClickHouse
        # A keyed BLAKE2b per day, copied per line: keying costs a block, copying little.
        salt = self._salts.salt(datetime.fromtimestamp(day * 86_400, UTC).date())
        hasher = hashlib.blake2b(key=salt, digest_size=8)
        if len(self._hashers) >= 8:
            self._hashers.clear()
        self._hashers[day] = hasher
        return hasher


def _method(value: str) -> str:
    """A record's method as the row holds it (Bunny's records carry none: GET)."""
    return "GET" if value == "GET" else (value.upper()[:_METHOD_CHARS] or "GET")


# ISO 3166-1 alpha-2 codes as Bunny sends them, mapped to themselves: one dict hit
# (no country at all is one too).
_COUNTRIES: dict[str, str] = {"": ""}


def _country(value: str) -> str:
    code = value.upper() if len(value) == 2 and value.isascii() and value.isalpha() else ""
    if code and len(_COUNTRIES) < 1024:
        _COUNTRIES[value] = code
    return code
