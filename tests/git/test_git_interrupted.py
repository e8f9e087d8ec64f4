"""Deploys a killed git process left unfinished: marked failed (``interrupted``) at restart.

Unit tests of ``InFlight`` with a fake api, then the real thing: a ProcessRoom (api and
git under gunicorn) killed with SIGKILL mid-build and started again on the same home.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from push_kit import ProcessRoom, commit, make_git, new_work

from services.cdn.local import remove_tree
from services.core.errors import NotFound, Unavailable
from services.git.inflight import InFlight

NAP = '[build]\ncommand = "echo napping; sleep 60; mkdir -p out; echo late > out/index.html"\n'
NAP += 'publish = "out"\n'


class FakeApi:
    def __init__(self, state="building", error=None):
        self.state, self.error = state, error
        self.calls = []

    def get(self, credential, site_id, deploy_id):
        self.calls.append(("get", credential, site_id, deploy_id))
        if self.error:
            raise self.error
        return {"id": deploy_id, "state": self.state}

    def append_log(self, credential, site_id, deploy_id, lines):
        self.calls.append(("log", deploy_id, list(lines)))

    def update(self, credential, site_id, deploy_id, changes):
        self.calls.append(("update", deploy_id, changes))
        return {"id": deploy_id, **changes}


def _die(inflight: InFlight, deploy_id: str) -> None:
    # What the kernel does for a killed process: the descriptor closes, the file stays.
    os.close(inflight._held.pop(deploy_id))


def test_a_live_process_entries_are_left_alone(tmp_path):
    running = InFlight(tmp_path / "inflight")
    running.enter("s1", "d1", "ecsd_x")
    api = FakeApi()

    assert InFlight(tmp_path / "inflight").recover(api) == 0
    assert api.calls == []  # locked: its process runs it
    running.leave("d1")
    assert list((tmp_path / "inflight").iterdir()) == []


def test_a_dead_process_deploy_is_marked_failed_interrupted_once(tmp_path):
    dead = InFlight(tmp_path / "inflight")
    dead.enter("s1", "d1", "ecsd_x")
    _die(dead, "d1")
    api = FakeApi()

    assert InFlight(tmp_path / "inflight").recover(api) == 0
    assert ("update", "d1", {"state": "failed", "reason": "interrupted"}) in api.calls
    assert api.calls[0] == ("get", "ecsd_x", "s1", "d1")
    assert any(call[0] == "log" and "stopped" in call[2][0] for call in api.calls)
    assert list((tmp_path / "inflight").iterdir()) == []
    api.calls.clear()
    assert InFlight(tmp_path / "inflight").recover(api) == 0 and api.calls == []


def test_a_deploy_that_finished_after_all_is_not_touched(tmp_path):
    dead = InFlight(tmp_path / "inflight")
    dead.enter("s1", "d1", "ecsd_x")
    _die(dead, "d1")
    api = FakeApi(state="live")

    InFlight(tmp_path / "inflight").recover(api)
    assert [c[0] for c in api.calls] == ["get"]


@pytest.mark.parametrize("error, kept", [(Unavailable("down"), True), (NotFound("x"), False)])
def test_an_unreachable_api_keeps_the_entry_for_later(tmp_path, error, kept):
    dead = InFlight(tmp_path / "inflight")
    dead.enter("s1", "d1", "ecsd_x")
    _die(dead, "d1")

    waiting = InFlight(tmp_path / "inflight").recover(FakeApi(error=error))
    assert waiting == (1 if kept else 0)
    assert bool(list((tmp_path / "inflight").glob("*.deploy"))) is kept


def test_entries_hold_the_credential_owner_only(tmp_path):
    inflight = InFlight(tmp_path / "inflight")
    inflight.enter("s1", "d1", "ecsd_x")
    [entry] = (tmp_path / "inflight").iterdir()
    assert entry.stat().st_mode & 0o077 == 0
    assert (tmp_path / "inflight").stat().st_mode & 0o077 == 0
    inflight.leave("d1")


# -- the real thing ------------------------------------------------------------------------


@pytest.fixture
def root():
    # Builds run as a slot uid: the home must be traversable, which pytest's tmp root is not.
    path = Path(tempfile.mkdtemp(prefix="ecstatic-interrupted-"))
    path.chmod(0o711)
    yield path
    remove_tree(path)


@pytest.mark.integration
def test_kill_9_mid_build_marks_the_deploy_interrupted_and_keeps_the_live_one(root, tmp_path):
    git = make_git(tmp_path)
    room = ProcessRoom(root / "room").start()
    try:
        token = room.create_user("crash")
        site = room.create_site(token, "crash")
        url = room.url(site["id"], token)
        work = new_work(git, tmp_path / "w")
        commit(git, work, {"index.html": "before"})
        git("push", "-q", url, "main", cwd=work)
        [before] = room.deploys(token, site["id"])
        assert before["state"] == "live"
        commit(git, work, {"ecstatic.toml": NAP}, "nap")
        push = subprocess.Popen(
            ["git", "-c", "credential.helper=", "push", url, "main"],
            cwd=work,
            env=git.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while True:
            newest = room.deploys(token, site["id"])[0]
            if newest["id"] != before["id"] and newest["state"] == "building":
                if "napping" in room.log(token, site["id"], newest["id"])["lines"]:
                    break
            assert time.monotonic() < deadline, newest
            time.sleep(0.1)

        room.kill9()
        # The pusher is told: its connection closed mid-response, so git push fails.
        assert push.wait(30) != 0
        push.stderr.close()

        room = ProcessRoom(root / "room").start()  # same home: the restart finds the entry
        deadline = time.monotonic() + 30
        while (killed := room.deploys(token, site["id"])[0])["state"] == "building":
            assert time.monotonic() < deadline, killed
            time.sleep(0.1)
        assert (killed["id"], killed["state"], killed["reason"]) == (
            newest["id"],
            "failed",
            "interrupted",
        )
        lines = room.log(token, site["id"], killed["id"])["lines"]
        assert lines[-2].startswith("error: deploy failed: the git process running it stopped")
        # The live pointer and what visitors get are the earlier deploy's, untouched.
        live = room.site(token, site["id"])["live_deploy"]
        assert live["id"] == before["id"] and live["state"] == "live"
        assert (room.live("crash.localhost") / "index.html").read_text() == "before"
        assert list((room.config.git_root / ".inflight").glob("*.deploy")) == []
    finally:
        room.stop()
