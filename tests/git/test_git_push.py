"""End to end: the real git CLI pushing to the git room on a threaded stdlib server."""

import os
import shutil
import subprocess
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from git_kit import FakeAuthorizer, FakeRecorder, make_site
from prometheus_client import CollectorRegistry

from services.cdn import LocalCDN
from services.core.metrics import GitMetrics
from services.git.app import create_app
from services.git.checkout import Limits
from services.git.deploy import Deployer
from services.git.locks import SiteLocks

pytestmark = pytest.mark.integration


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


class Room:
    """The git room served on 127.0.0.1, with fakes for the api."""

    def __init__(self, root: Path):
        self.root = root
        self.authorizer = FakeAuthorizer()
        self.recorder = FakeRecorder()
        self.cdn = LocalCDN(root / "cdn")
        self.statuses: list[tuple[str, str, int]] = []
        deployer = Deployer(
            self.cdn,
            self.recorder,
            GitMetrics(CollectorRegistry()),
            Limits(max_files=1000, max_bytes=5_000_000),
            SiteLocks(root / "git" / ".locks"),
        )
        app = create_app(root / "git", self.authorizer, deployer)

        def recording(environ, start_response):
            def start(status, headers, exc_info=None):
                self.statuses.append(
                    (environ["REQUEST_METHOD"], environ["PATH_INFO"], int(status[:3]))
                )
                return start_response(status, headers, exc_info)

            return app(environ, start)

        self.server = make_server(
            "127.0.0.1", 0, recording, server_class=_Server, handler_class=_QuietHandler
        )
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, site_id: str, token: str) -> str:
        return f"http://x:{token}@127.0.0.1:{self.port}/git/{site_id}.git"

    def live(self, host: str) -> Path:
        return self.cdn.live_dir / host

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    assert shutil.which("git"), "the git CLI is required (the setup installs it)"
    room = Room(tmp_path_factory.mktemp("gitroom"))
    yield room
    room.stop()


