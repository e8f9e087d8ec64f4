"""A real headless Chromium visits a deployed site through Caddy, like a visitor would.

Starts the whole local stack (`ecstatic up`) in a temporary ECSTATIC_HOME on free ports,
pushes a small site with the real `git` client, then runs Debian's Chromium against
`http://<name>.localhost:<port>/`: the page renders, its stylesheet is applied (read back
from the DOM) and its image loads. Headless Chromium
says `HeadlessChrome` in its user agent, which the crawler list flags, so its visits are
bot traffic: invisible to the default stats, exact with `bots=include`.

Chromium is a Debian package that `bootstrap.sh` installs; without it this test fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from urllib.parse import urljoin

import pytest

from .stackdriver import Stack, git, make_repo, running_stack, stats, with_token

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    # *.localhost never goes to DNS: every site hostname is this machine.
    "--host-resolver-rules=MAP *.localhost 127.0.0.1",
    # Wait for the page (and what it loads) instead of dumping at the first paint.
    "--virtual-time-budget=5000",
)
CHROMIUM_TIMEOUT = 60

HEADING_RGB = (102, 51, 153)  # rebeccapurple, set only by the stylesheet
IMAGE_RGB = (0, 128, 128)
IMAGE_SIZE = (16, 8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def make_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid 8-bit RGB PNG, written with the standard library."""
    row = b"\x00" + bytes(rgb) * width  # filter type 0 (None) on every row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * height))
        + _png_chunk(b"IEND", b"")
    )


# The index page reports what the browser made of it into its own DOM, which
# `--dump-dom` prints after the page's scripts ran.
INDEX_HTML = b"""<!doctype html>
<html><head><meta charset=utf-8><title>Browser visit</title>
<link rel=stylesheet href=/css/site.css>
<link rel=icon href="data:,"></head>
<body><h1>Hello, browser</h1>
<p><img id=dot src=/img/dot.png alt=dot></p>
<p><a id=about href=/about/>About this site</a></p>
<pre id=probe>script did not run</pre>
<script>
addEventListener("load", () => {
  const heading = document.querySelector("h1"), image = document.getElementById("dot");
  document.getElementById("probe").textContent =
    "color=" + getComputedStyle(heading).color +
    ";image=" + image.naturalWidth + "x" + image.naturalHeight;
});
</script>
</body></html>
"""
SITE_FILES = {
    "index.html": INDEX_HTML,
    # An inline icon: otherwise Chromium asks for /favicon.ico, or not, depending on
    # whether it gets to it before headless mode exits.
    "about/index.html": b'<!doctype html><title>About</title><link rel=icon href="data:,">'
    b"<h1>About this site</h1>\n",
    "css/site.css": b"h1 { color: rgb(102, 51, 153); font-size: 48px }\n",
    "img/dot.png": make_png(*IMAGE_SIZE, IMAGE_RGB),
}
ASSETS = ("/css/site.css", "/img/dot.png")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("home")) as stack:
        yield stack


@pytest.fixture(scope="module")
def site(stack, tmp_path_factory) -> dict:
    token = stack.create_user("dora")
    created = stack.api("POST", "/v1/sites", token, json={"name": "browser-visit"})
    assert created.status_code == 201, created.text
    site = created.json()
    repo = make_repo(tmp_path_factory.mktemp("browser-site"), SITE_FILES, "Dora")
    git(repo, "push", with_token(site["git_url"], token), "main")
    assert site["url"] == f"http://browser-visit.localhost:{stack.http_port}/", site["url"]
    return {"token": token, "id": site["id"], "url": site["url"]}


def chromium(workdir: Path, url: str, *args: str) -> str:
    """Run headless Chromium once, in a fresh profile, on ``url``; its stdout."""
    assert os.access(CHROMIUM, os.X_OK), (
        f"{CHROMIUM} is missing: apt-get install chromium (bootstrap.sh installs it)"
    )
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=workdir)
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
    # Its own process group, so a hung browser goes down with its renderer and GPU children.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"chromium took over {CHROMIUM_TIMEOUT}s on {url}:\n{err[-3000:]}")
    assert process.returncode == 0, f"chromium exited {process.returncode}:\n{err[-3000:]}"
    return out


