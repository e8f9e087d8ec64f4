import re
import threading
import time
from datetime import UTC, datetime

import pytest
import requests
from dulwich.errors import HookError
from dulwich.repo import MemoryRepo
from git_kit import FakeRecorder, Link, build_commit, make_site
from prometheus_client import CollectorRegistry

from services.cdn import LocalCDN
from services.core.errors import NotFound, Unauthorized, Unavailable
from services.core.metrics import GitMetrics
from services.git.checkout import DeployRejected, Limits
from services.git.deploy import Deployer, DeployFailed, DeploySuperseded
from services.git.hooks import DeployHook, ValidateHook
from services.git.locks import LockTimeout, SiteLocks
from services.git.recorder import ApiDeployRecorder

SITE_ID = "0123456789abcdef"
ZERO = b"0" * 40


class Env:
    """A deployer over a real LocalCDN in tmp_path, with a fake recorder and a fresh registry."""

    def __init__(self, tmp_path, limits=Limits(max_files=100, max_bytes=10_000), lock_timeout=5.0):
        self.registry = CollectorRegistry()
        self.cdn = LocalCDN(tmp_path / "cdn", sync=False)
        self.recorder = FakeRecorder()
        self.locks = SiteLocks(tmp_path / "locks", timeout=lock_timeout, poll=0.01)
        self.deployer = Deployer(
            self.cdn,
            self.recorder,
            GitMetrics(self.registry),
            limits,
            self.locks,
            now=lambda: datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        )
        self.site = make_site(SITE_ID, "blog")
        self.repo = MemoryRepo()
        self.repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/main")

    def deploys(self, outcome):
        return (
            self.registry.get_sample_value("ecstatic_git_deploys_total", {"outcome": outcome}) or 0
        )

    def commit(self, spec):
        return build_commit(self.repo.object_store, spec)

    def push(self, ref, sha, old=ZERO):
        """Move the ref as dulwich would, then run the post-receive hook."""
        if sha == ZERO:
            del self.repo.refs[ref]
        else:
            self.repo.refs[ref] = sha
        hook = DeployHook(self.deployer, self.repo, SITE_ID, self.site, "tok")
        return hook.execute([(old, sha, ref)]).decode()

    def live(self, path="index.html"):
        return (self.cdn.live_dir / "blog.localhost" / path).read_text()


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


# -- Deployer ---------------------------------------------------------------------------


def test_deploy_publishes_records_and_counts(env):
    sha = env.commit({"index.html": "hello", "a": {"b.css": "x"}})

    done = env.deployer.deploy(SITE_ID, env.site, "tok", env.repo.object_store, sha)

    assert done.release == f"20240501T120000123456Z-{sha[:12].decode()}"
    assert (done.file_count, done.bytes, done.url) == (2, 6, "http://blog.localhost:8080/")
    assert env.live() == "hello"
    assert env.cdn.live_release("blog.localhost") == (SITE_ID, done.release)
    assert env.recorder.deploys == [
        (
            "tok",
            SITE_ID,
            {"commit_sha": sha.decode(), "release": done.release, "file_count": 2, "bytes": 6},
        )
    ]
    assert env.deploys("success") == 1
    assert env.registry.get_sample_value("ecstatic_git_deploy_bytes_sum") == 6
    assert env.registry.get_sample_value("ecstatic_git_deploy_duration_seconds_count") == 1


def test_rejected_content_counts_and_leaves_the_cdn_alone(env):
    sha = env.commit({"index.html": "x", "l": Link("/etc")})
    with pytest.raises(DeployRejected, match="symlink"):
        env.deployer.deploy(SITE_ID, env.site, "tok", env.repo.object_store, sha)
    assert env.deploys("rejected") == 1 and env.deploys("success") == 0
    assert not env.cdn.releases_dir.exists()
    assert env.recorder.deploys == []


def test_byte_limit_rejects_midway_without_touching_the_live_site(tmp_path):
    env = Env(tmp_path, limits=Limits(max_files=10, max_bytes=8))
    first = env.commit({"index.html": "live"})
    env.deployer.deploy(SITE_ID, env.site, "tok", env.repo.object_store, first)
    big = env.commit({"index.html": "new", "z.bin": "123456789"})

    with pytest.raises(DeployRejected, match="8 B"):
        env.deployer.deploy(SITE_ID, env.site, "tok", env.repo.object_store, big)

    assert env.live() == "live"
    assert len(env.cdn.releases(SITE_ID)) == 1
    assert [p.name for p in (env.cdn.releases_dir / SITE_ID).iterdir()] == env.cdn.releases(SITE_ID)
    assert env.deploys("rejected") == 1


def test_unrecorded_deploy_is_live_and_reported(env):
    env.recorder.fail = Unavailable("api unreachable: ConnectionError")
    sha = env.commit({"index.html": "x"})
    done = env.deployer.deploy(SITE_ID, env.site, "tok", env.repo.object_store, sha)
    assert done.record_error == "api unreachable: ConnectionError"
    assert env.live() == "x"
    assert env.deploys("success") == 1


