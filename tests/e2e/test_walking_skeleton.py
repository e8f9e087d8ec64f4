"""From `git push` to a live site to its pageviews, through every real part.

Starts the whole local stack (`ecstatic up`) in a temporary ECSTATIC_HOME on free ports,
then drives it as a user would: the HTTP API, the real `git` client, plain HTTP page loads
through Caddy, the query API, Prometheus, and `ecstatic stop/start` for outages.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration

BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
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
PORT_NAMES = ("HTTP", "API", "GIT", "QUERY", "INTAKE", "INTAKE_SYSLOG", "PROMETHEUS", "CADDY_ADMIN")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Stack:
    """A running stack and the ways a user talks to it."""

    def __init__(self, home: Path):
        ports = dict(zip(PORT_NAMES, _free_ports(len(PORT_NAMES)), strict=True))
        self.http_port = ports["HTTP"]
        self.prometheus_port = ports["PROMETHEUS"]
        self.env = {
            **os.environ,
            "ECSTATIC_HOME": str(home),
            "ECSTATIC_INTAKE_FLUSH_SECONDS": "0.5",
            **{f"ECSTATIC_{name}_PORT": str(port) for name, port in ports.items()},
        }
        self.base = f"http://127.0.0.1:{self.http_port}"

    def ecstatic(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        if check:
            assert result.returncode == 0, (
                f"ecstatic {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def create_user(self, name: str) -> str:
        return self.ecstatic("admin", "create-user", name).stdout.strip().splitlines()[-1]

    def api(self, method: str, path: str, token: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return requests.request(method, self.base + path, headers=headers, timeout=10, **kwargs)

    def page(self, host: str, path: str) -> requests.Response:
        return requests.get(
            self.base + path, headers={"Host": host, "User-Agent": BROWSER_UA}, timeout=10
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("home"))
    up = stack.ecstatic("up", "--timeout", "180", check=False)
    try:
        assert up.returncode == 0, f"ecstatic up failed:\n{up.stdout}\n{up.stderr}"
        assert "Quickstart" in up.stdout
        yield stack
    finally:
        stack.ecstatic("down", check=False)


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
    }
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, f"git {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _with_token(git_url: str, token: str, user: str = "x") -> str:
    scheme, rest = git_url.split("://", 1)
    return f"{scheme}://{user}:{token}@{rest}"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("source")
    for name, data in SITE_FILES.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(
        repo,
        "-c",
        "user.name=Alice",
        "-c",
        "user.email=alice@example.com",
        "commit",
        "-qm",
        "first",
    )
    return repo


def _stats(stack: Stack, token: str, site_id: str, kind: str, **params) -> requests.Response:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return stack.api("GET", f"/v1/sites/{site_id}/stats/{kind}?{query}", token)


def _wait_for_pageviews(
    stack: Stack, token: str, site_id: str, expected: int, timeout: float = 15.0
) -> dict:
    deadline = time.monotonic() + timeout
    body = {}
    while time.monotonic() < deadline:
        answer = _stats(stack, token, site_id, "timeseries", period="24h", interval="hour")
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
    wrong = _git(source, "push", _with_token(site["git_url"], "ecs_wrong"), "main", check=False)
    assert wrong.returncode != 0
    assert "401" in wrong.stderr or "Authentication failed" in wrong.stderr, wrong.stderr
    foreign = _git(source, "push", _with_token(site["git_url"], bob), "main", check=False)
    assert foreign.returncode != 0
    assert "not found" in foreign.stderr.lower(), foreign.stderr

    # Alice's push deploys, and git shows where the site is live.
    pushed = _git(source, "push", _with_token(site["git_url"], alice), "main")
    assert "remote:" in pushed.stderr and site["url"] in pushed.stderr, pushed.stderr
    current = stack.api("GET", f"/v1/sites/{site['id']}", alice).json()["current_deploy"]
    head = _git(source, "rev-parse", "HEAD").stdout.strip()
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
    by_path = _stats(stack, alice, site["id"], "breakdown", dimension="path", period="24h").json()
    pageviews = {row["value"]: row["pageviews"] for row in by_path["results"] if row["pageviews"]}
    assert pageviews == {path: 1 for path in PAGES}
    browsers = _stats(
        stack, alice, site["id"], "breakdown", dimension="browser", period="24h"
    ).json()
    assert [row["value"] for row in browsers["results"]] == ["Chrome"]

    # Another user's stats are 404; so are stats without a token.
    assert _stats(stack, bob, site["id"], "timeseries", period="24h").status_code == 404
    assert _stats(stack, "nope", site["id"], "timeseries", period="24h").status_code == 401
    assert (
        _stats(stack, bob, bobs["id"], "timeseries", period="24h").json()["totals"]["pageviews"]
        == 0
    )

    # Prometheus scrapes every part, and all are up.
    deadline = time.monotonic() + 30
    while True:
        report = json.loads(stack.ecstatic("status", "--json").stdout)
        jobs = {t["job"]: t["health"] for t in report["targets"]}
        if set(jobs) >= {"caddy", "api", "git", "intake-query", "prometheus"} and set(
            jobs.values()
        ) == {"up"}:
            break
        assert time.monotonic() < deadline, f"targets not all up: {report['targets']}"
        time.sleep(1)
    assert all(part["healthy"] for part in report["parts"]), report["parts"]
    assert report["api_url"] and report["git_url"] and report["query_url"]

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
