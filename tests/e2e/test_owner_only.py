"""Every file and directory under ECSTATIC_HOME is owner-only after a real run: a push
with a sandboxed build, pages served by Caddy, their lines ingested and queried, Bunny
records on the syslog port, and the stack stopped again."""

from __future__ import annotations

import socket
import stat
import time

import pytest

from services.core.private_files import offenders

from .stackdriver import BROWSER_UA, git, make_repo, running_stack, stats, with_token

pytestmark = pytest.mark.integration

SITE = {
    "ecstatic.toml": b'[build]\ncommand = "mkdir -p out && cp index.html out/ && echo ok"\n'
    b'publish = "out"\n',
    "index.html": b"<h1>owner only</h1>",
}


def test_everything_under_home_is_owner_only(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    source = make_repo(tmp_path_factory.mktemp("source"), SITE)
    with running_stack(home) as stack:
        token = stack.create_user("olga")
        site = stack.api("POST", "/v1/sites", token, json={"name": "owned"}).json()
        pushed = git(source, "push", with_token(site["git_url"], token), "main")
        assert "ok" in pushed.stderr, pushed.stderr  # the build ran
        page = stack.page("owned.localhost", "/")
        assert page.status_code == 200 and page.content == SITE["index.html"]  # Caddy serves it
        port = int(stack.env["ECSTATIC_INTAKE_SYSLOG_PORT"])
        record = (
            '{"Host": "owned.localhost", "PathAndQuery": "/b/", "Status": 200, '
            f'"Timestamp": {int(time.time() * 1000)}, "RemoteIp": "203.0.113.9", '
            f'"UserAgent": "{BROWSER_UA}", "RequestId": "own-1"}}\n'
        )
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(record.encode())
        deadline = time.monotonic() + 60
        seen: set[str] = set()
        while time.monotonic() < deadline and not {"/", "/b/"} <= seen:
            answer = stats(stack, token, site["id"], "breakdown", dimension="path", period="24h")
            if answer.status_code == 200:
                seen = {row["value"] for row in answer.json()["results"]}
            time.sleep(0.5)
        assert {"/", "/b/"} <= seen
        running = offenders(home)
        access_log = home / "logs" / "access.log"
        assert stat.S_IMODE(access_log.stat().st_mode) == 0o600
    stopped = offenders(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    problems = sorted(set(running) | set(stopped))
    assert problems == [], "not owner-only:\n" + "\n".join(problems)
