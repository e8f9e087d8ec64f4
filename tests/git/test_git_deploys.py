"""Deploys through the real rooms: restores, previews, streaming, concurrency, history.

The api (real SQLite store) and the git room (real pipeline, queue, sandbox, LocalCDN)
serve one threaded server on 127.0.0.1; the real git client pushes to it.
"""

from __future__ import annotations

import base64
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from push_kit import ThreadedRoom, commit, make_git, new_work, pack_of, pkt, post_pack

from services.cdn.local import remove_tree

pytestmark = pytest.mark.integration

ZERO = "0" * 40
SLOW_BUILD = '[build]\ncommand = "sleep {s} && mkdir -p out && echo {text} > out/index.html"\n'
SLOW_BUILD += 'publish = "out"\n'


@pytest.fixture(scope="module")
def room():
    # Builds run as a slot uid: the home must be traversable, which pytest's tmp root is not.
    root = Path(tempfile.mkdtemp(prefix="ecstatic-deploys-"))
    root.chmod(0o711)
    room = ThreadedRoom(root)
    yield room
    room.stop()
    remove_tree(root)


@pytest.fixture
def git(tmp_path):
    return make_git(tmp_path)


@pytest.fixture
def work(git, tmp_path):
    return new_work(git, tmp_path / "work")


def slow(text: str, seconds: float = 1) -> str:
    return SLOW_BUILD.format(s=seconds, text=text)


# -- restore ----------------------------------------------------------------------------


def test_restoring_an_earlier_deploy_makes_it_live_again_at_once(room, git, work):
    site_id, token = room.new_site("restore")
    url = room.url(site_id, token)
    commit(git, work, {"index.html": "v1"})
    git("push", "-q", url, "main", cwd=work)
    commit(git, work, {"index.html": "v2"})
    git("push", "-q", url, "main", cwd=work)
    second, first = room.deploys(token, site_id)
    assert (room.live("restore.localhost") / "index.html").read_text() == "v2"

    started = time.monotonic()
    response = room.restore(token, site_id, first["id"])
    took = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert response.json()["id"] == first["id"] and response.json()["current"] is True
    assert took < 0.5
    assert (room.live("restore.localhost") / "index.html").read_text() == "v1"
    assert room.site(token, site_id)["live_deploy"]["id"] == first["id"]
    assert room.cdn.live_release("restore.localhost") == (site_id, first["release"])

    response = room.restore(token, site_id, second["id"])  # and forward again
    assert response.status_code == 200
    assert (room.live("restore.localhost") / "index.html").read_text() == "v2"


def test_restore_refusals_are_json(room, git, work):
    site_id, token = room.new_site("refusals")
    url = room.url(site_id, token)
    commit(git, work, {"index.html": "ok"})
    git("push", "-q", url, "main", cwd=work)
    commit(git, work, {"ecstatic.toml": '[build]\ncommand = "exit 7"\n', "index.html": "no"})
    result = git("push", url, "main", cwd=work)
    assert "remote: error: deploy failed:" in result.stderr
    failed, live = room.deploys(token, site_id)
    assert (failed["state"], live["state"]) == ("failed", "live")

    refused = room.restore(token, site_id, failed["id"])
    assert refused.status_code == 409
    assert refused.json()["error"] == "Conflict" and "never went live" in refused.json()["message"]

    unknown = room.restore(token, site_id, "ffffffffffffffff")
    assert unknown.status_code == 404 and unknown.json()["error"] == "NotFound"

    _other_site, other_token = room.new_site("stranger")
    theirs = room.restore(other_token, site_id, live["id"])
    assert theirs.status_code == 404 and theirs.json()["error"] == "NotFound"

    anonymous = room.restore(None, site_id, live["id"])
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "Unauthorized"
    assert (room.live("refusals.localhost") / "index.html").read_text() == "ok"


# -- previews ---------------------------------------------------------------------------


def test_a_branch_deploys_to_its_preview_and_deleting_it_removes_the_preview(room, git, work):
    site_id, token = room.new_site("prev")
    url = room.url(site_id, token)
    commit(git, work, {"index.html": "production"})
    git("push", "-q", url, "main", cwd=work)
    git("checkout", "-q", "-b", "feature/x", cwd=work)
    commit(git, work, {"index.html": "preview"})

    result = git("push", url, "feature/x", cwd=work)

    [preview] = room.site(token, site_id)["previews"]
    assert preview["branch"] == "feature/x"
    assert f"remote: feature/x: live at {preview['url']}" in result.stderr
    assert (room.live(preview["hostname"]) / "index.html").read_text() == "preview"
    assert (room.live("prev.localhost") / "index.html").read_text() == "production"
    newest = room.deploys(token, site_id)[0]
    assert (newest["context"], newest["branch"]) == ("preview", "feature/x")
    assert room.site(token, site_id)["live_deploy"]["context"] == "production"

    result = git("push", url, ":feature/x", cwd=work)

    assert f"remote: deleted feature/x; its preview {preview['hostname']} is gone" in (
        result.stderr
    )
    assert not room.live(preview["hostname"]).exists()
    assert room.site(token, site_id)["previews"] == []
    assert (room.live("prev.localhost") / "index.html").read_text() == "production"


