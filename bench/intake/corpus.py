"""The benchmark's traffic: Bunny JSON log records, seeded, written in three shapes.

One pass over the generated records writes, line for line the same requests:

* ``lines.jsonl``   the bare JSON records (what ``file(..., JSONEachRow)`` reads);
* ``lines.syslog``  each record as Bunny forwards it: RFC 5424, LF-framed
                    (``<165>1 TS HOST BunnyCDN - - - {json}``);
* ``lines.log``     the same requests in Combined Log Format (what GoAccess reads).

Everything is drawn from ``random.Random(seed)``; only the clock moves: timestamps
span the hour before ``now_ms`` (so they are neither stale nor in the future when
they arrive), kept as offsets from it, so one seed gives the same traffic at any time.
Fields are those of reference/bunny.md section 3 (the Go reference's JSON record).
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Corpus", "Files", "make_agents", "records", "write"]

SPAN_MS = 59 * 60 * 1000  # the records cover the hour before the run, less a minute
VISITORS = 20_000  # distinct (ip, agent, country) visitors the requests come from
BOT_AGENT_SHARE = 0.25  # of distinct user agents
BOT_TRAFFIC_SHARE = 0.3  # of requests

# -- user agents --------------------------------------------------------------------

_SYSTEMS = [
    "Windows NT 10.0; Win64; x64",
    "Macintosh; Intel Mac OS X 10_15_7",
    "X11; Linux x86_64",
    "X11; Ubuntu; Linux x86_64",
    "Windows NT 6.1; Win64; x64",
]
_PHONES = ["SM-S918B", "SM-A546B", "Pixel 7", "Pixel 8 Pro", "M2101K6G", "CPH2451", "K"]
_IOS = ["17_4_1", "17_5", "16_7_8", "18_0", "18_1_1"]


def _browser(r: random.Random) -> str:
    kind = r.choices(
        ["chrome", "android", "safari_ios", "safari_mac", "firefox", "edge"], [40, 22, 15, 6, 10, 7]
    )[0]
    major = r.randint(110, 131)
    build = f"{major}.0.{r.randint(5000, 6800)}.{r.randint(0, 200)}"
    if kind == "chrome":
        return (
            f"Mozilla/5.0 ({r.choice(_SYSTEMS)}) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{build} Safari/537.36"
        )
    if kind == "android":
        return (
            f"Mozilla/5.0 (Linux; Android {r.randint(10, 14)}; {r.choice(_PHONES)}) "
            f"AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{build} Mobile Safari/537.36"
        )
    if kind == "safari_ios":
        ios = r.choice(_IOS)
        device = r.choice(["iPhone; CPU iPhone OS", "iPad; CPU OS"])
        return (
            f"Mozilla/5.0 ({device} {ios} like Mac OS X) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) Version/{ios.split('_')[0]}.{r.randint(0, 6)} "
            f"Mobile/15E148 Safari/604.1"
        )
    if kind == "safari_mac":
        return (
            f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
            f"(KHTML, like Gecko) Version/{r.randint(15, 18)}.{r.randint(0, 6)} "
            f"Safari/605.1.15"
        )
    if kind == "firefox":
        ff = r.randint(115, 133)
        system = r.choice(_SYSTEMS).replace("10_15_7", "10.15")
        return f"Mozilla/5.0 ({system}; rv:{ff}.0) Gecko/20100101 Firefox/{ff}.0"
    return (
        f"Mozilla/5.0 ({r.choice(_SYSTEMS[:1])}) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{build} Safari/537.36 Edg/{major}.0.{r.randint(1000, 2900)}.{r.randint(0, 99)}"
    )


_BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/{v}.{w}; "
    "+https://openai.com/gptbot)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "DuckDuckBot/1.{v}; (+http://duckduckgo.com/duckduckbot.html)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Twitterbot/1.0",
    "curl/8.{v}.{w}",
    "python-requests/2.{v}.{w}",
    "Go-http-client/1.1",
    "Wget/1.21.{v}",
    "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/12{v}.0.0.0 Safari/537.36",
    "Feedly/1.0 (+http://www.feedly.com/fetcher.html; {v} subscribers)",
    "Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com)",
    "ClaudeBot/1.0; +claudebot@anthropic.com",
    "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)",
]


def make_agents(count: int, r: random.Random) -> list[tuple[str, bool]]:
    """``count`` distinct user agents as ``(ua, is_bot)``, about a quarter of them bots."""
    bots = max(1, round(count * BOT_AGENT_SHARE))
    seen: dict[str, bool] = {}
    for template in itertools.cycle(_BOTS):
        if sum(seen.values()) >= bots:
            break
        seen.setdefault(template.format(v=r.randint(0, 30), w=r.randint(0, 9)), True)
    while len(seen) < count:
        seen.setdefault(_browser(r), False)
    return list(seen.items())


# -- sites, paths, referrers -------------------------------------------------------------

_SLUGS = [
    "hello-world",
    "release-notes",
    "why-static",
    "deploying",
    "caching",
    "privacy",
    "self-hosting",
    "benchmarks",
    "the-road-ahead",
    "year-in-review",
]
_PAGES = [
    "/",
    "/about/",
    "/contact/",
    "/blog/",
    "/docs/",
    "/docs/install.html",
    "/docs/config.html",
    "/pricing/",
    "/changelog/",
] + [f"/blog/{s}/" for s in _SLUGS]
_ASSETS = [
    ("/assets/app.3f9c2b1e.css", 18_000, True),
    ("/assets/app.77ad01fe.js", 92_000, True),
    ("/assets/vendor.1c0de9aa.js", 240_000, True),
    ("/img/hero.webp", 140_000, False),
    ("/img/logo.svg", 4_200, True),
    ("/fonts/inter-var.woff2", 98_000, False),
    ("/favicon.ico", 15_000, False),
    ("/manifest.webmanifest", 600, True),
    ("/assets/app.77ad01fe.js.map", 310_000, True),
]
_DOWNLOADS = ["/files/talk-slides.pdf", "/media/demo.mp4"]
_BOT_PATHS = [
    "/robots.txt",
    "/sitemap.xml",
    "/feed.xml",
    "/index.xml",
    "/.env",
    "/wp-login.php",
    "/.git/config",
]
_QUERIES = [
    "?utm_source=newsletter&utm_medium=email",
    "?utm_source=hn",
    "?ref=producthunt",
    "?page=2",
    "?q=deploy",
    "?lang=de",
    "?fbclid=IwAR2x",
]
_REFERRERS = [
    "https://www.google.com/",
    "https://duckduckgo.com/",
    "https://news.ycombinator.com/",
    "https://t.co/x1Yz",
    "https://github.com/",
    "https://www.reddit.com/r/selfhosted/",
    "https://www.bing.com/",
    "https://lobste.rs/",
]
_COUNTRIES = [
    "DE",
    "US",
    "FR",
    "GB",
    "NL",
    "IN",
    "BR",
    "JP",
    "CA",
    "PL",
    "SE",
    "ES",
    "IT",
    "CH",
    "AT",
    "AU",
    "KR",
    "CN",
    "RU",
    "UA",
    "FI",
    "NO",
    "DK",
    "BE",
    "CZ",
    "MX",
]
_EDGES = ["DE", "UK", "NY", "LA", "SG", "SE", "FR", "WA", "SYD", "JH", "BR"]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def _ip(r: random.Random) -> str:
    # Anonymised as Bunny does by default: the last IPv4 octet, the IPv6 host half zeroed.
    if r.random() < 0.8:
        return f"{r.randint(2, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.0"
    return (
        f"2a0{r.randint(0, 9)}:{r.getrandbits(16):x}:{r.getrandbits(16):x}:{r.getrandbits(16):x}::"
    )


def _zipf(count: int, s: float = 1.1) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank**s) for rank in range(1, count + 1)))


@dataclass(frozen=True)
class Corpus:
    """What to generate: how many lines, for which hostnames, from which seed."""

    lines: int
    hosts: Sequence[str]
    seed: int = 1
    agents: int = 300
    now_ms: int = 0  # 0: the clock at generation time


def _request(r: random.Random, bot: bool, host: str) -> tuple[str, int, str, str, bool]:
    """(path and query, body bytes, referrer, range header, compressible)."""
    roll = r.random()
    if bot and roll < 0.35:
        return r.choice(_BOT_PATHS), r.randint(200, 40_000), "", "", True
    if roll < 0.45:
        page = r.choice(_PAGES)
        if r.random() < 0.12:
            page += r.choice(_QUERIES)
        referrer = r.choice(_REFERRERS) if not bot and r.random() < 0.35 else ""
        return page, r.randint(6_000, 60_000), referrer, "", True
    if roll < 0.985:
        path, size, text = r.choice(_ASSETS)
        return path, size, "" if bot else f"https://{host}/", "", text
    start = r.choice([0, 0, 1_048_576, 5_242_880])
    return r.choice(_DOWNLOADS), 1_048_576, "", f"bytes={start}-{start + 1_048_575}", False


def _status(r: random.Random, path: str, range_header: str) -> int:
    if range_header:
        return 206
    if path in ("/.env", "/wp-login.php", "/.git/config"):
        return 404
    roll = r.random()
    return 200 if roll < 0.86 else 304 if roll < 0.95 else 404 if roll < 0.985 else 301


def records(corpus: Corpus) -> Iterator[dict]:
    """The Bunny JSON records, in time order (the same ones for the same corpus)."""
    r = random.Random(corpus.seed)
    agents = make_agents(corpus.agents, r)
    browsers = [a for a in agents if not a[1]]
    bots = [a for a in agents if a[1]]
    browser_w, bot_w = _zipf(len(browsers)), _zipf(len(bots), 0.9)
    visitors = []
    for _ in range(VISITORS):
        bot = r.random() < BOT_TRAFFIC_SHARE
        ua = (
            r.choices(bots, cum_weights=bot_w)
            if bot
            else r.choices(browsers, cum_weights=browser_w)
        )
        visitors.append((ua[0][0], bot, _ip(r), r.choice(_COUNTRIES)))
    # Make sure every agent appears: the first requests come from one visitor per agent.
    firsts = [(ua, bot, _ip(r), r.choice(_COUNTRIES)) for ua, bot in agents]
    site_w = _zipf(len(corpus.hosts), 0.8)
    visitor_w = _zipf(VISITORS, 0.7)
    now_ms = corpus.now_ms or int(time.time() * 1000)
    start_ms = now_ms - 60_000 - SPAN_MS
    step = SPAN_MS / max(1, corpus.lines)
    for i in range(corpus.lines):
        site = r.choices(range(len(corpus.hosts)), cum_weights=site_w)[0]
        host = corpus.hosts[site]
        ua, bot, ip, country = (
            firsts[i] if i < len(firsts) else r.choices(visitors, cum_weights=visitor_w)[0]
        )
        path, body, referrer, range_header, text = _request(r, bot, host)
        status = _status(r, path, range_header)
        if status in (301, 304):
            body = 0
        gzip = round(r.uniform(2.5, 6.0), 2) if text and body else 0.0
        yield {
            "ServerId": r.randint(100, 999),
            "IsValid": True,
            "PullZoneId": 1_000_000 + site,
            "IsSSL": True,
            "Host": host,
            "Protocol": "HTTP/2.0" if r.random() < 0.7 else "HTTP/1.1",
            "Scheme": "https",
            "UserAgent": ua,
            "RequestId": f"{i:08x}{r.getrandbits(96):024x}",  # unique by its prefix
            "HeaderRange": range_header,
            "Country": country,
            "PathAndQuery": path,
            "ServerZone": r.choice(_EDGES),
            "Status": status,
            "BytesSent": body + r.randint(250, 650),
            "BodyBytesSent": body,
            "Timestamp": start_ms + int(i * step) + r.randint(0, 999),
            "GzipRatio": gzip,
            "Cached": r.random() < 0.9,
            "RemoteIp": ip,
            "Referer": referrer,
        }


# -- the three shapes ------------------------------------------------------------------


class _Clock:
    """Formats the syslog and CLF times of millisecond timestamps, one strftime a second."""

    def __init__(self):
        self._second = -1
        self._iso = self._clf = ""

    def times(self, ms: int) -> tuple[str, str]:
        second = ms // 1000
        if second != self._second:
            t = time.gmtime(second)
            self._second = second
            self._iso = time.strftime("%Y-%m-%dT%H:%M:%S", t)
            self._clf = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:" + time.strftime(
                "%H:%M:%S +0000", t
            )
        return f"{self._iso}.{ms % 1000:03d}Z", self._clf


def syslog_line(record: dict, payload: str, iso: str) -> str:
    """One record as Bunny forwards it over TCP: RFC 5424, one LF-terminated line."""
    return f"<165>1 {iso} edge{record['ServerId']}.b-cdn.net BunnyCDN - - - {payload}\n"


def clf_line(record: dict, clf_time: str) -> str:
    """The same request in Combined Log Format (Bunny records carry no method: GET)."""
    referrer = record["Referer"] or "-"
    return (
        f'{record["RemoteIp"]} - - [{clf_time}] "GET {record["PathAndQuery"]} '
        f'{record["Protocol"]}" {record["Status"]} {record["BytesSent"]} '
        f'"{referrer}" "{record["UserAgent"]}"\n'
    )


@dataclass(frozen=True)
class Files:
    """The written files and what is in them."""

    jsonl: Path
    syslog: Path
    clf: Path
    lines: int
    per_host: dict[str, int]
    distinct_agents: int
    first_ms: int
    last_ms: int


def write(corpus: Corpus, directory: Path) -> Files:
    """Write the corpus in its three shapes under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "lines.jsonl", directory / "lines.syslog", directory / "lines.log"
    per_host = dict.fromkeys(corpus.hosts, 0)
    agents: set[str] = set()
    first = last = 0
    clock = _Clock()
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    with (
        open(paths[0], "w", encoding="utf-8", buffering=1 << 20) as jsonl,
        open(paths[1], "w", encoding="utf-8", buffering=1 << 20) as syslog,
        open(paths[2], "w", encoding="utf-8", buffering=1 << 20) as clf,
    ):
        for record in records(corpus):
            payload = dumps(record)
            iso, clf_time = clock.times(record["Timestamp"])
            jsonl.write(payload + "\n")
            syslog.write(syslog_line(record, payload, iso))
            clf.write(clf_line(record, clf_time))
            per_host[record["Host"]] += 1
            agents.add(record["UserAgent"])
            last = record["Timestamp"]
            first = first or last
    return Files(*paths, corpus.lines, per_host, len(agents), first, last)
