"""The intake loses no access-log line, and counts none twice, through real Caddy log
rotation (while the intake runs and while it is stopped) and through SIGTERM mid-stream.

Caddy rolls its log at 1 MiB here (ECSTATIC_ACCESS_LOG_ROLL_MB=1); each request carries a
3 KB query string, so a few hundred requests roll the file.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .stackdriver import BROWSER_UA, Stack, git, make_repo, running_stack, stats, with_token

pytestmark = pytest.mark.integration

PADDING = "p=" + "x" * 3000


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("home"), ECSTATIC_ACCESS_LOG_ROLL_MB="1") as stack:
        yield stack


@pytest.fixture(scope="module")
def site(stack, tmp_path_factory):
    token = stack.create_user("carol")
    site = stack.api("POST", "/v1/sites", token, json={"name": "rolling"}).json()
    repo = make_repo(tmp_path_factory.mktemp("rolling"), {"index.html": b"<h1>rolling</h1>"})
    git(repo, "push", with_token(site["git_url"], token), "main")
    return {"token": token, "id": site["id"], "host": "rolling.localhost"}


def _visit(stack: Stack, host: str, count: int, tag: str) -> None:
    def one(i: int) -> int:
        url = f"{stack.base}/?{tag}={i}&{PADDING}"
        return requests.get(
            url, headers={"Host": host, "User-Agent": BROWSER_UA}, timeout=10
        ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(one, range(count))) == {200}


def _rolled_files(stack: Stack) -> list[Path]:
    return sorted((Path(stack.env["ECSTATIC_HOME"]) / "logs").glob("access-*.log*"))


def _live_log_inode(stack: Stack) -> int | None:
    try:
        return (Path(stack.env["ECSTATIC_HOME"]) / "logs" / "access.log").stat().st_ino
    except FileNotFoundError:
        return None  # no site request logged yet


def _until(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _requests_stored(stack: Stack, site: dict) -> int:
    answer = stats(stack, site["token"], site["id"], "timeseries", period="24h", interval="hour")
    assert answer.status_code == 200, answer.text
    return answer.json()["totals"]["requests"]


def _wait_for_requests(stack: Stack, site: dict, expected: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        seen = _requests_stored(stack, site)
        if seen >= expected:
            break
        time.sleep(0.5)
    # Settle: a duplicate would show up as a count above the expected one.
    time.sleep(2)
    assert _requests_stored(stack, site) == expected, f"stored {seen}, expected {expected}"


def test_rotation_while_running(stack, site):
    live = _live_log_inode(stack)
    _visit(stack, site["host"], 450, "running")
    assert _live_log_inode(stack) != live, "Caddy did not roll its log"
    _wait_for_requests(stack, site, 450)
    # Rolled files hold visitors' IPs: each goes once all of it is in the spool.
    assert _until(lambda: not _rolled_files(stack)), _rolled_files(stack)


def test_rotation_while_the_intake_is_stopped(stack, site):
    before = _requests_stored(stack, site)
    stack.ecstatic("stop", "intake-query")
    live = _live_log_inode(stack)
    _visit(stack, site["host"], 450, "stopped")
    assert _live_log_inode(stack) != live and _rolled_files(stack), "Caddy did not roll its log"
    stack.ecstatic("start", "intake-query")
    stack.ecstatic("up", "--timeout", "120")
    _wait_for_requests(stack, site, before + 450)


def test_sigterm_mid_stream_loses_nothing(stack, site):
    before = _requests_stored(stack, site)
    # SIGTERM while lines are still arriving and buffered: the intake flushes what it
    # parsed and saves its offset; the rest is read from the file after the restart.
    with ThreadPoolExecutor(max_workers=1) as pool:
        visiting = pool.submit(_visit, stack, site["host"], 300, "sigterm")
        time.sleep(0.5)
        stack.ecstatic("stop", "intake-query")
        visiting.result()
    stack.ecstatic("start", "intake-query")
    stack.ecstatic("up", "--timeout", "120")
    _wait_for_requests(stack, site, before + 300)
