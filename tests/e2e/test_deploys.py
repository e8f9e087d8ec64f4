"""Deploys through a real stack: history, logs, restores, previews, races and crashes.

One stack for the module; every change arrives by ``git push`` with the real client and
is checked where a visitor sees it, through Caddy with the site's Host header.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import requests

from .stackdriver import (
    Stack,
    StreamedPush,
    commit,
    deploy_log,
    deploys,
    follow_push,
    git,
    host_of,
    kill_push,
    make_repo,
    push,
    running_stack,
    searchable_home,
    start_push,
    supervisor_pid,
    wait_for,
    with_token,
)

pytestmark = pytest.mark.integration

MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module")
def stack():
    with searchable_home() as home:
        with running_stack(home) as stack:
            yield stack


@pytest.fixture(scope="module")
def token(stack: Stack) -> str:
    return stack.create_user("deployer")


@pytest.fixture
def new_site(stack: Stack, token: str, tmp_path: Path):
    def make(name: str, files: dict[str, bytes]):
        created = stack.api("POST", "/v1/sites", token, json={"name": name})
        assert created.status_code == 201, created.text
        site = created.json()
        repo = make_repo(tmp_path / name, files)
        return site, repo, with_token(site["git_url"], token)

    return make


def _page(stack: Stack, host: str, path: str = "/") -> requests.Response:
    return stack.page(host, path)


def _site(stack: Stack, token: str, site_id: str) -> dict:
    answer = stack.api("GET", f"/v1/sites/{site_id}", token)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _toml(command: str) -> bytes:
    return f"[build]\ncommand = '''{command}'''\npublish = \"out\"\n".encode()


def _served_by_build(text: str) -> str:
    """A build command publishing ``text`` as out/index.html."""
    return f"mkdir -p out && printf '%s' '{text}' > out/index.html"


def _kept_log(stack, token, site_id, deploy_id, expected: list[str], timeout=10.0) -> list[str]:
    """The api's copy of a deploy's log once it has every expected line (batched shipping)."""
    deadline = time.monotonic() + timeout
    while True:
        kept = deploy_log(stack, token, site_id, deploy_id)["lines"]
        if kept == expected or time.monotonic() > deadline:
            return kept
        time.sleep(0.1)


# -- history, logs, restore ---------------------------------------------------------------


def test_history_logs_restore_and_force_push(stack: Stack, token: str, new_site):
    versions = [b"<h1>one</h1>", b"<h1>two, longer</h1>", b"<h1>three, longest of all</h1>"]
    site, repo, url = new_site("history", {"index.html": versions[0]})
    host = host_of(site["url"])
    shas = [git(repo, "rev-parse", "HEAD").stdout.strip()]
    pushes = [push(repo, url, "main")]
    authors = ["Alice", "Bob", "Carol"]
    for n, (content, author) in enumerate(zip(versions[1:], authors[1:], strict=True), 2):
        shas.append(commit(repo, {"index.html": content}, f"version {n}\n\nbody", author=author))
        pushes.append(push(repo, url, "main"))
    assert all(p.returncode == 0 for p in pushes), [p.stderr for p in pushes]
    assert _page(stack, host).content == versions[2]

    listed = deploys(stack, token, site["id"])
    assert [d["commit_sha"] for d in listed] == shas[::-1]  # newest first
    assert [d["number"] for d in listed] == [3, 2, 1]
    assert [d["author"] for d in listed] == authors[::-1]
    assert [d["message"] for d in listed] == ["version 3", "version 2", "site"]
    assert [d["bytes"] for d in listed] == [len(v) for v in versions[::-1]]
    assert [d["state"] for d in listed] == ["live"] * 3
    assert [d["current"] for d in listed] == [True, False, False]
    created = [datetime.fromisoformat(d["created_at"].replace("Z", "+00:00")) for d in listed]
    assert created == sorted(created, reverse=True), created
    for d in listed:
        assert d["duration_seconds"] is not None and 0 < d["duration_seconds"] < 30, d
        assert "generator" in d and d["generator"] is None  # plain files: nothing built

    # The kept log is what each pusher saw (after the hook's own "deploy queued" line).
    for deploy, pushed in zip(listed[::-1], pushes, strict=True):
        seen = pushed.remote
        assert seen[0] == "main: deploy queued", seen
        kept = _kept_log(stack, token, site["id"], deploy["id"], seen[1:])
        assert kept == seen[1:], (kept, seen)
        assert kept[-1] == f"live at {site['url']}", kept

    # Restoring the first deploy: live through Caddy within a second.
    first = listed[-1]
    began = time.monotonic()
    restored = stack.api("POST", f"/v1/sites/{site['id']}/deploys/{first['id']}/restore", token)
    wait_for(lambda: _page(stack, host).content == versions[0], 5, 0.01, "restored content")
    latency = MEASURED["restore_seconds"] = time.monotonic() - began
    print(f"restore: first deploy served by Caddy {latency * 1000:.0f} ms after the POST")
    assert restored.status_code == 200, restored.text
    assert restored.json()["id"] == first["id"] and restored.json()["current"]
    assert latency < 1.0, latency
    assert _site(stack, token, site["id"])["live_deploy"]["id"] == first["id"]
    assert [d["current"] for d in deploys(stack, token, site["id"])] == [False, False, True]
    assert len(deploys(stack, token, site["id"])) == 3  # a restore is not a new deploy

    # Restore refuses what is not a deploy of this site.
    missing = stack.api("POST", f"/v1/sites/{site['id']}/deploys/nope/restore", token)
    assert missing.status_code == 404, missing.text

    # An older commit pushed with --force deploys too.
    git(repo, "reset", "-q", "--hard", shas[1])
    forced = push(repo, "--force", url, "main")
    assert forced.returncode == 0 and "+ " in forced.stderr, forced.stderr
    assert f"live at {site['url']}" in forced.remote, forced.stderr
    assert _page(stack, host).content == versions[1]
    newest = deploys(stack, token, site["id"])[0]
    assert (newest["number"], newest["commit_sha"], newest["state"]) == (4, shas[1], "live")
    assert _site(stack, token, site["id"])["live_deploy"]["id"] == newest["id"]
    assert git(repo, "ls-remote", url, "refs/heads/main").stdout.split()[0] == shas[1]


# -- previews -----------------------------------------------------------------------------


def test_preview_branch_deploys_to_its_hostname_and_goes_on_delete(
    stack: Stack, token: str, new_site
):
    production = b"<h1>production</h1>"
    site, repo, url = new_site("looks", {"index.html": production})
    host = host_of(site["url"])
    assert push(repo, url, "main").returncode == 0

    git(repo, "checkout", "-q", "-b", "feature/new-look")
    commit(repo, {"index.html": b"<h1>the new look</h1>", "new.css": b"body{}"}, "new look")
    pushed = push(repo, url, "feature/new-look")
    assert pushed.returncode == 0, pushed.stderr

    previews = _site(stack, token, site["id"])["previews"]
    assert [p["branch"] for p in previews] == ["feature/new-look"], previews
    preview = previews[0]
    preview_host = preview["hostname"]
    assert preview_host != host and preview_host == host_of(preview["url"]), preview
    assert f"feature/new-look: live at {preview['url']}" in pushed.remote, pushed.stderr

    assert _page(stack, preview_host).content == b"<h1>the new look</h1>"
    assert _page(stack, preview_host, "/new.css").content == b"body{}"
    assert _page(stack, host).content == production  # production unchanged
    assert _page(stack, host, "/new.css").status_code == 404
    newest = deploys(stack, token, site["id"])[0]
    assert (newest["context"], newest["branch"], newest["hostname"]) == (
        "preview",
        "feature/new-look",
        preview_host,
    )
    assert preview["live_deploy_id"] == newest["id"]
    assert _site(stack, token, site["id"])["live_deploy"]["context"] == "production"

    deleted = push(repo, url, "--delete", "feature/new-look")
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted feature/new-look; its preview {preview_host} is gone" in deleted.remote
    wait_for(lambda: _page(stack, preview_host).status_code == 404, 5, what="preview gone")
    assert _site(stack, token, site["id"])["previews"] == []
    assert _page(stack, host).content == production
    assert "feature/new-look" not in git(repo, "ls-remote", url).stdout


# -- concurrency --------------------------------------------------------------------------


def _push_in_thread(repo: Path, *args: str) -> tuple[threading.Thread, dict]:
    result: dict = {}
    process = start_push(repo, *args)

    def follow():
        result["push"] = follow_push(process)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread, result


def _outcome(pushed: StreamedPush) -> str:
    lines = pushed.remote
    if any(line.startswith("live at ") for line in lines):
        return "live"
    if any("moved on: a newer push deploys instead" in line for line in lines):
        return "superseded"
    if pushed.returncode != 0 and "[rejected]" in pushed.stderr:
        return "rejected"  # lost the race for the ref (not a fast-forward any more)
    return "unclear"


def test_concurrent_pushes_to_one_site_are_serialized(stack: Stack, token: str, new_site):
    site, repo, url = new_site("racing", {"index.html": b"base"})
    host = host_of(site["url"])
    assert push(repo, url, "main").returncode == 0
    # Two commits, each a build that takes a moment; the second is a child of the first.
    one = commit(repo, {"ecstatic.toml": _toml("sleep 2; " + _served_by_build("one"))}, "one")
    two = commit(repo, {"ecstatic.toml": _toml("sleep 1; " + _served_by_build("two"))}, "two")

    first_thread, first = _push_in_thread(repo, "--force", url, f"{one}:refs/heads/main")
    time.sleep(0.3)
    second_thread, second = _push_in_thread(repo, "--force", url, f"{two}:refs/heads/main")
    first_thread.join(60)
    second_thread.join(60)
    outcomes = {one: _outcome(first["push"]), two: _outcome(second["push"])}
    print("concurrent pushes:", outcomes)
    for pushed in (first["push"], second["push"]):
        assert _outcome(pushed) != "unclear", pushed.stderr
    assert "live" in outcomes.values(), outcomes

    final = git(repo, "ls-remote", url, "refs/heads/main").stdout.split()[0]
    assert final in (one, two)
    expected = b"one" if final == one else b"two"
    wait_for(lambda: _page(stack, host).content == expected, 5, what="final content")
    live = _site(stack, token, site["id"])["live_deploy"]
    assert live["commit_sha"] == final, live

    records = {d["commit_sha"]: d for d in deploys(stack, token, site["id"])[:2]}
    assert set(records) <= {one, two}, records
    for sha, record in records.items():
        # Each record says what happened to it, matching what its pusher was told.
        assert record["state"] == outcomes[sha], (sha, record, outcomes)
        if record["state"] == "superseded":
            assert record["reason"] == "superseded" and not record["current"]
    # Serialized: the builds did not overlap (the per-site lock held one at a time).
    if len(records) == 2 and all(r["state"] == "live" for r in records.values()):
        earlier, later = sorted(records.values(), key=lambda r: r["number"])
        assert earlier["finished_at"] <= later["started_at"], (earlier, later)
        assert later["commit_sha"] == final


# -- crashes ------------------------------------------------------------------------------


def _git_processes(stack: Stack) -> list[psutil.Process]:
    """supervisord's git program and its gunicorn workers (not the builds under them)."""
    master = psutil.Process(supervisor_pid(stack, "git"))
    workers = [p for p in master.children() if "python" in p.name().lower()]
    return [master, *workers]


