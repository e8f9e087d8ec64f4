import os
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from services.core.schema import REQUEST_COLUMNS
from services.intake.agents import AgentParser
from services.intake.enrich import (
    Enricher,
    file_type,
    is_page,
    referrer_host,
    strip_query,
    visitor_id,
)
from services.intake.model import LogLine, RetryLater
from services.intake.salts import SaltStore, SaltUnavailable

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
IP = "198.51.100.23"


class FakeSalts:
    def __init__(self):
        self.salts = {}

    def salt(self, day):
        return self.salts.setdefault(day, os.urandom(32))


def line(**changes) -> LogLine:
    base = LogLine(
        ts=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        host="blog.example.com",
        method="GET",
        path="/",
        status=200,
        bytes=10,
        referrer="",
        user_agent=CHROME,
        remote_ip=IP,
        country="DE",
        request_id="",
        source="caddy",
    )
    return replace(base, **changes)


@pytest.fixture(scope="module")
def agents():
    return AgentParser()


@pytest.fixture
def enricher(agents):
    return Enricher(FakeSalts(), agents)


def as_dict(row):
    assert len(row) == len(REQUEST_COLUMNS)
    return dict(zip(REQUEST_COLUMNS, row, strict=True))


@pytest.mark.parametrize(
    "path, kind",
    [
        ("/", "page"),
        ("/blog/", "page"),
        ("/about", "page"),
        ("/index.html", "page"),
        ("/a.HTM", "page"),
        ("/a?x=b.com", "page"),
        ("/a#frag.css", "page"),
        ("/style.css?v=1.2", "stylesheet"),
        ("/app.js", "script"),
        ("/m.mjs", "script"),
        ("/i/logo.SVG", "image"),
        ("/f.woff2", "font"),
        ("/cv.pdf", "document"),
        ("/x.tar.gz", "archive"),
        ("/a.mp3", "audio"),
        ("/v.webm", "video"),
        ("/feed.xml", "feed"),
        ("/index.xml?page=2", "feed"),
        ("/data.json", "data"),
        ("/.htaccess", "other"),
        ("/x.unknownext", "other"),
        ("/v1.2/thing", "page"),
    ],
)
def test_file_type(path, kind):
    assert file_type(path) == kind


@pytest.mark.parametrize(
    "method, status, kind, ranged, expected",
    [
        ("GET", 200, "page", False, True),
        ("GET", 201, "page", False, True),
        ("GET", 304, "page", False, True),
        ("HEAD", 200, "page", False, False),
        ("POST", 200, "page", False, False),
        ("GET", 301, "page", False, False),
        ("GET", 404, "page", False, False),
        ("GET", 200, "image", False, False),
        ("GET", 200, "page", True, False),
    ],
)
def test_is_page(method, status, kind, ranged, expected):
    assert is_page(method, status, kind, ranged) is expected


@pytest.mark.parametrize(
    "referrer, host, expected",
    [
        ("", "a.com", ""),
        ("-", "a.com", ""),
        ("https://www.Google.com/search?q=1", "a.com", "www.google.com"),
        ("http://news.ycombinator.com:8080/item", "a.com", "news.ycombinator.com"),
        ("https://a.com/other", "a.com", ""),
        ("android-app://com.slack/", "a.com", "com.slack"),
        ("example.org/path", "a.com", "example.org"),
        ("http://[::1/", "a.com", ""),
        ("not a url", "a.com", ""),
        ("https://%zz/", "a.com", ""),
        ("https://Bücher.de/", "a.com", "bücher.de"),
    ],
)
def test_referrer_host(referrer, host, expected):
    assert referrer_host(referrer, host) == expected


def test_strip_query():
    assert strip_query("/a/b?c=d#e") == "/a/b"
    assert strip_query("/a#x?y") == "/a"


def test_row_for_a_browser_pageview(enricher):
    row = as_dict(
        enricher.row(line(path="/post/?utm_source=x", referrer="https://www.google.com/"), "s1")
    )
    assert row["site_id"] == "s1" and row["path"] == "/post/" and row["file_type"] == "page"
    assert (
        row["is_page"] is True
        and row["status_class"] == "2xx"
        and row["referrer_host"] == "www.google.com"
    )
    assert (row["browser"], row["os"], row["device"]) == ("Chrome", "Windows", "desktop")
    assert (row["is_bot"], row["bot_reason"]) == (False, "")
    assert row["ts"] == datetime(2026, 3, 1, 12, 0, tzinfo=UTC) and row["log_source"] == "caddy"
    assert isinstance(row["visitor_id"], int) and 0 <= row["visitor_id"] < 2**64


def test_no_ip_and_no_raw_user_agent_in_row(enricher):
    row = enricher.row(line(), "s1")
    assert IP not in repr(row) and CHROME not in repr(row)


def test_device_types(enricher):
    row = as_dict(enricher.row(line(user_agent=IPHONE), "s1"))
    assert (row["os"], row["device"]) == ("iOS", "smartphone")
    assert as_dict(enricher.row(line(user_agent=""), "s1"))["device"] == "unknown"


