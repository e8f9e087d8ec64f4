"""From `git push` to a live site to its pageviews, through every real part.

Starts the whole local stack (`ecstatic up`) in a temporary ECSTATIC_HOME on free ports,
then drives it as a user would: the HTTP API, the real `git` client, plain HTTP page loads
through Caddy, the query API, Prometheus, and `ecstatic stop/start` for outages.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path

import pytest
import requests

from .stackdriver import (
    BROWSER_UA,
    PORT_NAMES,
    Stack,
    git,
    listening_addresses,
    make_repo,
    running_stack,
    stats,
    with_token,
)

pytestmark = pytest.mark.integration

# A 1x1 PNG: the site carries a real image.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
SITE_FILES = {
    "index.html": b"<!doctype html><link rel=stylesheet href=/css/site.css>"
    b"<h1>Home</h1><img src=/img/dot.png>",
    "about/index.html": b"<!doctype html><h1>About</h1>",
    "blog/first-post.html": b"<!doctype html><h1>First post</h1>",
    "css/site.css": b"h1 { color: rebeccapurple }\n",
    "img/dot.png": PNG,
}
PAGES = {
    "/": "index.html",
    "/about/": "about/index.html",
    "/blog/first-post.html": "blog/first-post.html",
}
ASSETS = {"/css/site.css": "css/site.css", "/img/dot.png": "img/dot.png"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("home")) as stack:
        assert "Quickstart" in stack.up_output
        yield stack


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("source"), SITE_FILES)


def _wait_for_pageviews(
    stack: Stack, token: str, site_id: str, expected: int, timeout: float = 15.0
) -> dict:
    deadline = time.monotonic() + timeout
    body = {}
    while time.monotonic() < deadline:
        answer = stats(stack, token, site_id, "timeseries", period="24h", interval="hour")
        if answer.status_code == 200:
            body = answer.json()
            if body["totals"]["pageviews"] >= expected:
                return body
        time.sleep(0.5)
    pytest.fail(
        f"expected {expected} pageviews within {timeout}s, last answer: {json.dumps(body)[:2000]}"
    )


def test_push_serve_count_and_refuse(stack: Stack, source: Path):
    alice, bob = stack.create_user("alice"), stack.create_user("bob")

    created = stack.api("POST", "/v1/sites", alice, json={"name": "alices-blog"})
    assert created.status_code == 201, created.text
    site = created.json()
    assert {"id", "git_url", "url"} <= site.keys()
    host = site["url"].split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]
    assert host == "alices-blog.localhost"
    bobs = stack.api("POST", "/v1/sites", bob, json={"name": "bobs-site"}).json()

    # A push with a wrong token and a push to someone else's site are refused.
    wrong = git(source, "push", with_token(site["git_url"], "ecs_wrong"), "main", check=False)
    assert wrong.returncode != 0
    assert "401" in wrong.stderr or "Authentication failed" in wrong.stderr, wrong.stderr
    foreign = git(source, "push", with_token(site["git_url"], bob), "main", check=False)
    assert foreign.returncode != 0
    assert "not found" in foreign.stderr.lower(), foreign.stderr

    # Alice's push deploys, and git shows where the site is live.
    pushed = git(source, "push", with_token(site["git_url"], alice), "main")
    assert "remote:" in pushed.stderr and site["url"] in pushed.stderr, pushed.stderr
    current = stack.api("GET", f"/v1/sites/{site['id']}", alice).json()["current_deploy"]
    head = git(source, "rev-parse", "HEAD").stdout.strip()
    assert current["commit_sha"] == head
    assert current["file_count"] == len(SITE_FILES)
    assert current["bytes"] == sum(len(data) for data in SITE_FILES.values())
    deploys = stack.api("GET", f"/v1/sites/{site['id']}/deploys", alice).json()["deploys"]
    assert [d["commit_sha"] for d in deploys] == [head]

    # Every page and asset comes back through Caddy, byte for byte.
    for path, name in {**PAGES, **ASSETS}.items():
        answer = stack.page(host, path)
        assert answer.status_code == 200, (path, answer.status_code)
        assert answer.content == SITE_FILES[name], path

    # Those pageviews, and only those, show up through the query API.
    series = _wait_for_pageviews(stack, alice, site["id"], len(PAGES))
    assert series["totals"]["pageviews"] == len(PAGES)
    assert series["totals"]["requests"] == len(PAGES) + len(ASSETS)
    assert series["totals"]["bytes"] == sum(
        len(SITE_FILES[n]) for n in {**PAGES, **ASSETS}.values()
    )
    by_path = stats(stack, alice, site["id"], "breakdown", dimension="path", period="24h").json()
    pageviews = {row["value"]: row["pageviews"] for row in by_path["results"] if row["pageviews"]}
    assert pageviews == {path: 1 for path in PAGES}
    browsers = stats(
        stack, alice, site["id"], "breakdown", dimension="browser", period="24h"
    ).json()
    assert [row["value"] for row in browsers["results"]] == ["Chrome"]

    # Another user's stats are 404; so are stats without a token.
    assert stats(stack, bob, site["id"], "timeseries", period="24h").status_code == 404
    assert stats(stack, "nope", site["id"], "timeseries", period="24h").status_code == 401
    assert (
        stats(stack, bob, bobs["id"], "timeseries", period="24h").json()["totals"]["pageviews"] == 0
    )

    # Prometheus scrapes every part, and all are up.
    deadline = time.monotonic() + 30
    while True:
        report = json.loads(stack.ecstatic("status", "--json").stdout)
        jobs = {t["job"]: t["health"] for t in report["targets"]}
        if set(jobs) >= {
            "caddy",
            "api",
            "git",
            "intake-query",
            "alertmanager",
            "prometheus",
        } and set(jobs.values()) == {"up"}:
            break
        assert time.monotonic() < deadline, f"targets not all up: {report['targets']}"
        time.sleep(1)
    assert all(part["healthy"] for part in report["parts"]), report["parts"]
    assert report["api_url"] and report["git_url"] and report["query_url"]

    # Only Caddy's public port listens beyond loopback.
    for name in PORT_NAMES:
        port = int(stack.env[f"ECSTATIC_{name}_PORT"])
        addresses = listening_addresses(port)
        if name == "HTTP":
            assert addresses and addresses <= {"0.0.0.0", "::"}, (name, addresses)
        else:
            assert addresses == {"127.0.0.1"}, (name, addresses)

    # The site keeps serving with every Ecstatic service stopped...
    stack.ecstatic("stop", "api", "git", "intake-query")
    assert requests.get(f"http://127.0.0.1:{stack.http_port}/healthz", timeout=5).status_code == 200
    for path, name in PAGES.items():
        answer = stack.page(host, path)
        assert answer.status_code == 200 and answer.content == SITE_FILES[name], path

    # ...and once they are back, the pageviews made meanwhile are counted too.
    stack.ecstatic("start", "api", "git", "intake-query")
    stack.ecstatic("up", "--timeout", "120")  # waits until every part is healthy again
    series = _wait_for_pageviews(stack, alice, site["id"], 2 * len(PAGES))
    assert series["totals"]["pageviews"] == 2 * len(PAGES)


def test_bunny_syslog_records_reach_the_stats(stack: Stack):
    """A CDN forwarding Bunny JSON logs over TCP syslog: records land, garbage does not."""
    token = stack.create_user("dana")
    site = stack.api("POST", "/v1/sites", token, json={"name": "on-bunny"}).json()
    now_ms = int(time.time() * 1000)

    def record(path: str, request_id: str) -> bytes:
        body = {
            "PullZoneId": 1,
            "Host": "on-bunny.localhost",
            "PathAndQuery": path,
            "Status": 200,
            "BytesSent": 1234,
            "Timestamp": now_ms,
            "UserAgent": BROWSER_UA,
            "Referer": "",
            "RemoteIp": "203.0.113.0",
            "Country": "DE",
            "RequestId": request_id,
            "Cached": True,
            "HeaderRange": "",
        }
        return json.dumps(body).encode()

    frames = [
        b"<165>1 2026-01-01T00:00:00.000Z edge bunny - log - " + record("/a/", "r1") + b"\n",
        b"this is not a log line\n",
        record("/b.html?x=1", "r2") + b"\n",
        b"<165>1 2026-01-01T00:00:00.000Z edge bunny - log - " + record("/a/", "r1") + b"\n",
    ]
    port = int(stack.env["ECSTATIC_INTAKE_SYSLOG_PORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"".join(frames))

    # Wait for every record (under load they may land in more than one batch).
    deadline = time.monotonic() + 60
    while True:
        answer = stats(stack, token, site["id"], "breakdown", dimension="path", period="24h")
        rows = {row["value"]: row["pageviews"] for row in answer.json()["results"]}
        if set(rows) >= {"/a/", "/b.html"} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(1.5)  # a duplicate of r1, if it were stored, would arrive with the rest
    answer = stats(stack, token, site["id"], "breakdown", dimension="path", period="24h")
    assert {row["value"]: row["pageviews"] for row in answer.json()["results"]} == {
        "/a/": 1,
        "/b.html": 1,
    }
    countries = stats(stack, token, site["id"], "breakdown", dimension="country", period="24h")
    assert [row["value"] for row in countries.json()["results"]] == ["DE"]