@pytest.fixture
def git(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Pusher",
        "GIT_AUTHOR_EMAIL": "pusher@example.com",
        "GIT_COMMITTER_NAME": "Pusher",
        "GIT_COMMITTER_EMAIL": "pusher@example.com",
        "LC_ALL": "C",
    }

    def run(*args, cwd=None, check=True):
        result = subprocess.run(
            ["git", "-c", "credential.helper=", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    return run


@pytest.fixture
def work(tmp_path, git):
    path = tmp_path / "work"
    git("-c", "init.defaultBranch=main", "init", "-q", str(path))
    return path


def commit(git, work: Path, files: dict, message="update", remove=()) -> str:
    for name, content in files.items():
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    for name in remove:
        git("rm", "-q", name, cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def site(room, site_id, name, token):
    return room.authorizer.add(token, make_site(site_id, name))


def test_push_deploys_and_shows_the_live_url(room, git, work):
    site(room, "a000000000000001", "first", "tok-first")
    sha = commit(git, work, {"index.html": "<h1>first</h1>", "css/site.css": "h1{}"})

    result = git("push", room.url("a000000000000001", "tok-first"), "main", cwd=work)

    assert "remote: live at http://first.localhost:8080/" in result.stderr
    assert f"remote: published 2 files (18 B) from main at {sha[:7]}" in result.stderr
    assert (room.live("first.localhost") / "index.html").read_text() == "<h1>first</h1>"
    assert (room.live("first.localhost") / "css" / "site.css").read_text() == "h1{}"
    [(token, site_id, deploy)] = [d for d in room.recorder.deploys if d[1] == "a000000000000001"]
    assert (token, deploy["commit_sha"], deploy["file_count"]) == ("tok-first", sha, 2)
    assert room.cdn.live_release("first.localhost") == ("a000000000000001", deploy["release"])


def test_clone_gets_what_was_pushed(room, git, work, tmp_path):
    site(room, "a000000000000002", "clone", "tok-clone")
    commit(git, work, {"index.html": "cloned"})
    git("push", "-q", room.url("a000000000000002", "tok-clone"), "main", cwd=work)

    git("clone", "-q", room.url("a000000000000002", "tok-clone"), str(tmp_path / "copy"))

    assert (tmp_path / "copy" / "index.html").read_text() == "cloned"


def test_wrong_token_fails_with_401(room, git, work):
    site(room, "a000000000000003", "locked", "tok-locked")
    commit(git, work, {"index.html": "x"})

    result = git(
        "push", room.url("a000000000000003", "not-the-token"), "main", cwd=work, check=False
    )

    assert result.returncode != 0
    assert "remote: invalid token: check your Ecstatic API token" in result.stderr
    assert "Authentication failed" in result.stderr
    statuses = {s for m, p, s in room.statuses if p.startswith("/git/a000000000000003.git/")}
    assert statuses == {401}
    assert not (room.root / "git" / "a000000000000003.git").exists()


def test_site_the_token_cannot_see_is_not_found(room, git, work):
    site(room, "a000000000000004", "mine", "tok-mine")
    site(room, "a000000000000005", "theirs", "tok-theirs")
    commit(git, work, {"index.html": "x"})

    result = git("push", room.url("a000000000000005", "tok-mine"), "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "remote: site a000000000000005 not found, or it is not yours" in result.stderr
    assert "not found" in result.stderr.splitlines()[-1]
    assert not room.live("theirs.localhost").exists()


def test_second_push_switches_the_release(room, git, work):
    site(room, "a000000000000006", "twice", "tok-twice")
    url = room.url("a000000000000006", "tok-twice")
    commit(git, work, {"index.html": "v1", "old.html": "gone soon"})
    git("push", url, "main", cwd=work)
    first = os.readlink(room.live("twice.localhost"))

    sha = commit(git, work, {"index.html": "v2"}, remove=["old.html"])
    result = git("push", url, "main", cwd=work)

    second = os.readlink(room.live("twice.localhost"))
    assert second != first and second.endswith(sha[:12])
    assert (room.live("twice.localhost") / "index.html").read_text() == "v2"
    assert not (room.live("twice.localhost") / "old.html").exists()
    assert (room.cdn.live_dir / first).is_dir()  # the previous release is kept
    assert "remote: live at http://twice.localhost:8080/" in result.stderr


def test_symlink_push_is_rejected_and_the_live_site_stays(room, git, work):
    site(room, "a000000000000007", "safe", "tok-safe")
    url = room.url("a000000000000007", "tok-safe")
    good = commit(git, work, {"index.html": "safe"})
    git("push", "-q", url, "main", cwd=work)
    before = os.readlink(room.live("safe.localhost"))
    (work / "passwd").symlink_to("/etc/passwd")
    commit(git, work, {"index.html": "hacked"})

    result = git("push", url, "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "remote: error: deploy rejected: symlink 'passwd' is not allowed" in result.stderr
    assert "[remote rejected] main -> main" in result.stderr
    assert os.readlink(room.live("safe.localhost")) == before
    assert (room.live("safe.localhost") / "index.html").read_text() == "safe"
    remote_main = git("ls-remote", url, "refs/heads/main").stdout.split()[0]
    assert remote_main == good  # the branch did not move either


def test_other_branches_are_stored_not_deployed(room, git, work):
    site(room, "a000000000000008", "branches", "tok-branches")
    url = room.url("a000000000000008", "tok-branches")
    commit(git, work, {"index.html": "draft"})
    git("checkout", "-q", "-b", "draft", cwd=work)

    result = git("push", url, "draft", cwd=work)

    assert "remote: stored draft" in result.stderr and "not deployed" in result.stderr
    assert not room.live("branches.localhost").exists()


def test_publish_dir_from_ecstatic_toml(room, git, work):
    site(room, "a000000000000009", "built", "tok-built")
    commit(
        git,
        work,
        {
            "ecstatic.toml": 'publish = "public"\n',
            "src/page.md": "# hi",
            "public/index.html": "built",
        },
    )

    git("push", "-q", room.url("a000000000000009", "tok-built"), "main", cwd=work)

    assert sorted(p.name for p in room.live("built.localhost").iterdir()) == ["index.html"]


def test_large_push_sent_in_chunks(room, git, work):
    site(room, "a00000000000000a", "large", "tok-large")
    blob = os.urandom(300_000)  # incompressible, so the body exceeds the post buffer
    commit(git, work, {"index.html": "big", "data.bin": blob})

    result = git(
        "-c",
        "http.postBuffer=8192",
        "push",
        room.url("a00000000000000a", "tok-large"),
        "main",
        cwd=work,
    )

    assert "remote: live at http://large.localhost:8080/" in result.stderr
    assert (room.live("large.localhost") / "data.bin").read_bytes() == blob