def _breakdown(stack: Stack, site: dict, dimension: str, bots: str) -> dict:
    answer = stats(
        stack, site["token"], site["id"], "breakdown", dimension=dimension, period="24h", bots=bots
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _by_value(body: dict) -> dict[str, dict[str, int]]:
    return {
        row["value"]: {"pageviews": row["pageviews"], "requests": row["requests"]}
        for row in body["results"]
    }


def _wait_for_requests(stack: Stack, site: dict, expected: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        seen = _breakdown(stack, site, "path", "include")["totals"]["requests"]
        if seen >= expected:
            # Settle: a late or duplicated row would show up as more than expected.
            time.sleep(1.5)
            return
        time.sleep(0.5)
    pytest.fail(f"expected {expected} requests within {timeout}s, saw {seen}")


def test_headless_chromium_visits_the_site(stack: Stack, site: dict, tmp_path: Path):
    index_url = site["url"]

    # The page renders, its script runs, the stylesheet is applied and the image loads.
    dom = chromium(tmp_path, index_url, "--dump-dom")
    assert "<h1>Hello, browser</h1>" in dom, dom[:2000]
    probe = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert probe, dom[:2000]
    width, height = IMAGE_SIZE
    assert probe.group(1) == f"color=rgb{HEADING_RGB};image={width}x{height}", probe.group(1)

    # The visitor follows the link to the second page.
    link = re.search(r'<a id="about" href="([^"]+)">', dom)
    assert link, dom[:2000]
    about_url = urljoin(index_url, link.group(1))
    assert about_url == index_url + "about/"
    about = chromium(tmp_path, about_url, "--dump-dom")
    assert "<h1>About this site</h1>" in about, about[:2000]

    # A screenshot, for a person to look at when this fails.
    shot = tmp_path / "shot.png"
    chromium(tmp_path, index_url, f"--screenshot={shot}", "--window-size=800,600")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "chromium wrote no screenshot"

    # What Chromium fetched: each run loads its page, and the index also loads the
    # stylesheet and the image (each run has a fresh profile, so nothing is cached).
    pages_opened = ["/", "/about/", "/"]
    expected: dict[str, dict[str, int]] = {}
    for page in pages_opened:
        hits = expected.setdefault(page, {"pageviews": 0, "requests": 0})
        hits["pageviews"] += 1
        hits["requests"] += 1
        if page == "/":
            for asset in ASSETS:
                expected.setdefault(asset, {"pageviews": 0, "requests": 0})["requests"] += 1
    total_requests = sum(hits["requests"] for hits in expected.values())
    _wait_for_requests(stack, site, total_requests)

    browsers = _breakdown(stack, site, "browser", "include")["results"]
    classified = f"Chromium's visits were classified as: {json.dumps(browsers)}"

    included = _breakdown(stack, site, "path", "include")
    assert _by_value(included) == expected, classified
    assert included["totals"]["pageviews"] == len(pages_opened), classified
    assert included["totals"]["requests"] == total_requests, classified
    by_path = {row["value"]: row for row in included["results"]}
    index_loads = pages_opened.count("/")
    for asset, name in zip(ASSETS, ("css/site.css", "img/dot.png"), strict=True):
        assert by_path[asset]["bytes"] == index_loads * len(SITE_FILES[name]), by_path[asset]
    statuses = _by_value(_breakdown(stack, site, "status", "include"))
    assert statuses == {"200": {"pageviews": 3, "requests": total_requests}}, statuses

    # HeadlessChrome is on the crawler list: every one of these requests is a bot's.
    only = _breakdown(stack, site, "path", "only")
    assert only["totals"] == included["totals"], classified
    excluded = stats(stack, site["token"], site["id"], "timeseries", period="24h", interval="hour")
    assert excluded.status_code == 200, excluded.text
    assert excluded.json()["bots"] == "exclude"
    assert excluded.json()["totals"] == {
        "pageviews": 0,
        "requests": 0,
        "bytes": 0,
        "visitors": 0,
    }, classified