def test_publish_errors_are_failures(env):
    sha = env.commit({"index.html": "x"})
    with pytest.raises(DeployFailed, match="could not publish"):
        env.deployer.deploy(
            SITE_ID, dict(env.site, hostnames=["../evil"]), "tok", env.repo.object_store, sha
        )
    with pytest.raises(DeployFailed, match="no hostnames"):
        env.deployer.deploy(
            SITE_ID, dict(env.site, hostnames=[]), "tok", env.repo.object_store, sha
        )
    assert env.deploys("failed") == 2


def test_unexpected_errors_become_failures(env):
    class BrokenCDN:
        def publish(self, *args):
            raise RuntimeError("disk on fire")

    env.deployer._cdn = BrokenCDN()
    sha = env.commit({"index.html": "x"})
    with pytest.raises(DeployFailed, match="internal error"):
        env.deployer.deploy(SITE_ID, env.site, "tok", env.repo.object_store, sha)
    assert env.deploys("failed") == 1


def test_a_busy_site_times_out(tmp_path):
    env = Env(tmp_path, lock_timeout=0.05)
    sha = env.commit({"index.html": "x"})
    with env.locks.hold(SITE_ID):
        with pytest.raises(DeployFailed, match="still running"):
            env.deployer.deploy(SITE_ID, env.site, "tok", env.repo.object_store, sha)
    assert env.deploys("failed") == 1


def test_superseded_pushes_do_not_deploy(env):
    sha = env.commit({"index.html": "old"})
    with pytest.raises(DeploySuperseded):
        env.deployer.deploy(
            SITE_ID, env.site, "tok", env.repo.object_store, sha, still_current=lambda: False
        )
    assert not env.cdn.releases_dir.exists()


def test_check_walks_trees_and_counts_rejections(env):
    good = env.commit({"index.html": "x"})
    env.deployer.check(SITE_ID, env.repo.object_store, good)
    bad = env.commit({"..": {"x": "y"}})
    with pytest.raises(DeployRejected):
        env.deployer.check(SITE_ID, env.repo.object_store, bad)
    assert env.deploys("rejected") == 1


# -- SiteLocks --------------------------------------------------------------------------


