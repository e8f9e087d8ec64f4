"""``ecstatic restart intake-query`` hands over: lines streaming through it, none lost,
none twice (issue 7: the local stack's restart uses the hand-over).

Syslog lines stream from a sender that reconnects on EOF, and visitors load a page
through Caddy (whose log the intake follows), while the intake's process is restarted:
the idle slot starts beside the running one, takes the ports, and the old one drains.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.intake.zero_loss_helpers import Sender

from .stackdriver import git, make_repo, running_stack, stats, supervisor_pid, wait_for

pytestmark = pytest.mark.integration

LINES = 30_000
RATE = 1_000  # lines/s: thirty seconds of stream, the whole restart (~10 s) inside it


class Visitors(threading.Thread):
    """Loads the site's front page through Caddy until stopped; counts the answers."""

    def __init__(self, stack, host: str):
        super().__init__(name="visitors", daemon=True)
        self.stack, self.host = stack, host
        self.answered = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            assert self.stack.page(self.host, "/").status_code == 200
            self.answered += 1
            time.sleep(0.05)


def _totals(stack, token: str, site_id: str) -> dict:
    answer = stats(stack, token, site_id, "timeseries", period="24h", bots="include")
    assert answer.status_code == 200, answer.text
    return answer.json()["totals"]


def test_restart_under_load_loses_and_duplicates_nothing(tmp_path):
    with running_stack(tmp_path / "home") as stack:
        token = stack.create_user("dora")
        site = stack.api("POST", "/v1/sites", token, json={"name": "handover"}).json()
        repo = make_repo(tmp_path / "site", {"index.html": b"<h1>hand-over</h1>"})
        git(repo, "push", site["git_url"].replace("://", f"://x:{token}@", 1), "main")
        host = "handover.localhost"
        before = supervisor_pid(stack, "intake-query")
        assert before and supervisor_pid(stack, "intake-query-b") == 0

        sender = Sender(int(stack.env["ECSTATIC_INTAKE_SYSLOG_PORT"]), LINES, RATE, host=host)
        visitors = Visitors(stack, host)
        sender.start()
        visitors.start()
        wait_for(lambda: sender.next > LINES // 5, 60, what="lines streaming")
        restarted = stack.ecstatic("restart", "intake-query", "--timeout", "120")
        handed_at = sender.next
        assert "intake-query restarted (intake-query-b)" in restarted.stdout
        sender.join(120)
        visitors.stop.set()
        visitors.join(30)
        assert sender.error is None and not sender.is_alive(), sender.error
        assert handed_at < LINES, "the stream ended before the restart"
        assert sender.written == list(range(LINES))
        assert sender.connections[0].ended_by == "eof"  # the old process's drain
        assert sender.refused == 0  # the port always had a listener

        # Only the running slot counts: the part is RUNNING and healthy under its new pid.
        assert supervisor_pid(stack, "intake-query") == 0
        report = json.loads(stack.ecstatic("status", "--json").stdout)
        part = next(p for p in report["parts"] if p["name"] == "intake-query")
        assert part["state"] == "RUNNING" and part["healthy"], part

        expected = LINES + visitors.answered
        wait_for(
            lambda: _totals(stack, token, site["id"])["requests"] >= expected,
            90,
            0.5,
            f"{expected} requests stored",
        )
        time.sleep(3)  # a duplicate would arrive late
        totals = _totals(stack, token, site["id"])
        print(f"\nrestart at line {handed_at}; {visitors.answered} page loads; totals {totals}")
        assert totals["requests"] == expected
        # Every syslog line has its own address (its own visitor), the page loads share
        # one: with the exact count, no line is missing and none is there twice.
        assert totals["visitors"] == LINES + 1
