"""Rows for the query room's chDB tests: fixed instants, exact expected numbers."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from services.core.schema import REQUEST_COLUMNS

HOSTILE = "'; DROP TABLE requests; --"
# Fresh ids per run: the engine is shared by every test of the session.
SA, SB, SC, SD, SE = (secrets.token_hex(8) for _ in range(5))
NOW = datetime(2026, 10, 26, 10, 0, tzinfo=UTC)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def request_row(site, ts, path="/", **overrides):
    row = {
        "site_id": site, "ts": ts, "host": "blog.localhost", "method": "GET", "path": path,
        "status": 200, "status_class": "2xx", "bytes": 100, "file_type": "page", "is_page": True,
        "referrer_host": "", "browser": "Chrome", "os": "Linux", "device": "desktop",
        "country": "DE", "is_bot": False, "bot_reason": "", "visitor_id": 1,
        "log_source": "caddy", "request_id": secrets.token_hex(8),
    }  # fmt: skip
    row.update(overrides)
    return [row[column] for column in REQUEST_COLUMNS]


def asset(**overrides):
    return {"file_type": "stylesheet", "is_page": False} | overrides


def bot(**overrides):
    return {"is_bot": True, "bot_reason": "ua", "browser": "", "country": ""} | overrides


SITE_A_ROWS = [
    request_row(
        SA, utc(2026, 10, 25, 9, 0), "/", bytes=1000, visitor_id=1, referrer_host="news.example"
    ),
    request_row(SA, utc(2026, 10, 25, 9, 5), "/style.css", bytes=300, visitor_id=1, **asset()),
    request_row(SA, utc(2026, 10, 25, 9, 10), "/about", bytes=800, visitor_id=1),
    request_row(
        SA,
        utc(2026, 10, 25, 23, 30),
        "/",
        bytes=1200,
        visitor_id=2,
        browser="Firefox",
        os="Windows",
        country="US",
        referrer_host="search.example",
    ),  # fmt: skip
    request_row(
        SA,
        utc(2026, 10, 24, 22, 30),
        "/about",
        bytes=500,
        visitor_id=3,
        browser="Safari",
        os="iOS",
        device="smartphone",
        country="FR",
    ),  # fmt: skip
    request_row(SA, utc(2026, 10, 25, 10, 0), "/", bytes=700, visitor_id=4, **bot()),
    request_row(
        SA,
        utc(2026, 10, 26, 9, 0),
        "/robots.txt",
        bytes=50,
        visitor_id=4,
        **bot(file_type="other", is_page=False),
    ),  # fmt: skip
    request_row(
        SA,
        utc(2026, 10, 26, 9, 30),
        "/missing",
        bytes=150,
        visitor_id=5,
        status=404,
        status_class="4xx",
        is_page=False,
    ),  # fmt: skip
    request_row(SA, utc(2026, 10, 10, 12, 0), "/", bytes=400, visitor_id=6),
    # Range edges: the 30d range starts at 2026-09-27T00:00Z (inclusive); every range
    # from the fixed clock in UTC ends at 2026-10-27T00:00Z (exclusive).
    request_row(SA, utc(2026, 9, 27, 0, 0), "/edge", bytes=40, visitor_id=9),
    request_row(SA, utc(2026, 9, 27) - timedelta(milliseconds=1), "/early", bytes=10_000),
    request_row(SA, utc(2026, 10, 27, 0, 0), "/late", bytes=10_000, visitor_id=10),
]
# Another user's site, at the same instants and paths: must never be counted for SA.
SITE_B_ROWS = [
    request_row(SB, utc(2026, 10, 25, 9, 0), "/", bytes=99_999, visitor_id=100),
    request_row(SB, utc(2026, 10, 25, 23, 30), "/", bytes=99_999, visitor_id=101),
    request_row(SB, utc(2026, 10, 26, 9, 0), "/x.png", bytes=99_999, **asset(file_type="image")),
]
# Ties: order by pageviews, then requests (both descending), then value.
SITE_E_ROWS = [
    request_row(SE, utc(2026, 10, 25, 12, 0), "/d"),
    request_row(SE, utc(2026, 10, 25, 12, 0), "/0", status=404, status_class="4xx", is_page=False),
    *(request_row(SE, utc(2026, 10, 25, 12, 0), "/c", status=404, is_page=False) for _ in range(3)),
    request_row(SE, utc(2026, 10, 25, 12, 0), "/b"),
    request_row(SE, utc(2026, 10, 25, 12, 0), "/b", method="HEAD", is_page=False),
    request_row(SE, utc(2026, 10, 25, 12, 0), "/a"),
]
# Berlin's fall-back night: 02:30 CEST, then 02:30 CET (twice, one returning visitor).
SITE_C_ROWS = [
    request_row(SC, utc(2026, 10, 25, 0, 30), "/", visitor_id=1),
    request_row(SC, utc(2026, 10, 25, 1, 30), "/", visitor_id=1),
    request_row(SC, utc(2026, 10, 25, 1, 40), "/", visitor_id=2),
]


def metrics(pageviews, requests, bytes_, visitors):
    return {"pageviews": pageviews, "requests": requests, "bytes": bytes_, "visitors": visitors}


ZERO = metrics(0, 0, 0, 0)
WEEK_HUMANS = metrics(4, 6, 3950, 3)