def test_site_locks_exclude_each_other_across_threads(tmp_path):
    locks = SiteLocks(tmp_path, timeout=5, poll=0.005)
    inside = []
    overlap = []

    def work(n):
        with locks.hold(SITE_ID):
            inside.append(n)
            if len(inside) > 1:
                overlap.append(n)
            time.sleep(0.01)
            inside.remove(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlap == []


def test_site_locks_time_out_and_are_released(tmp_path):
    ticks = iter(range(100))
    locks = SiteLocks(tmp_path, timeout=3, clock=lambda: next(ticks), sleep=lambda s: None)
    with locks.hold(SITE_ID):
        with pytest.raises(LockTimeout):
            with locks.hold(SITE_ID):
                pass
        with locks.hold("other"):  # other sites are independent
            pass
    with locks.hold(SITE_ID):  # released after the block
        pass


# -- DeployHook (post-receive) ----------------------------------------------------------


def test_push_to_main_deploys_and_says_where(env):
    sha = env.commit({"index.html": "hi"})
    text = env.push(b"refs/heads/main", sha)
    lines = text.splitlines()
    assert lines[-1] == "live at http://blog.localhost:8080/"
    assert re.match(
        rf"published 1 file \(2 B\) from main at {sha[:7].decode()} as release \S+$", lines[-2]
    )
    assert env.live() == "hi"


def test_push_to_another_branch_is_stored_not_deployed(env):
    sha = env.commit({"index.html": "draft"})
    text = env.push(b"refs/heads/feature", sha)
    assert text == f"stored feature ({sha[:7].decode()}); not deployed: only main goes live\n"
    assert not env.cdn.live_dir.exists()


def test_push_to_master_deploys_and_repoints_a_dangling_head(env):
    sha = env.commit({"index.html": "m"})
    text = env.push(b"refs/heads/master", sha)
    assert "live at" in text
    assert env.repo.refs.get_symrefs()[b"HEAD"] == b"refs/heads/master"


def test_head_names_the_deploy_branch(env):
    env.repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/prod")
    sha = env.commit({"index.html": "p"})
    assert "live at" in env.push(b"refs/heads/prod", sha)
    assert env.live() == "p"


def test_head_branch_wins_when_several_deploy_branches_are_pushed(env):
    main = env.commit({"index.html": "main"})
    master = env.commit({"index.html": "master"})
    env.repo.refs[b"refs/heads/main"] = main
    env.repo.refs[b"refs/heads/master"] = master
    hook = DeployHook(env.deployer, env.repo, SITE_ID, env.site, "tok")
    text = hook.execute(
        [(ZERO, master, b"refs/heads/master"), (ZERO, main, b"refs/heads/main")]
    ).decode()
    assert f"stored master ({master[:7].decode()}); not deployed: main was" in text
    assert env.live() == "main"


def test_deleting_a_branch_keeps_the_live_site(env):
    sha = env.commit({"index.html": "x"})
    env.push(b"refs/heads/main", sha)
    text = env.push(b"refs/heads/main", ZERO, old=sha)
    assert text == "deleted main; the live site is unchanged\n"
    assert env.live() == "x"


def test_rejected_deploy_becomes_error_lines(env):
    sha = env.commit({"index.html": "x", "l": Link("/")})
    lines = env.push(b"refs/heads/main", sha).splitlines()
    assert lines[0] == (
        "error: deploy rejected: symlink 'l' is not allowed: "
        "sites are published as regular files only"
    )
    assert lines[1].startswith("error: the live site was not changed")


def test_failed_deploy_becomes_error_lines_with_a_retry_hint(tmp_path):
    env = Env(tmp_path, lock_timeout=0.0)
    sha = env.commit({"index.html": "x"})
    with env.locks.hold(SITE_ID):
        lines = env.push(b"refs/heads/main", sha).splitlines()
    assert lines[0].startswith("error: deploy failed: another deploy")
    assert lines[-1].startswith("hint: to retry, push a new commit")


def test_unrecorded_deploy_warns(env):
    env.recorder.fail = Unavailable("api answered 500")
    text = env.push(b"refs/heads/main", env.commit({"index.html": "x"}))
    assert "warning: the site is live but the deploy was not recorded: api answered 500" in text
    assert text.endswith("live at http://blog.localhost:8080/\n")


def test_superseded_push_says_so(env):
    old = env.commit({"index.html": "old"})
    new = env.commit({"index.html": "new"})
    env.repo.refs[b"refs/heads/main"] = new  # a newer push already moved the branch
    hook = DeployHook(env.deployer, env.repo, SITE_ID, env.site, "tok")
    text = hook.execute([(ZERO, old, b"refs/heads/main")]).decode()
    assert "newer push deploys instead" in text
    assert not env.cdn.releases_dir.exists()


def test_hook_never_raises(env):
    class Exploding:
        def deploy(self, *args):
            raise ZeroDivisionError()

    sha = env.commit({"index.html": "x"})
    env.repo.refs[b"refs/heads/main"] = sha
    hook = DeployHook(Exploding(), env.repo, SITE_ID, env.site, "tok")
    text = hook.execute([(ZERO, sha, b"refs/heads/main")]).decode()
    assert text.startswith("error: deploy failed: internal error")


def test_notes_are_shown(env):
    text = env.push(b"refs/heads/main", env.commit({"index.html": "x", "ecstatic.toml": "foo = 1"}))
    assert "note: ecstatic.toml: ignored unknown setting 'foo'" in text


# -- ValidateHook (update) --------------------------------------------------------------


def test_update_hook_refuses_unpublishable_deploy_branches(env):
    bad = env.commit({"index.html": "x", "l": Link("/")})
    hook = ValidateHook(env.deployer, env.repo, SITE_ID)
    with pytest.raises(HookError, match="deploy rejected: symlink 'l'"):
        hook.execute(b"refs/heads/main", ZERO, bad)
    assert hook.execute(b"refs/heads/feature", ZERO, bad) == (b"", b"")  # not deployed: fine
    assert hook.execute(b"refs/heads/main", bad, ZERO) == (b"", b"")  # deletion
    good = env.commit({"index.html": "x"})
    assert hook.execute(b"refs/heads/main", ZERO, good) == (b"", b"")


# -- ApiDeployRecorder ------------------------------------------------------------------


class FakeResponse:
    def __init__(self, status, body=None):
        self.status_code = status
        self._body = body

    def json(self):
        if self._body is None:
            raise ValueError("no json")
        return self._body


class FakeSession:
    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def post(self, url, json, headers, timeout):
        self.calls.append((url, json, headers))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_recorder_posts_with_the_pushers_token():
    session = FakeSession(FakeResponse(201, {"id": "d1", "status": "live"}))
    recorder = ApiDeployRecorder("http://api:1/", session=session)
    body = {"commit_sha": "a" * 40, "release": "r", "file_count": 1, "bytes": 2}
    assert recorder.record("tok", SITE_ID, body) == {"id": "d1", "status": "live"}
    assert session.calls == [
        (f"http://api:1/v1/sites/{SITE_ID}/deploys", body, {"Authorization": "Bearer tok"})
    ]


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (
            FakeResponse(401, {"error": "Unauthorized", "message": "invalid token"}),
            Unauthorized,
            "invalid token",
        ),
        (FakeResponse(404, {"error": "NotFound", "message": "no site"}), NotFound, "no site"),
        (FakeResponse(500), Unavailable, "500"),
        (requests.ConnectionError("down"), Unavailable, "ConnectionError"),
    ],
)
def test_recorder_errors(answer, error, text):
    recorder = ApiDeployRecorder("http://api:1", session=FakeSession(answer))
    with pytest.raises(error, match=text):
        recorder.record("tok", SITE_ID, {})
