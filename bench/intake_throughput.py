"""Throughput of the intake's per-line hot path, as ratios to ``json.loads``.

Generates realistic Caddy JSON access-log lines (deterministic for a seed) and times,
best of ``--repeat`` runs each, with ``time.perf_counter``:

1. ``json_loads``     ``json.loads`` of every line: the irreducible cost of the format;
2. ``parse``          ``parse_caddy`` alone;
3. ``enrich_warm``    ``parse_caddy`` + the real ``Enricher`` (device-detector and the
                      crawler list behind ``AgentParser``'s cache), every UA already cached;
4. ``enrich_cold``    the same with every cache of the K distinct UAs empty (a fresh
                      ``AgentParser`` and device-detector's own UA cache cleared), so each
                      UA is seen for the first time; the cost of a first sight is the
                      time spent inside ``AgentParser``'s K cache misses, divided by K;
5. ``clickhouse``     inserting the enriched rows into a real embedded ClickHouse
                      (``open_storage("chdb://<tmpdir>")`` + ``migrate``) in batches of 5000
                      (``--no-clickhouse`` skips it).

Every ratio is ``rate / json_loads rate`` from the same run, so it tracks the code and
not the (shared, noisy, 2-core) machine. No number in here is a target. The ClickHouse
step opens chDB, which allows one engine per process: run ``main`` with it once per process.

    .venv/bin/python bench/intake_throughput.py [--lines N] [--distinct-agents K]
        [--repeat R] [--seed S] [--no-clickhouse] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date

from services.core.schema import REQUEST_COLUMNS
from services.intake.agents import AgentParser
from services.intake.enrich import Enricher
from services.intake.parse import parse_caddy

BATCH_ROWS = 5000  # the intake sink's default batch size
AGENT_CACHE_SIZE = 20_000  # AgentParser's default LRU size
START_TS = 1_767_225_600.0  # 2026-01-01T00:00:00Z; lines span the following two days
SPAN_SECONDS = 2 * 86_400

# -- user agents -------------------------------------------------------------------

_WIN = ["Windows NT 10.0; Win64; x64", "Windows NT 10.0; WOW64", "Windows NT 6.1; Win64; x64"]
_MAC = ["Macintosh; Intel Mac OS X 10_15_7", "Macintosh; Intel Mac OS X 14_4_1"]
_LINUX = ["X11; Linux x86_64", "X11; Ubuntu; Linux x86_64", "X11; Fedora; Linux x86_64"]
_ANDROID_MODELS = [
    "SM-S918B", "SM-A546B", "SM-G991B", "Pixel 7", "Pixel 8 Pro", "M2101K6G", "CPH2451",
    "moto g54 5G", "2201116SG", "RMX3630", "SM-T870", "K",
]  # fmt: skip


def _chrome(r: random.Random) -> str:
    major = r.randint(109, 131)
    system = r.choice(_WIN + _MAC + _LINUX)
    return (
        f"Mozilla/5.0 ({system}) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{major}.0.{r.randint(5000, 6800)}.{r.randint(0, 200)} Safari/537.36"
    )


def _chrome_android(r: random.Random) -> str:
    major = r.randint(109, 131)
    return (
        f"Mozilla/5.0 (Linux; Android {r.randint(10, 14)}; {r.choice(_ANDROID_MODELS)}) "
        f"AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.{r.randint(5000, 6800)}"
        f".{r.randint(0, 200)} Mobile Safari/537.36"
    )


def _samsung(r: random.Random) -> str:
    return (
        f"Mozilla/5.0 (Linux; Android {r.randint(11, 14)}; {r.choice(_ANDROID_MODELS)}) "
        f"AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/{r.randint(19, 26)}.0 "
        f"Chrome/{r.randint(110, 125)}.0.0.0 Mobile Safari/537.36"
    )


def _safari_ios(r: random.Random) -> str:
    major, minor = r.randint(15, 18), r.randint(0, 6)
    device = r.choice(["iPhone; CPU iPhone OS", "iPad; CPU OS"])
    return (
        f"Mozilla/5.0 ({device} {major}_{minor} like Mac OS X) AppleWebKit/605.1.15 "
        f"(KHTML, like Gecko) Version/{major}.{minor} Mobile/15E148 Safari/604.1"
    )


def _safari_mac(r: random.Random) -> str:
    major, minor = r.randint(15, 18), r.randint(0, 6)
    return (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        f"(KHTML, like Gecko) Version/{major}.{minor} Safari/605.1.15"
    )


def _firefox(r: random.Random) -> str:
    version = r.randint(102, 133)
    system = r.choice(
        [s.replace("; WOW64", "") for s in _WIN] + ["Macintosh; Intel Mac OS X 10.15"] + _LINUX
    )
    return f"Mozilla/5.0 ({system}; rv:{version}.0) Gecko/20100101 Firefox/{version}.0"


def _edge(r: random.Random) -> str:
    major = r.randint(110, 131)
    return (
        f"Mozilla/5.0 ({r.choice(_WIN)}) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{major}.0.0.0 Safari/537.36 "
        f"Edg/{major}.0.{r.randint(1500, 2900)}.{r.randint(0, 99)}"
    )


def _in_app(r: random.Random) -> str:
    major = r.randint(16, 18)
    app = r.choice(
        [
            f"Instagram {r.randint(300, 350)}.0.0.{r.randint(10, 40)}.{r.randint(100, 120)} "
            f"(iPhone14,{r.randint(2, 8)}; iOS {major}_1; en_US; en)",
            f"[FBAN/FBIOS;FBAV/{r.randint(440, 480)}.0.0.{r.randint(10, 60)}.{r.randint(100, 120)};"
            f"FBBV/{r.randint(500000000, 600000000)};FBDV/iPhone13,2;FBMD/iPhone;FBSN/iOS;"
            f"FBSV/{major}.1;FBSS/3;FBCR/;FBID/phone;FBLC/en_US;FBOP/5]",
        ]
    )
    return (
        f"Mozilla/5.0 (iPhone; CPU iPhone OS {major}_1 like Mac OS X) AppleWebKit/605.1.15 "
        f"(KHTML, like Gecko) Mobile/15E148 {app}"
    )


_BOT_TEMPLATES = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/{v}.0.{b}.{p} Mobile Safari/537.36 (compatible; Googlebot/2.1; "
    "+http://www.google.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
    "+http://www.bing.com/bingbot.htm) Chrome/{v}.0.{b}.{p} Safari/537.36",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.{p}; "
    "+https://openai.com/gptbot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; "
    "+claudebot@anthropic.com)",
    "Mozilla/5.0 (compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Twitterbot/1.0",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "curl/{v2}.{b2}.{p2}",
    "Wget/1.{b2}.{p2}",
    "python-requests/2.{b2}.{p2}",
    "Go-http-client/{g}",
    "Feedly/1.0 (+http://www.feedly.com/fetcher.html; {p} subscribers; like FeedFetcher-Google)",
    "NetNewsWire (RSS Reader; https://netnewswire.com/)",
    "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/{v}.0.{b}.{p} Safari/537.36",
    "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)",
]


def _bot(r: random.Random) -> str:
    return r.choice(_BOT_TEMPLATES).format(
        v=r.randint(100, 131),
        b=r.randint(5000, 6800),
        p=r.randint(0, 200),
        v2=r.randint(7, 8),
        b2=r.randint(0, 30),
        p2=r.randint(0, 9),
        g=r.choice(["1.1", "2.0"]),
    )


# Browser families, weighted by their share of distinct UAs.
_BROWSERS: list[tuple[Callable[[random.Random], str], float]] = [
    (_chrome, 30),
    (_chrome_android, 14),
    (_safari_ios, 14),
    (_safari_mac, 4),
    (_firefox, 8),
    (_edge, 5),
    (_samsung, 3),
    (_in_app, 2),
]
BOT_AGENT_SHARE = 0.2  # of distinct UAs
BOT_TRAFFIC_SHARE = 0.3  # of requests


def _distinct(count: int, make: Callable[[], str], into: dict[str, bool], bot: bool) -> None:
    target = len(into) + count
    for _ in range(1000 * count + 10_000):
        if len(into) >= target:
            return
        into.setdefault(make(), bot)
    raise ValueError(f"cannot make {count} distinct user agents")


def make_agents(count: int, r: random.Random) -> list[tuple[str, bool]]:
    """``count`` distinct (user agent, meant as a bot) pairs; both kinds when ``count >= 2``."""
    bots = min(max(round(count * BOT_AGENT_SHARE), 1), count - 1) if count >= 2 else 0
    makers, weights = zip(*_BROWSERS, strict=True)
    agents: dict[str, bool] = {}
    _distinct(count - bots, lambda: r.choices(makers, weights)[0](r), agents, False)
    _distinct(bots, lambda: _bot(r), agents, True)
    return list(agents.items())


# -- lines -------------------------------------------------------------------------

SITES = {
    "alices-blog.sites.example.net": "s_alice",
    "docs.example.org": "s_docs",
    "www.example.com": "s_example",
    "example.com": "s_example",
    "portfolio.sites.example.net": "s_folio",
}
_HOST_WEIGHTS = [40, 25, 20, 5, 10]
_SLUGS = [
    "hello-world", "why-static-sites", "self-hosting-notes", "privacy-analytics",
    "clickhouse-for-logs", "a-year-in-review", "rust-vs-go", "python-packaging",
    "caddy-tips", "git-push-to-deploy", "on-caching", "writing-better-docs",
]  # fmt: skip
_PAGES = (
    ["/", "/about/", "/blog/", "/contact/", "/projects/", "/tags/python/", "/index.html"]
    + [f"/blog/{2020 + i % 6}/{s}/" for i, s in enumerate(_SLUGS)]
    + [f"/docs/{s}.html" for s in _SLUGS[:6]]
    + [f"/blog/page/{n}/" for n in range(2, 6)]
)
_ASSETS = [
    "/assets/css/main.3f9a1c.css", "/assets/js/app.8d2e41.js", "/assets/js/vendor.77aa0b.mjs",
    "/img/hero.webp", "/img/avatar.jpg", "/img/logo.svg", "/favicon.ico",
    "/apple-touch-icon.png", "/fonts/inter-var.woff2", "/fonts/jetbrains-mono.woff2",
    "/site.webmanifest", "/assets/js/app.8d2e41.js.map", "/img/diagram-1.png",
]  # fmt: skip
_RARE = ["/files/talk-slides.pdf", "/media/demo.mp4", "/downloads/tool-1.2.0.tar.gz"]
_BOT_PATHS = ["/robots.txt", "/sitemap.xml", "/feed.xml", "/index.xml", "/.env", "/wp-login.php"]
_QUERIES = [
    "?utm_source=newsletter&utm_medium=email", "?utm_source=mastodon", "?ref=producthunt",
    "?page=2", "?q=clickhouse", "?v=1736000000", "?fbclid=IwAR2x9kQ7Zt0cYb3", "?lang=de",
]  # fmt: skip
_REFERRERS = [
    "https://www.google.com/", "https://duckduckgo.com/", "https://www.bing.com/",
    "https://news.ycombinator.com/", "https://t.co/aB3dE9xYz1", "https://lobste.rs/",
    "https://www.reddit.com/r/selfhosted/comments/1abcde/", "android-app://com.google.android.gm/",
    "https://mastodon.social/@someone/111222333444555666", "https://github.com/example/repo",
    "https://search.brave.com/",
]  # fmt: skip
_LANGS = ["en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9", "en-GB,en;q=0.8"]
_TYPES = {
    ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".webp": "image/webp", ".jpg": "image/jpeg",
    ".svg": "image/svg+xml", ".ico": "image/vnd.microsoft.icon", ".png": "image/png",
    ".woff2": "font/woff2", ".pdf": "application/pdf", ".mp4": "video/mp4",
    ".xml": "application/xml", ".txt": "text/plain; charset=utf-8", ".map": "application/json",
    ".gz": "application/gzip", ".webmanifest": "application/manifest+json",
}  # fmt: skip


def _ip(r: random.Random) -> str:
    if r.random() < 0.2:
        a, b, c = (r.randrange(65536) for _ in range(3))
        return f"2001:db8:{a:x}:{b:x}::{c:x}"
    return f"{r.randint(1, 223)}.{r.randrange(256)}.{r.randrange(256)}.{r.randint(1, 254)}"


def _etag(r: random.Random) -> str:
    return f'"tp{r.randrange(36**6)}"'


def _path(r: random.Random, bot: bool) -> tuple[str, bool]:
    """A request URI and whether it is a page."""
    roll = r.random()
    if bot and roll < 0.25:
        return r.choice(_BOT_PATHS), False
    if roll < (0.7 if bot else 0.4):
        path = r.choice(_PAGES)
        if r.random() < 0.12:
            path += r.choice(_QUERIES)
        return path, True
    if roll < 0.97:
        path = r.choice(_ASSETS)
        return (path + "?v=1736000000" if r.random() < 0.1 else path), False
    return r.choice(_RARE), False


def _status(r: random.Random, path: str, method: str) -> tuple[int, str]:
    """Status and, for a range request, the Range header."""
    if path in ("/.env", "/wp-login.php"):
        return 404, ""
    if path.startswith("/media/") and r.random() < 0.7:
        return 206, f"bytes={r.randrange(0, 10**6)}-"
    roll = r.random()
    if method == "POST":
        return 405, ""
    if roll < 0.82:
        return 200, ""
    if roll < 0.93:
        return 304, ""
    if roll < 0.97:
        return 404, ""
    if roll < 0.99:
        return 308, ""
    return r.choice([403, 500, 502]), ""


def _platform(ua: str) -> str:
    for marker, name in (("Android", "Android"), ("Mac OS", "macOS"), ("Linux", "Linux")):
        if marker in ua:
            return name
    return "Windows"


def _headers(r: random.Random, ua: str, bot: bool, page: bool, host: str, h2: bool) -> dict:
    headers = {"User-Agent": [ua]}
    if bot:
        headers["Accept"] = ["*/*"]
        if r.random() < 0.5:
            headers["Accept-Encoding"] = ["gzip"]
    else:
        headers["Accept"] = [
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
            if page
            else "*/*"
        ]
        headers["Accept-Encoding"] = ["gzip, deflate, br, zstd"]
        headers["Accept-Language"] = [r.choice(_LANGS)]
        headers["Sec-Fetch-Dest"] = ["document" if page else "empty"]
        headers["Sec-Fetch-Mode"] = ["navigate" if page else "no-cors"]
        headers["Sec-Fetch-Site"] = ["none" if page else "same-origin"]
        if page:
            headers["Upgrade-Insecure-Requests"] = ["1"]
        if "Chrome/" in ua and r.random() < 0.8:
            headers["Sec-Ch-Ua"] = ['"Chromium";v="124", "Not-A.Brand";v="99"']
            headers["Sec-Ch-Ua-Mobile"] = ["?1" if "Mobile" in ua else "?0"]
            headers["Sec-Ch-Ua-Platform"] = [f'"{_platform(ua)}"']
        if r.random() < 0.1:
            headers["Cookie"] = ["REDACTED"]  # Caddy redacts cookies in its logs
        if r.random() < 0.3:
            headers["If-None-Match"] = [_etag(r)]
    if not h2:
        headers["Connection"] = ["keep-alive"]
    # Referrers: external ones on pages, self-referrals on assets and internal clicks.
    roll = r.random()
    if not page and not bot and roll < 0.9:
        headers["Referer"] = [f"https://{host}/"]
    elif page and roll < 0.35:
        headers["Referer"] = [r.choice(_REFERRERS)]
    elif page and roll < 0.6:
        headers["Referer"] = [f"https://{host}{r.choice(_PAGES)}"]
    items = list(headers.items())
    r.shuffle(items)  # Caddy writes Go map order: random
    return dict(items)


def _line(r: random.Random, ts: float, ua: str, bot: bool, host: str, ip: str) -> bytes:
    path, page = _path(r, bot)
    method = "HEAD" if r.random() < 0.02 else "POST" if r.random() < 0.003 else "GET"
    status, range_header = _status(r, path, method)
    h2 = not bot and r.random() < 0.7
    headers = _headers(r, ua, bot, page, host, h2)
    if range_header:
        headers["Range"] = [range_header]
    extension = os.path.splitext(path.partition("?")[0])[1]
    size = 0 if status in (304, 308, 404) or method == "HEAD" else r.randint(200, 250_000)
    resp = {"Server": ["Caddy"]}
    if status < 300 or status == 304:
        resp["Etag"] = [_etag(r)]
        resp["Last-Modified"] = ["Sat, 28 Dec 2025 05:53:33 GMT"]
    if status < 300:
        resp["Content-Type"] = [_TYPES.get(extension, "text/html; charset=utf-8")]
        resp["Accept-Ranges"] = ["bytes"]
        resp["Content-Length"] = [str(size)]
        resp["Vary"] = ["Accept-Encoding"]
    request = {
        "remote_ip": ip,
        "remote_port": str(r.randint(1024, 65535)),
        "proto": "HTTP/2.0" if h2 else "HTTP/1.1",
        "method": method,
        "host": host,
        "uri": path,
        "headers": headers,
    }
    if h2:
        request["tls"] = {
            "resumed": r.random() < 0.3,
            "version": 772,
            "cipher_suite": 4865,
            "proto": "h2",
            "server_name": host,
        }
    record = {
        "level": "error" if status >= 400 else "info",
        "ts": ts,
        "logger": "http.log.access.log0",
        "msg": "handled request",
        "request": request,
        "user_id": "",
        "duration": round(r.uniform(0.00003, 0.004), 9),
        "size": size,
        "status": status,
        "resp_headers": resp,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def make_lines(count: int, agents: Sequence[tuple[str, bool]], seed: int) -> list[bytes]:
    """``count`` Caddy access-log lines in time order; every agent appears at least once.

    Within browsers and within bots the UAs are Zipf-distributed (a few dominate, as in
    real traffic); bots make ``BOT_TRAFFIC_SHARE`` of requests when both kinds exist.
    """
    if count < len(agents):
        raise ValueError("need at least as many lines as distinct agents")
    r = random.Random(seed)
    pools = {kind: [a for a in agents if a[1] is kind] for kind in (False, True)}
    zipf = {kind: [1 / (i + 1) for i in range(len(pool))] for kind, pool in pools.items()}
    picks = list(agents)  # each agent once, then the mix
    for _ in range(count - len(agents)):
        bot = r.random() < BOT_TRAFFIC_SHARE if pools[False] and pools[True] else bool(pools[True])
        picks.append(r.choices(pools[bot], zipf[bot])[0])
    r.shuffle(picks)
    visitors = [_ip(r) for _ in range(max(1, count // 8))]
    hosts = list(SITES)
    step = SPAN_SECONDS / count
    lines = []
    for i, (ua, bot) in enumerate(picks):
        ts = round(START_TS + i * step + r.uniform(0, step), 7)
        host = r.choices(hosts, _HOST_WEIGHTS)[0]
        lines.append(_line(r, ts, ua, bot, host, r.choice(visitors)))
    return lines


# -- measurements ------------------------------------------------------------------


class FixedSalts:
    """A salt store that never asks ClickHouse: the same 32 bytes every day."""

    _SALT = bytes(range(32))

    def salt(self, day: date) -> bytes:
        return self._SALT


def run_loads(lines: Sequence[bytes]) -> None:
    loads = json.loads
    for raw in lines:
        loads(raw)


def run_parse(lines: Sequence[bytes]) -> None:
    parse = parse_caddy
    for raw in lines:
        parse(raw)


def run_enrich(lines: Sequence[bytes], enricher: Enricher) -> list[tuple]:
    parse, row, sites = parse_caddy, enricher.row, SITES
    rows = []
    append = rows.append
    for raw in lines:
        line = parse(raw)
        append(row(line, sites[line.host]))
    return rows


class TimedAgentParser(AgentParser):
    """The real parser, also summing the time of its cache misses (first sights)."""

    def __init__(self, **kwargs):
        self.miss_seconds = 0.0
        super().__init__(**kwargs)

    def _parse(self, user_agent: str):
        start = time.perf_counter()
        try:
            return super()._parse(user_agent)
        finally:
            self.miss_seconds += time.perf_counter() - start


def clear_device_detector_cache() -> None:
    """device-detector keeps its own LRU of parsed UAs in front of its regexes."""
    from device_detector import device_detector

    device_detector.lookup_user_agent.cache_clear()


def timed(fn: Callable[[], object]) -> float:
    gc.collect()  # start each run from the same heap state; GC stays on, as in the service
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def check_lines(lines: Sequence[bytes]) -> None:
    """Fail loudly (untimed) if a generated line is not a parseable, known-host line."""
    for raw in lines:
        line = parse_caddy(raw)
        if line.host not in SITES:
            raise AssertionError(f"generated an unknown host {line.host!r}")


def measure_clickhouse(rows: list[tuple], repeat: int, batch_rows: int) -> list[float]:
    """Seconds per repeat to insert ``rows`` in batches into a fresh embedded ClickHouse."""
    from services.core.schema import migrate
    from services.core.storage import open_storage

    data_dir = tempfile.mkdtemp(prefix="ecstatic-bench-chdb-")
    try:
        storage = open_storage("chdb://" + data_dir)
        migrate(storage)

        def insert_all() -> None:
            for start in range(0, len(rows), batch_rows):
                storage.insert("requests", rows[start : start + batch_rows], REQUEST_COLUMNS)

        times = []
        for _ in range(repeat):
            storage.command("TRUNCATE TABLE requests")
            times.append(timed(insert_all))
        stored = storage.rows("SELECT count() AS n FROM requests")[0]["n"]
        if stored != len(rows):
            raise AssertionError(f"ClickHouse holds {stored} rows, expected {len(rows)}")
        storage.command("TRUNCATE TABLE requests")
        return times
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _entry(seconds: float, count: int, baseline_rate: float, unit: str) -> dict:
    rate = count / seconds
    return {
        "seconds": seconds,
        f"{unit}_per_s": rate,
        "us_per_item": seconds / count * 1e6,
        "ratio": rate / baseline_rate,
        "slowdown": baseline_rate / rate,
    }


def measure(
    lines_count: int,
    distinct_agents: int,
    repeat: int,
    seed: int = 1,
    clickhouse: bool = True,
    batch_rows: int = BATCH_ROWS,
) -> dict:
    """Run every measurement; best of ``repeat`` each. Returns the JSON-ready result."""
    r = random.Random(seed)
    agents = make_agents(distinct_agents, r)
    lines = make_lines(lines_count, agents, seed + 1)
    check_lines(lines)

    # Warm: device-detector's rules loaded, every one of the K UAs in the parser cache.
    warm = Enricher(FixedSalts(), AgentParser())
    rows = run_enrich(lines, warm)

    # Rounds interleave the steps so slow drift of a shared box hits each alike.
    names = ("json_loads", "parse", "enrich_warm", "enrich_cold")
    times: dict[str, list[float]] = {name: [] for name in names}
    misses: list[float] = []  # seconds inside the K cache misses of each cold run
    for _ in range(repeat):
        times["json_loads"].append(timed(lambda: run_loads(lines)))
        times["parse"].append(timed(lambda: run_parse(lines)))
        times["enrich_warm"].append(timed(lambda: run_enrich(lines, warm)))
        agents_cold = TimedAgentParser()  # empty UA cache
        cold = Enricher(FixedSalts(), agents_cold)
        clear_device_detector_cache()
        times["enrich_cold"].append(timed(lambda: run_enrich(lines, cold)))
        if agents_cold.cache_info().misses != distinct_agents:
            raise AssertionError("the cold run did not see each distinct UA exactly once")
        misses.append(agents_cold.miss_seconds)
    if clickhouse:
        # Last, after the rest: the engine's background merges would disturb other steps.
        times["clickhouse_insert"] = measure_clickhouse(rows, repeat, batch_rows)

    best = {name: min(values) for name, values in times.items()}
    baseline = lines_count / best["json_loads"]
    results = {name: _entry(best[name], lines_count, baseline, "lines") for name in names}
    results["enrich_cold"]["new_agents"] = distinct_agents
    results["enrich_cold"]["ms_per_new_agent"] = min(misses) / distinct_agents * 1e3
    if clickhouse:
        inserted = _entry(best["clickhouse_insert"], len(rows), baseline, "rows")
        results["clickhouse_insert"] = {**inserted, "batch_rows": batch_rows}
    sizes = [len(line) for line in lines]
    return {
        "config": {
            "lines": lines_count,
            "distinct_agents": distinct_agents,
            "bot_agents": sum(bot for _, bot in agents),
            "repeat": repeat,
            "best_of": repeat,
            "seed": seed,
            "mean_line_bytes": sum(sizes) / len(sizes),
            "timer": "time.perf_counter",
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "baseline": "json_loads",
        "measurements": results,
        "all_seconds": times,
    }


# -- output ------------------------------------------------------------------------

_LABELS = {
    "json_loads": "json.loads (baseline)",
    "parse": "parse_caddy",
    "enrich_warm": "parse + enrich, warm UA cache",
    "enrich_cold": "parse + enrich, cold UA cache",
    "clickhouse_insert": "ClickHouse insert (chDB)",
}


def table(result: dict) -> str:
    config = result["config"]
    out = [
        f"intake hot path: {config['lines']} Caddy lines (mean {config['mean_line_bytes']:.0f} B),"
        f" {config['distinct_agents']} distinct UAs ({config['bot_agents']} bots),"
        f" best of {config['best_of']}, Python {config['python']}, {config['cpus']} CPUs",
        f"{'step':<32}{'best s':>9}{'items/s':>12}{'us/item':>10}{'ratio':>8}{'slowdown':>10}",
    ]
    for name, entry in result["measurements"].items():
        rate = entry.get("lines_per_s", entry.get("rows_per_s"))
        out.append(
            f"{_LABELS[name]:<32}{entry['seconds']:>9.3f}{rate:>12,.0f}"
            f"{entry['us_per_item']:>10.1f}{entry['ratio']:>8.3f}{entry['slowdown']:>9.1f}x"
        )
    cold = result["measurements"]["enrich_cold"]
    out.append(
        f"first sight of a UA: {cold['ms_per_new_agent']:.2f} ms each"
        f" (time inside the {cold['new_agents']} UA-cache misses of a cold run, best run)"
    )
    out.append("ratio = rate / json.loads rate (same run); slowdown = its inverse")
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--lines", type=int, default=50_000, help="lines to generate")
    parser.add_argument(
        "--distinct-agents", type=int, default=200, help="distinct user agents (K) in the lines"
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per step; the best counts")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated lines")
    parser.add_argument(
        "--no-clickhouse", action="store_true", help="skip the embedded ClickHouse insert step"
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON object on stdout (table on stderr)"
    )
    args = parser.parse_args(argv)
    if args.lines < 1 or args.distinct_agents < 1 or args.repeat < 1:
        parser.error("--lines, --distinct-agents and --repeat must be at least 1")
    if args.lines < args.distinct_agents:
        parser.error("--lines must be at least --distinct-agents (each UA appears once)")
    if args.distinct_agents > AGENT_CACHE_SIZE:
        parser.error(f"--distinct-agents above {AGENT_CACHE_SIZE} (the UA cache) is never warm")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    result = measure(
        args.lines,
        args.distinct_agents,
        args.repeat,
        seed=args.seed,
        clickhouse=not args.no_clickhouse,
    )
    if args.json:
        print(table(result), file=sys.stderr)
        print(json.dumps(result, indent=2))
    else:
        print(table(result))
    return result


if __name__ == "__main__":
    main()