def test_kill_9_of_git_mid_build_keeps_the_site_and_the_next_push_deploys(
    stack: Stack, token: str, new_site
):
    before = b"<h1>before the crash</h1>" + os.urandom(64)
    site, repo, url = new_site("crashy", {"index.html": before})
    host = host_of(site["url"])
    assert push(repo, url, "main").returncode == 0
    commit(
        repo, {"ecstatic.toml": _toml("echo napping; sleep 40; " + _served_by_build("x"))}, "nap"
    )

    seen: list[str] = []
    process = start_push(repo, url, "main")
    lines: list[str] = []
    thread = threading.Thread(
        target=lambda: seen.append(follow_push(process, on_line=lines.append, timeout=90)),
        daemon=True,
    )
    thread.start()
    wait_for(lambda: any(line.startswith("remote: napping") for line in lines), 30, 0.05, "nap")
    victims = _git_processes(stack)
    old_pid = victims[0].pid
    builds = [p for w in victims[1:] for p in w.children(recursive=True) if "sleep" in p.name()]
    assert builds, "the build's sleep is not under the git workers"
    for victim in victims:
        victim.send_signal(signal.SIGKILL)

    # The visitor sees the old version, whole, while git is down and coming back.
    for _ in range(10):
        assert _page(stack, host).content == before
        time.sleep(0.1)
    gone, alive = psutil.wait_procs(builds, timeout=10)
    assert not alive, f"builds outlived the git process: {alive}"

    wait_for(lambda: supervisor_pid(stack, "git") not in (0, old_pid), 60, 0.5, "git restarted")
    stack.ecstatic("up", "--timeout", "120")  # waits until every part is healthy again
    assert _page(stack, host).content == before

    # The restarted git finds the killed deploy's in-flight entry and marks it.
    wait_for(lambda: deploys(stack, token, site["id"])[0]["state"] == "failed", 30, 0.2, "marked")
    killed = deploys(stack, token, site["id"])[0]
    assert (killed["state"], killed["reason"]) == ("failed", "interrupted"), killed
    assert not killed["current"], killed

    after = b"<h1>after the crash</h1>"
    sha = commit(repo, {"index.html": after, "ecstatic.toml": None}, "after")
    pushed = push(repo, url, "main")
    assert pushed.returncode == 0, pushed.stderr
    assert f"live at {site['url']}" in pushed.remote, pushed.stderr
    assert _page(stack, host).content == after
    live = _site(stack, token, site["id"])["live_deploy"]
    assert live["commit_sha"] == sha and live["state"] == "live", live

    # NOTE(e2e): the pusher of the killed deploy is NOT told. Caddy 2.6 ends a streamed
    # response whose upstream died *cleanly* (terminating chunk, keep-alive), and git's
    # stateless-RPC push then waits for ever on its helper's pipe; without Caddy the push
    # fails at once. tests/git/test_git_caddy_truncation.py pins the Caddy half and says
    # why (newer Caddy aborts the connection). Here the push is ended by hand.
    kill_push(process)
    thread.join(10)
