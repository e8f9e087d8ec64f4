"""RowMaker: the fast path and the lenient parsers agree, and every verdict is counted."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.schema import INGEST_COLUMNS
from services.intake.agents import PARSE_CHARS, Agent
from services.intake.model import InvalidLine, RetryLater
from services.intake.recent import RecentIds
from services.intake.rows import DAY_MS, RowMaker, encode, visitor_id

NOW = 1_790_000_000.0  # a fixed clock: 2026-09-21
NOW_MS = int(NOW * 1000)


class Hosts:
    def __init__(self, hosts: dict[str, str], down: bool = False):
        self.hosts, self.down, self.lookups = hosts, down, []

    def known(self) -> dict[str, str]:
        return self.hosts

    def stale(self) -> bool:
        return False

    def site_id(self, host: str, since: float | None = None) -> str | None:
        self.lookups.append(host)
        if host in self.hosts:
            return self.hosts[host]
        if self.down:
            raise RetryLater(host)
        return None


class Salts:
    def __init__(self):
        self.days: list[date] = []

    def salt(self, day: date) -> bytes:
        self.days.append(day)
        return day.isoformat().encode() * 2


class Agents:
    """AgentParser's interface: ``parse`` truncates; ``cached`` is the cache itself."""

    def __init__(self):
        self.asked: list[tuple[str, int]] = []  # (which entry, length of the UA)

    def parse(self, user_agent: str) -> Agent:
        self.asked.append(("parse", len(user_agent)))
        return self._agent(user_agent[:PARSE_CHARS])

    @property
    def cached(self):
        def lookup(user_agent: str) -> Agent:
            self.asked.append(("cached", len(user_agent)))
            return self._agent(user_agent)

        return lookup

    @staticmethod
    def _agent(user_agent: str) -> Agent:
        bot = "bot" in user_agent.lower()
        return Agent("Firefox", "Linux", "desktop", bot, "crawler-list" if bot else "")


class Countries:
    def country(self, ip: str) -> str:
        return "NL" if ip.startswith("192.0.2.") else ""


def maker(
    source="bunny", hosts=None, down=False, recent=None, countries=None, agents=None
) -> RowMaker:
    return RowMaker(
        source,
        Hosts(hosts or {"site.example": "s1"}, down),
        Salts(),
        agents or Agents(),
        countries=countries,
        recent=recent,
        clock=lambda: NOW,
    )


def bunny(**changes) -> bytes:
    record = {
        "ServerId": 1, "IsValid": True, "PullZoneId": 2, "IsSSL": True, "Host": "site.example",
        "Protocol": "HTTP/2", "Scheme": "https", "UserAgent": "Mozilla/5.0 Firefox/140",
        "RequestId": "a" * 32, "HeaderRange": "", "Country": "de", "PathAndQuery": "/p?q=1",
        "ServerZone": "DE", "Status": 200, "BytesSent": 412, "BodyBytesSent": 390,
        "Timestamp": NOW_MS - 5000, "GzipRatio": 0, "Cached": True, "RemoteIp": "198.51.100.0",
        "Referer": "https://news.example/a",
    }  # fmt: skip
    record.update(changes)
    return json.dumps(record).encode()


def as_dict(row: tuple) -> dict:
    return dict(zip(INGEST_COLUMNS, row, strict=True))


def test_a_bunny_record_becomes_an_ingest_row_without_its_ip():
    result = maker().make([bunny()])
    assert not result.invalid and not result.held
    row = as_dict(result.rows[0])
    assert row["site_id"] == "s1" and row["ts_ms"] == NOW_MS - 5000
    assert row["raw_path"] == "/p?q=1" and row["country"] == "DE" and row["method"] == "GET"
    assert row["browser"] == "Firefox" and row["is_bot"] is False and row["log_source"] == "bunny"
    salt = (datetime.fromtimestamp(NOW, UTC).date().isoformat().encode()) * 2
    assert row["visitor_id"] == visitor_id(salt, "s1", "198.51.100.0", "Mozilla/5.0 Firefox/140")
    assert b"198.51.100" not in encode(result.rows)


def test_only_user_agents_short_enough_to_key_the_cache_skip_its_truncating_parse():
    agents = Agents()
    long_agent = "Mozilla/5.0 " + "x" * PARSE_CHARS
    rows = maker(agents=agents).make([bunny(), bunny(RequestId="b" * 32, UserAgent=long_agent)])
    assert len(rows.rows) == 2
    # A huge UA goes through parse, which keys the cache on its first characters only.
    assert agents.asked == [("cached", 23), ("parse", len(long_agent))]