@pytest.mark.parametrize(
    "user_agent, reason",
    [
        (GOOGLEBOT, "crawler-list"),
        ("python-requests/2.31.0", "crawler-list"),
        (CHROME, ""),
        (IPHONE, ""),
    ],
)
def test_bot_flag(enricher, user_agent, reason):
    row = as_dict(enricher.row(line(user_agent=user_agent), "s1"))
    assert row["is_bot"] is bool(reason)
    assert row["bot_reason"] == reason
    assert row["is_page"] is True  # bots are flagged apart, not folded into is_page


def test_device_detector_catches_what_the_list_misses():
    agents = AgentParser(is_crawler=lambda ua: False)
    agent = agents.parse(GOOGLEBOT)
    assert (agent.is_bot, agent.bot_reason, agent.browser) == (True, "device-detector", "Googlebot")


def test_agent_cache_parses_each_ua_once():
    calls = []
    real = AgentParser()

    def detect(ua):
        calls.append(ua)
        return real._detect(ua)

    agents = AgentParser(detect=detect)
    for _ in range(3):
        agents.parse(CHROME)
    assert calls == [CHROME]


def test_agent_cache_keeps_only_the_parsed_prefix():
    seen = []
    real = AgentParser()

    def detect(ua):
        seen.append(len(ua))
        return real._detect(ua)

    agents = AgentParser(detect=detect)
    # Huge user agents that differ only past the parsed prefix share one cache entry.
    for tail in ("a", "b", "c"):
        agents.parse(CHROME + " " * 2000 + tail * 60_000)
    assert seen == [1024]
    assert agents.cache_info().currsize == 1


def test_generic_names_are_not_browsers(agents):
    assert agents.parse("hello-random-junk-42/1.0").browser == ""
    assert agents.parse("x" * 5000).browser == ""


def test_visitor_id_stable_within_a_day_and_different_across_days_and_sites(enricher):
    morning = line(ts=datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC))
    evening = line(ts=datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC), path="/other")
    next_day = line(ts=datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC))
    vid = lambda ln, site="s1": as_dict(enricher.row(ln, site))["visitor_id"]  # noqa: E731
    assert vid(morning) == vid(evening)
    assert vid(morning) != vid(next_day)
    assert vid(morning) != vid(morning, "s2")
    assert vid(morning) != vid(replace(morning, remote_ip="198.51.100.24"))
    assert vid(morning) != vid(replace(morning, user_agent=IPHONE))


def test_visitor_id_uses_the_request_day_in_utc(enricher):
    from datetime import timedelta, timezone

    local = datetime(2026, 3, 2, 0, 30, tzinfo=timezone(timedelta(hours=2)))  # 2026-03-01 22:30 UTC
    row = as_dict(enricher.row(line(ts=local), "s1"))
    assert row["ts"] == datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
    assert row["visitor_id"] == as_dict(enricher.row(line(), "s1"))["visitor_id"]


def test_visitor_id_fields_are_length_prefixed():
    salt = b"k" * 32
    assert visitor_id(salt, "ab", "c", "d") != visitor_id(salt, "a", "bc", "d")
    assert visitor_id(salt, "s", "1.2.3.4", "ua") == visitor_id(salt, "s", "1.2.3.4", "ua")
    assert visitor_id(salt, "s", "1.2.3.4", "ua") != visitor_id(b"j" * 32, "s", "1.2.3.4", "ua")


# -- salts against a fake storage --------------------------------------------------------


class FakeStorage:
    def __init__(self, fail=False):
        self.rows_by_day = {}
        self.fail = fail
        self.inserts = 0

    def rows(self, sql, parameters=None):
        if self.fail:
            raise ConnectionError("down")
        found = sorted(self.rows_by_day.get(parameters["day"], []))
        return [{"salt": salt} for _, salt in found[:1]]

    def insert(self, table, rows, columns):
        assert table == "visitor_salts" and tuple(columns) == ("day", "salt")
        for day, salt in rows:
            self.inserts += 1
            self.rows_by_day.setdefault(day, []).append((self.inserts, salt))


def on_march_first() -> float:
    # Salts live a day past their own (services.intake.salts): fix the clock on the day.
    return datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()


def test_salt_created_once_then_cached_and_shared():
    storage = FakeStorage()
    first = SaltStore(storage, clock=on_march_first)
    day = date(2026, 3, 1)
    salt = first.salt(day)
    assert len(salt) == 32 and first.salt(day) == salt and storage.inserts == 1
    other_writer = SaltStore(storage, clock=on_march_first)
    assert other_writer.salt(day) == salt
    assert first.salt(date(2026, 3, 2)) != salt


def test_concurrent_writers_converge_on_the_earliest_salt():
    storage = FakeStorage()
    day = date(2026, 3, 1)
    storage.insert(
        "visitor_salts", [(day, (b"a" * 32).hex())], ("day", "salt")
    )  # the other writer won
    late = SaltStore(storage, random_bytes=lambda n: b"b" * n, clock=on_march_first)
    storage.insert("visitor_salts", [(day, (b"c" * 32).hex())], ("day", "salt"))
    assert late.salt(day) == b"a" * 32


def test_salt_storage_failure_is_retry_later(enricher):
    store = SaltStore(FakeStorage(fail=True), clock=on_march_first)
    with pytest.raises(SaltUnavailable) as caught:
        store.salt(date(2026, 3, 1))
    assert isinstance(caught.value, RetryLater)
    with pytest.raises(RetryLater):
        Enricher(store, AgentParser()).row(line(), "s1")