# -- streaming --------------------------------------------------------------------------


def push_body(sha: str, pack: bytes, capabilities: str) -> bytes:
    command = f"{ZERO} {sha} refs/heads/main\0{capabilities}".encode()
    return pkt(command) + b"0000" + pack


def test_a_client_without_sideband_still_deploys(room, git, work):
    site_id, token = room.new_site("noband")
    sha = commit(git, work, {"index.html": "plain"})

    response = post_pack(
        room.port, site_id, token, push_body(sha, pack_of(git, work, sha), "report-status")
    )

    assert response.status_code == 200
    assert b"unpack ok" in response.content and b"ok refs/heads/main" in response.content
    [deploy] = room.wait_deploys(token, site_id, 1)
    assert deploy["state"] == "live" and deploy["commit_sha"] == sha
    assert (room.live("noband.localhost") / "index.html").read_text() == "plain"


def test_the_pusher_hanging_up_mid_deploy_does_not_stop_it(room, git, work):
    site_id, token = room.new_site("hangup")
    sha = commit(git, work, {"ecstatic.toml": slow("finished", 2), "src.txt": "s"})
    body = push_body(sha, pack_of(git, work, sha), "report-status side-band-64k agent=t")
    auth = base64.b64encode(f"x:{token}".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", room.port), timeout=30)
    sock.sendall(
        (
            f"POST /git/{site_id}.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Basic {auth}\r\n"
            "Content-Type: application/x-git-receive-pack-request\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    seen = b""
    while b"deploy queued" not in seen:
        chunk = sock.recv(4096)
        assert chunk, seen
        seen += chunk
    sock.close()  # while the build sleeps

    deploy = room.deploys(token, site_id)[0]
    assert deploy["state"] in ("queued", "building")
    [deploy] = room.wait_deploys(token, site_id, 1)
    assert deploy["state"] == "live"
    assert (room.live("hangup.localhost") / "index.html").read_text() == "finished\n"
    # The api's copy of the log trails by a shipping batch (about half a second).
    deadline = time.monotonic() + 5
    while (
        "live at http://hangup.localhost:8080/"
        not in room.log(token, site_id, deploy["id"])["lines"]
    ):
        assert time.monotonic() < deadline, room.log(token, site_id, deploy["id"])
        time.sleep(0.1)


# -- concurrency and history ------------------------------------------------------------


def test_two_concurrent_pushes_to_one_site_deploy_one_after_the_other(room, git, tmp_path):
    site_id, token = room.new_site("pair")
    url = room.url(site_id, token)
    works = [new_work(git, tmp_path / f"w{i}") for i in range(2)]
    commit(git, works[0], {"ecstatic.toml": slow("main"), "a.txt": "a"})
    git("checkout", "-q", "-b", "feature/b", cwd=works[1])
    commit(git, works[1], {"ecstatic.toml": slow("b"), "b.txt": "b"})
    results = [None, None]

    def push(i, branch):
        results[i] = git("push", url, branch, cwd=works[i], check=False)

    threads = [
        threading.Thread(target=push, args=(0, "main")),
        threading.Thread(target=push, args=(1, "feature/b")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert "remote: main: deploy queued" in results[0].stderr
    assert "remote: live at http://pair.localhost:8080/" in results[0].stderr
    assert "remote: feature/b: deploy queued" in results[1].stderr
    assert "remote: feature/b: live at http://feature-b--pair.localhost:8080/" in results[1].stderr
    deploys = sorted(room.deploys(token, site_id), key=lambda d: d["started_at"])
    assert [d["state"] for d in deploys] == ["live", "live"]
    assert deploys[0]["finished_at"] <= deploys[1]["started_at"]  # one at a time per site
    assert (room.live("pair.localhost") / "index.html").read_text() == "main\n"
    assert (room.live("feature-b--pair.localhost") / "index.html").read_text() == "b\n"


def test_force_pushes_and_older_commits_deploy(room, git, work):
    site_id, token = room.new_site("history")
    url = room.url(site_id, token)
    first = commit(git, work, {"index.html": "one"})
    git("push", "-q", url, "main", cwd=work)
    commit(git, work, {"index.html": "two"})
    git("push", "-q", url, "main", cwd=work)

    result = git("push", "-f", url, f"{first}:refs/heads/main", cwd=work)

    assert "remote: live at http://history.localhost:8080/" in result.stderr
    assert (room.live("history.localhost") / "index.html").read_text() == "one"
    newest = room.deploys(token, site_id)[0]
    assert (newest["number"], newest["commit_sha"], newest["state"]) == (3, first, "live")

    git("reset", "-q", "--hard", first, cwd=work)
    git("commit", "-q", "--amend", "-m", "rewritten", cwd=work)
    (work / "index.html").write_text("rewritten")
    git("commit", "-q", "-am", "rewritten again", cwd=work)
    result = git("push", "-f", url, "main", cwd=work)

    assert "forced update" in result.stderr
    assert "remote: live at http://history.localhost:8080/" in result.stderr
    assert (room.live("history.localhost") / "index.html").read_text() == "rewritten"
    assert room.deploys(token, site_id)[0]["message"] == "rewritten again"


# -- refused before the branch moves ----------------------------------------------------


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"ecstatic.toml": "colour = 'red'\n"}, "ecstatic.toml: unknown key 'colour'"),
        ({"ecstatic.toml": "publish = = 1\n"}, "ecstatic.toml is not valid TOML"),
    ],
)
def test_a_bad_config_is_refused_and_the_branch_does_not_move(room, git, work, files, message):
    site_id, token = room.new_site("badtoml" + str(len(message)))
    url = room.url(site_id, token)
    good = commit(git, work, {"index.html": "good"})
    git("push", "-q", url, "main", cwd=work)
    commit(git, work, {**files, "index.html": "bad"})

    result = git("push", url, "main", cwd=work, check=False)

    assert result.returncode != 0
    assert f"remote: error: deploy rejected: {message}" in result.stderr
    assert git("ls-remote", url, "refs/heads/main").stdout.split()[0] == good
    assert len(room.deploys(token, site_id)) == 1
    assert (room.live(f"badtoml{len(message)}.localhost") / "index.html").read_text() == "good"


def test_a_dot_dot_tree_from_a_hostile_client_is_refused(room, tmp_path):
    # The git CLI will not make a ".." entry; dulwich writes whatever it is given.
    from dulwich import porcelain
    from dulwich.repo import Repo
    from git_kit import build_commit

    site_id, token = room.new_site("dotdot")
    repo = Repo.init(str(tmp_path / "hostile"), mkdir=True)
    sha = build_commit(repo.object_store, {"index.html": "x", "..": {"escape.html": "x"}})
    repo.refs[b"refs/heads/main"] = sha
    errors = __import__("io").BytesIO()

    try:
        porcelain.push(
            repo, room.url(site_id, token), "refs/heads/main", errstream=errors, outstream=errors
        )
    except porcelain.Error as exc:  # some dulwich versions raise for a refused ref
        errors.write(str(exc).encode())

    assert b"deploy rejected: invalid file name '..'" in errors.getvalue()
    assert room.deploys(token, site_id) == []
    assert b"refs/heads/main" not in room.repos.open(site_id).get_refs()
    assert not room.live("dotdot.localhost").exists()


# -- the log and the state ----------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["live", "failed"])
def test_whoever_sees_the_final_state_can_read_the_whole_log(room, git, work, outcome):
    site_id, token = room.new_site(f"whole-log-{outcome}")
    files = {"index.html": "x"}
    if outcome == "failed":
        files["ecstatic.toml"] = '[build]\ncommand = "echo compiling && exit 3"\npublish = "."\n'
    commit(git, work, files)
    pushed = {}
    pusher = threading.Thread(
        target=lambda: pushed.update(
            r=git("push", room.url(site_id, token), "main", cwd=work, check=False)
        )
    )
    pusher.start()

    # Read the log the moment the record says it is over, as a client polling would.
    deadline = time.monotonic() + 60
    while True:
        deploys = room.deploys(token, site_id)
        if deploys and deploys[0]["state"] in ("live", "failed"):
            lines = room.log(token, site_id, deploys[0]["id"])["lines"]
            break
        assert time.monotonic() < deadline, deploys
        time.sleep(0.005)
    pusher.join(60)

    assert deploys[0]["state"] == outcome
    remote = [
        line.removeprefix("remote: ").rstrip()
        for line in pushed["r"].stderr.splitlines()
        if line.startswith("remote: ") and "deploy queued" not in line
    ]
    assert remote and lines == remote  # every line the pusher saw, nothing missing
    if outcome == "live":
        assert lines[-1] == "live at http://whole-log-live.localhost:8080/"
    else:
        assert "compiling" in lines and lines[-1] == "error: the live site was not changed"