def test_the_fast_path_reads_every_blank_or_dash_referrer_as_none():
    # str.strip's whitespace is Unicode's: a no-break space before "-" is still no referrer.
    one = maker()
    one.make([])
    for referrer in ("-", " - ", "\u00a0-", "\u2003", "\x1c", "-x", "x-", "a"):
        body = bunny(Referer=referrer)
        fast = one._bunny_fast()(body)
        assert fast == one._slow(body), referrer
    assert as_dict(one._bunny_fast()(bunny(Referer="\u00a0-")))["referrer"] == ""


def test_one_json_line_per_row_in_column_order():
    rows = maker().make([bunny(), bunny(RequestId="b" * 32)]).rows
    lines = encode(rows).splitlines()
    assert len(lines) == 2 and json.loads(lines[0])[0] == "s1"
    assert len(json.loads(lines[1])) == len(INGEST_COLUMNS)


safe_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(
    path=safe_text.map(lambda s: "/" + s),
    status=st.integers(100, 599),
    size=st.integers(0, 2**40),
    referrer=safe_text,
    agent=safe_text,
    country=st.sampled_from(["DE", "us", "", "DEU", "1A"]),
    ranged=st.sampled_from(["", "bytes=0-1"]),
    ts=st.integers(NOW_MS - 300 * DAY_MS, NOW_MS + DAY_MS // 2),
)
def test_the_fast_path_agrees_with_the_lenient_parser(
    path, status, size, referrer, agent, country, ranged, ts
):
    body = bunny(
        PathAndQuery=path, Status=status, BytesSent=size, Referer=referrer, UserAgent=agent,
        Country=country, HeaderRange=ranged, Timestamp=ts,
    )  # fmt: skip
    one = maker()
    one.make([])  # sets the clock's window and the host map, as every call does
    fast = one._bunny_fast()(body)  # the hot path as this call of make built it
    slow = one._slow(body)
    assert fast is not None and fast == slow


# Field values the per-call column path must treat exactly as the per-line path does.
# These it rewrites by the per-line path's rules, staying on the column path:
_REWRITTEN = {
    "Referer": st.sampled_from(["", "-", " - ", "\u00a0-", "\u2003", "-x", "https://a.example/"]),
    "Method": st.sampled_from(["GET", "get", "", "POST", "x" * 40]),
    "PathAndQuery": st.sampled_from(["/", "", "/a?b=c"]),
    "Country": st.sampled_from(["DE", "de", "", "DEU", "1A"]),
    "UserAgent": st.sampled_from(["Mozilla/5.0 Firefox/140", "bot", ""]),
    "HeaderRange": st.sampled_from(["", "bytes=0-1"]),
    "Host": st.sampled_from(["site.example", "other.example"]),
}
# and these send the whole call back line by line:
_REFUSED = {
    "Host": st.sampled_from(["", "Site.Example:443", "new.example"]),
    "Status": st.sampled_from([99, 600]),
    "Timestamp": st.sampled_from([NOW_MS - DAY_MS, NOW_MS - 500 * DAY_MS, NOW_MS + 3 * DAY_MS]),
    "UserAgent": st.just("M" * (PARSE_CHARS + 1)),
}


def _records(fields: dict) -> st.SearchStrategy[bytes]:
    # Request ids from a small range, so calls repeat some: duplicates are judged too.
    return st.tuples(st.fixed_dictionaries({}, optional=fields), st.integers(0, 5)).map(
        lambda drawn: bunny(**{"RequestId": f"{drawn[1]:032}", **drawn[0]})
    )


_REFUSED_BODY = st.one_of(
    *(st.builds(lambda v, k=k: bunny(**{k: v}), values) for k, values in _REFUSED.items()),
    st.sampled_from([b"not json", bunny(PathAndQuery="\ud800"), InvalidLine("too_long")]),
)


@st.composite
def _calls(draw) -> list:
    """A call of clean records with up to two refused bodies somewhere among them."""
    bodies = draw(st.lists(_records(_REWRITTEN), max_size=10))
    for refused in draw(st.lists(_REFUSED_BODY, max_size=2)):
        bodies.insert(draw(st.integers(0, len(bodies))), refused)
    return bodies


_HOSTS = {"site.example": "s1", "other.example": "s2"}


def _running_maker(per_line: bool = False) -> RowMaker:
    one = maker(hosts=_HOSTS, recent=RecentIds(100), agents=Agents())
    # Today's and yesterday's hashers ready, as on an intake that has been running.
    one.make([bunny(RequestId="f" * 32)])
    one.make([bunny(RequestId="e" * 32, Timestamp=NOW_MS - DAY_MS)])
    if per_line:
        one._bunny_columns = lambda bodies: None  # this instance judges line by line
    return one


@settings(max_examples=300, deadline=None)
@given(st.lists(_records(_REWRITTEN), min_size=1, max_size=12))
def test_the_column_path_builds_the_rows_the_per_line_path_builds(bodies):
    one = _running_maker()
    rows = one._bunny_columns(bodies)
    assert rows is not None and rows == [one._bunny_fast()(body) for body in bodies]


@settings(max_examples=300, deadline=None)
@given(_calls())
def test_a_whole_call_gives_the_rows_and_verdicts_of_the_line_by_line_path(bodies):
    whole, per_line = _running_maker(), _running_maker(per_line=True)
    got, want = whole.make(bodies), per_line.make(bodies)
    assert got.rows == want.rows
    assert got.invalid == want.invalid and got.held == want.held and got.rest == want.rest
    # The same user agents asked the same way: a huge one through the truncating parse.
    assert whole._agents.__self__.asked == per_line._agents.__self__.asked


def test_a_clean_call_takes_the_column_path_and_an_odd_one_falls_back_whole():
    one = maker(hosts={"site.example": "s1"})
    one.make([bunny()])
    clean = [bunny(RequestId=f"{i:032}", Referer=r) for i, r in enumerate(["-", "", "x"])]
    assert one._bunny_columns(clean) == [one._bunny_fast()(body) for body in clean]
    assert one._bunny_columns(clean + [bunny(Host="new.example")]) is None
    assert one._bunny_columns(clean + [b"not json"]) is None
    assert one._bunny_columns(clean + [bunny(Timestamp=NOW_MS - DAY_MS)]) is None  # no hasher yet


def test_records_the_fast_path_refuses_are_judged_by_the_parser():
    pipe = (
        f"HIT|200|{NOW_MS}|412|390|198.51.100.0|-|https://site.example/x.css?v=1|WA|"
        "curl/8 |odd|a" + "c" * 31 + "|DE"
    )
    bodies = [
        bunny(Status=200.0).replace(b"200.0", b"200.0"),  # a float status: lenient
        pipe.encode(),
        bunny(Referer=None),
        b"\xef\xbb\xbf" + bunny(RequestId="d" * 32),
    ]
    result = maker().make(bodies)
    assert not result.invalid, result.invalid
    assert [as_dict(row)["raw_path"] for row in result.rows][1] == "/x.css?v=1"
    assert len(result.rows) == 4


def test_each_refusal_is_counted_by_reason():
    bodies = [
        b"not json at all",
        bunny(Status=700),
        bunny(Timestamp=NOW_MS - 500 * DAY_MS),
        bunny(Timestamp=NOW_MS + 3 * DAY_MS),
        bunny(Host="elsewhere.example"),
        bunny(PathAndQuery="\ud800"),  # a lone surrogate: no UTF-8 column takes it
        b'{"Host": "site.example", "Status": 200, "PathAndQuery": "/", "Timestamp": "soon"}',
        b"\xff\xfe{}",
        InvalidLine("too_long"),
    ]
    result = maker().make(bodies)
    assert not result.rows
    assert result.invalid == {
        "missing_field": 1,
        "bad_value": 1,
        "stale_timestamp": 1,
        "future_timestamp": 1,
        "unknown_host": 1,
        "bad_type": 1,
        "bad_encoding": 2,
        "too_long": 1,
    }
    assert sum(result.invalid.values()) == len(bodies)


def test_a_request_id_seen_before_is_a_duplicate():
    one = maker(recent=RecentIds(10))
    result = one.make([bunny(), bunny(), bunny(RequestId="e" * 32)])
    assert len(result.rows) == 2 and result.invalid == {"duplicate": 1}
    again = one.make([bunny(RequestId="f" * 32), bunny(RequestId="e" * 32)])
    assert len(again.rows) == 1 and again.invalid == {"duplicate": 1}


def test_the_fast_and_the_lenient_path_share_one_duplicate_check():
    # The same request id as a JSON record (fast path) and as a pipe record (lenient).
    one = maker(recent=RecentIds(10))
    rid = "a" * 32
    pipe = f"HIT|200|{NOW_MS - 1000}|12|1|192.0.2.1|-|https://site.example/|NL|curl/8|{rid}|NL"
    result = one.make([bunny(RequestId=rid), pipe.encode(), bunny(RequestId=rid)])
    assert len(result.rows) == 1 and result.invalid == {"duplicate": 2}


def test_a_held_line_is_not_a_duplicate_when_it_comes_back():
    hosts = Hosts({"site.example": "s1"}, down=True)
    one = RowMaker("bunny", hosts, Salts(), Agents(), recent=RecentIds(10), clock=lambda: NOW)
    body = bunny(Host="new.example", RequestId="9" * 32)
    assert one.make([body]).held == [body]
    hosts.hosts["new.example"] = "s2"
    again = one.make([body])
    assert len(again.rows) == 1 and not again.invalid


def test_hosts_are_cleaned_before_the_slow_lookup():
    one = maker(hosts={"site.example": "s1"})
    assert len(one.make([bunny(Host="Site.Example:443")]).rows) == 1
    assert one._resolver.lookups == ["site.example"]


def test_an_unknown_host_while_the_map_is_down_is_held_not_dropped():
    bodies = [bunny(), bunny(Host="new.example", RequestId="f" * 32), bunny(RequestId="0" * 32)]
    held = maker(down=True).make(bodies)
    assert len(held.rows) == 2 and held.held == [bodies[1]] and not held.invalid
    # A file source stops there, so it can offer the rest again in order.
    stopped = maker(down=True).make(bodies, stop_at_hold=True)
    assert len(stopped.rows) == 1 and stopped.held == bodies[1:]


def caddy_body(remote_ip: str, host: str, uri: str) -> bytes:
    """One line of Caddy's JSON access log."""
    return json.dumps({
        "level": "info", "ts": NOW - 1, "logger": "http.log.access.log0",
        "request": {"remote_ip": remote_ip, "method": "GET", "host": host,
                    "uri": uri, "headers": {"User-Agent": ["curl/8"]}},
        "size": 3, "status": 200,
    }).encode()  # fmt: skip


def test_caddy_lines_get_their_country_from_the_offline_database():
    body = caddy_body("192.0.2.7", "site.example:8080", "/")
    rows = maker("caddy", countries=Countries()).make([body]).rows
    row = as_dict(rows[0])
    assert row["country"] == "NL" and row["log_source"] == "caddy" and row["site_id"] == "s1"


def test_caddy_json_over_syslog_is_read_as_caddy():
    body = caddy_body("192.0.2.9", "site.example", "/docs/")
    result = maker("bunny", countries=Countries()).make([body])
    row = as_dict(result.rows[0])
    assert not result.invalid
    assert (row["raw_path"], row["log_source"], row["country"]) == ("/docs/", "caddy", "NL")


def test_each_day_hashes_with_its_own_salt():
    one = maker()
    one.make([bunny(), bunny(RequestId="1" * 32, Timestamp=NOW_MS - DAY_MS)])
    assert len(set(one._salts.days)) == 2


def test_plain_records_of_many_visitors_take_the_column_path_whole():
    # Not a speed test (the benchmark measures speed): a call of ordinary records, each
    # from its own visitor, must not fall back line by line, or the hot path is lost.
    bodies = [
        bunny(RequestId=f"{i:032x}", RemoteIp=f"198.51.{i // 256}.{i % 256}", Referer=r)
        for i, r in zip(range(500), ["", "-", "https://news.example/"] * 200, strict=False)
    ]
    one = maker(recent=RecentIds())
    one.make([bunny(RequestId="f" * 32)])  # today's hasher, as on a running intake
    columns = one._bunny_columns(bodies)
    assert columns is not None and len(columns) == 500
    assert len({row[INGEST_COLUMNS.index("visitor_id")] for row in columns}) == 500


def test_recent_ids_remember_at_least_their_capacity_and_forget_beyond_twice_it():
    recent = RecentIds(100)
    assert all(recent.duplicates([str(n)]) == [] for n in range(250))
    # The last 100 are always remembered; nothing older than the last 200 is.
    assert recent.duplicates([str(n) for n in range(150, 250)]) == list(range(100))
    assert recent.duplicates([str(n) for n in range(0, 50)]) == []
