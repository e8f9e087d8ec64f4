"""The pipeline's real steps (checkout, build, publish, activate, record) and the push hooks,
with a fake api and a real LocalCDN in tmp: outcomes, metrics, what stays live."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import pytest
from dulwich.errors import HookError
from dulwich.repo import MemoryRepo
from git_kit import Link, build_commit, make_site
from prometheus_client import CollectorRegistry

from services.build import BuildLimits, Sandbox
from services.cdn import LocalCDN
from services.cdn.base import PublishError
from services.cdn.local import remove_tree
from services.core.errors import Unavailable
from services.core.metrics import GitMetrics
from services.git.building import SandboxBuilder
from services.git.checkout import Limits
from services.git.deploy_log import DeployLog
from services.git.deploys import DeployStarter, Push
from services.git.hooks import DeployHook, ValidateHook
from services.git.locks import SiteLocks
from services.git.pipeline import DeployJob, Pipeline, StepFailed
from services.git.queue import DeployQueue
from services.git.steps import Activate, Build, Checkout, Publish, Record, release_id

SITE_ID = "0123456789abcdef"
ZERO = b"0" * 40


class FakeApi:
    """The api's deploy routes in memory; ``fail`` maps a method name to what it raises."""

    def __init__(self):
        self.deploys: dict[str, dict] = {}
        self.updates: list[tuple[str, dict]] = []
        self.activated: list[str] = []
        self.logs: dict[str, list[str]] = {}
        self.removed: list[str] = []
        self.fail: dict[str, Exception] = {}

    def _maybe_fail(self, name):
        if name in self.fail:
            raise self.fail[name]

    def create(self, credential, site_id, body):
        assert credential == "ecsd_cred"
        self._maybe_fail("create")
        number = len(self.deploys) + 1
        deploy_id = f"d{number:015d}"
        hostname = "blog.localhost"
        if body["context"] == "preview":
            hostname = f"{body['branch'].replace('/', '-')}--blog.localhost"
        deploy = {"id": deploy_id, "number": number, "state": "queued", "hostname": hostname}
        self.deploys[deploy_id] = {**deploy, **body}
        return dict(self.deploys[deploy_id])

    def update(self, credential, site_id, deploy_id, changes):
        assert credential == "ecsd_cred"
        if changes.get("state") == "live":
            self._maybe_fail("update_live")
        self._maybe_fail("update")
        self.updates.append((deploy_id, dict(changes)))
        self.deploys[deploy_id].update(changes)
        return dict(self.deploys[deploy_id])

    def activate(self, credential, site_id, deploy_id):
        self._maybe_fail("activate")
        self.activated.append(deploy_id)
        return {}

    def list(self, credential, site_id):
        return sorted(self.deploys.values(), key=lambda d: -d["number"])

    def append_log(self, credential, site_id, deploy_id, lines):
        self.logs.setdefault(deploy_id, []).extend(lines)

    def remove_preview(self, credential, site_id, branch):
        self.removed.append(branch)

    def purge(self, credential, site_id):
        self._maybe_fail("purge")


class BrokenCDN:
    """A release backend whose storage fails."""

    def __init__(self, cdn, stage=None, activate=None):
        self._cdn, self._stage, self._activate = cdn, stage, activate

    def stage(self, *args, **kwargs):
        if self._stage:
            raise self._stage
        return self._cdn.stage(*args, **kwargs)

    def activate(self, *args):
        if self._activate:
            raise self._activate
        return self._cdn.activate(*args)

    def prune(self, *args):
        return self._cdn.prune(*args)


class Env:
    """The real steps over a real LocalCDN, a fake api and a fresh registry."""

    def __init__(
        self, tmp_path: Path, limits=Limits(max_files=100, max_bytes=10_000), cdn=None, work=None
    ):
        self.tmp_path = tmp_path
        self.registry = CollectorRegistry()
        self.metrics = GitMetrics(self.registry)
        self.cdn = LocalCDN(tmp_path / "cdn", sync=False)
        self.api = FakeApi()
        self.checkout = Checkout(limits)
        builder = SandboxBuilder(
            Sandbox(toolchains=(Path(sys.prefix),), hidden=(tmp_path / "cdn",)),
            BuildLimits(timeout_seconds=60),
            self.metrics,
            slots=1,
        )
        backend = cdn(self.cdn) if cdn else self.cdn
        self.steps = [
            self.checkout,
            Build(builder),
            Publish(backend, self.metrics),
            Activate(backend, self.api, self.metrics),
            Record(self.api, backend, keep=2),
        ]
        self.work_root = work or tmp_path / "work"
        self.pipeline = Pipeline(self.steps, self.api, self.metrics, self.work_root)
        self.site = make_site(SITE_ID, "blog")
        self.repo = MemoryRepo()
        self.repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/main")

    def commit(self, spec):
        return build_commit(self.repo.object_store, spec)

    def job(self, sha, context="production", branch="main", site=None):
        body = {"context": context, "branch": branch, "commit_sha": sha.decode()}
        deploy = self.api.create("ecsd_cred", SITE_ID, body)
        return DeployJob(
            site_id=SITE_ID,
            site=site or self.site,
            deploy=deploy,
            repo=self.repo,
            commit=sha,
            credential="ecsd_cred",
            log=DeployLog(),
        )

    def deploy(self, spec, **kw):
        job = self.job(self.commit(spec), **kw)
        outcome = self.pipeline.run(job)
        return outcome, job

    def outcomes(self, outcome, reason):
        labels = {"outcome": outcome, "reason": reason}
        return self.registry.get_sample_value("ecstatic_git_deploys_total", labels) or 0

    def live(self, path="index.html", host="blog.localhost"):
        return (self.cdn.live_dir / host / path).read_text()


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


@pytest.fixture
def build_env(tmp_path):
    # Builds run as a slot uid that must be able to reach the work directory; pytest's
    # tmp root is 0700, so the work root lives in a directory anyone may traverse.
    work = Path(tempfile.mkdtemp(prefix="ecstatic-steps-"))
    work.chmod(0o711)
    yield Env(tmp_path, work=work / "work")
    remove_tree(work)


# -- the whole pipeline: outcomes and metrics ------------------------------------------


def test_a_deploy_goes_live_records_and_counts(env):
    outcome, job = env.deploy({"index.html": "hello", "a": {"b.css": "x"}})

    assert outcome == "live"
    assert job.release == release_id(job) == f"00000001-{job.deploy_id}"
    assert (job.file_count, job.bytes, job.url) == (2, 6, "http://blog.localhost:8080/")
    assert env.live() == "hello"
    assert env.cdn.live_release("blog.localhost") == (SITE_ID, job.release)
    final = env.api.deploys[job.deploy_id]
    assert (final["state"], final["release"], final["file_count"], final["bytes"]) == (
        "live",
        job.release,
        2,
        6,
    )
    assert env.api.activated == [job.deploy_id]
    assert env.outcomes("live", "none") == 1
    assert env.registry.get_sample_value("ecstatic_git_deploy_bytes_sum") == 6
    assert env.registry.get_sample_value("ecstatic_git_deploy_duration_seconds_count") == 1
    assert job.log.lines[-2:] == [
        f"published 2 files (6 B) as release {job.release}",
        "live at http://blog.localhost:8080/",
    ]
    assert not list((env.tmp_path / "work").iterdir())


def test_refused_content_counts_and_leaves_nothing_deployed(env):
    outcome, job = env.deploy({"index.html": "x", "l": Link("/etc")})

    assert outcome == "failed"
    assert env.outcomes("failed", "rejected") == 1 and env.outcomes("live", "none") == 0
    assert not env.cdn.releases_dir.exists() and not env.cdn.live_dir.exists()
    assert env.api.deploys[job.deploy_id]["state"] == "failed"
    assert env.api.activated == []
    assert job.log.lines[0].startswith("error: deploy failed: symlink 'l' is not allowed")
    assert job.log.lines[1] == "error: the live site was not changed"


def test_byte_limit_refuses_midway_without_touching_the_live_site(tmp_path):
    env = Env(tmp_path, limits=Limits(max_files=10, max_bytes=8))
    assert env.deploy({"index.html": "live"})[0] == "live"

    outcome, job = env.deploy({"index.html": "new", "z.bin": "123456789"})

    assert outcome == "failed"
    assert any("8 B" in line for line in job.log.lines)
    assert env.live() == "live"
    assert len(env.cdn.releases(SITE_ID)) == 1
    assert env.outcomes("failed", "rejected") == 1


def test_a_store_failure_at_publish_leaves_the_live_site(tmp_path):
    env = Env(tmp_path, cdn=lambda cdn: BrokenCDN(cdn, stage=PublishError("disk full")))
    env.cdn.stage(SITE_ID, "00000000-old", _dir(tmp_path / "old", "old"))
    env.cdn.activate(SITE_ID, ["blog.localhost"], "00000000-old")

    outcome, job = env.deploy({"index.html": "new"})

    assert outcome == "failed"
    assert "error: deploy failed: could not store the release: disk full" in job.log.lines
    assert env.api.deploys[job.deploy_id]["reason"] == "publish_failed"
    assert env.outcomes("failed", "publish_failed") == 1
    assert env.live() == "old"


def test_bad_hostnames_fail_at_activate_and_the_live_site_stays(env):
    env.deploy({"index.html": "old"})

    outcome, job = env.deploy({"index.html": "new"}, site=dict(env.site, hostnames=["../evil"]))

    assert outcome == "failed"
    assert env.api.deploys[job.deploy_id]["reason"] == "activate_failed"
    assert any("could not make the release live" in line for line in job.log.lines)
    assert env.live() == "old"
    assert env.outcomes("failed", "activate_failed") == 1


def test_unexpected_errors_are_internal_failures(tmp_path):
    env = Env(tmp_path, cdn=lambda cdn: BrokenCDN(cdn, stage=RuntimeError("disk on fire")))
    outcome, job = env.deploy({"index.html": "x"})
    assert outcome == "failed"
    assert "error: deploy failed: internal error (see the server logs)" in job.log.lines
    assert all("disk on fire" not in line for line in job.log.lines)
    assert env.outcomes("failed", "internal") == 1


@pytest.mark.parametrize("broken", ["update_live", "activate"])
def test_a_record_failure_says_live_but_not_recorded(env, broken):
    env.api.fail[broken] = Unavailable("api answered 500")

    outcome, job = env.deploy({"index.html": "x"})

    assert outcome == "live"
    assert env.live() == "x"
    assert (
        "warning: the site is live but the deploy was not recorded: api answered 500"
        in job.log.lines
    )
    # "live at" comes first (before the record says live); the warning follows it.
    assert job.log.lines[-2:] == [
        "live at http://blog.localhost:8080/",
        "warning: the site is live but the deploy was not recorded: api answered 500",
    ]
    assert not any(line.startswith("error:") for line in job.log.lines)
    assert env.outcomes("live", "none") == 1


def test_a_newer_push_supersedes_and_nothing_is_stored(env):
    old, new = env.commit({"index.html": "old"}), env.commit({"index.html": "new"})
    env.repo.refs[b"refs/heads/main"] = new
    job = env.job(old)
    job.still_current = lambda: env.repo.refs[b"refs/heads/main"] == old

    assert env.pipeline.run(job) == "superseded"
    assert not env.cdn.releases_dir.exists()
    assert "main moved on: a newer push deploys instead" in job.log.lines
    assert env.outcomes("superseded", "superseded") == 1


def test_a_build_command_runs_in_the_sandbox_and_its_output_is_published(build_env):
    env = build_env
    toml = '[build]\ncommand = "mkdir -p out && echo built by $X > out/index.html"\n'
    toml += 'publish = "out"\nenvironment = { X = "sh" }\n'

    outcome, job = env.deploy({"ecstatic.toml": toml, "src.txt": "s"})

    assert outcome == "live", job.log.lines
    assert env.live() == "built by sh\n"
    assert any(line.startswith("building with") for line in job.log.lines)
    assert any(line.startswith("built in ") for line in job.log.lines)


def test_a_failing_build_is_reported_with_its_reason(build_env):
    env = build_env
    env.deploy({"index.html": "old"})
    toml = '[build]\ncommand = "echo broken >&2; exit 3"\n'

    outcome, job = env.deploy({"ecstatic.toml": toml, "index.html": "new"})

    assert outcome == "failed"
    assert env.api.deploys[job.deploy_id]["reason"] == "build_failed"
    assert "broken" in job.log.lines
    assert env.live() == "old"


# -- single steps -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"index.html": "x", "l": Link("/")}, "symlink 'l' is not allowed"),
        ({"..": {"x": "y"}}, "invalid file name '..'"),
        ({"d": {"d": {"d": {"index.html": "x"}}}}, "directories nested more than 2 deep"),
        (
            {"ecstatic.toml": "x = " + "[" * 5000 + "]" * 5000, "i.html": "x"},
            "ecstatic.toml nests arrays or tables 5000 deep",
        ),
        ({"ecstatic.toml": "colour = 1", "i.html": "x"}, "unknown key 'colour'"),
        ({"ecstatic.toml": "publish = = 1", "i.html": "x"}, "not valid TOML"),
    ],
)
def test_checkout_check_refuses_without_writing(tmp_path, spec, message):
    repo = MemoryRepo()
    checkout = Checkout(Limits(max_files=100, max_bytes=10_000, max_depth=2))
    sha = build_commit(repo.object_store, spec)
    with pytest.raises(StepFailed) as info:
        checkout.check(repo, sha)
    assert info.value.reason == "rejected" and message in info.value.message
    assert list(tmp_path.iterdir()) == []

    hook = ValidateHook(lambda new: checkout.check(repo, new), SITE_ID)
    with pytest.raises(
        HookError, match="^deploy rejected: (ecstatic.toml)?.*" + re.escape(message)
    ):
        hook.execute(b"refs/heads/main", ZERO, sha)
    assert hook.execute(b"refs/heads/main", sha, ZERO) == (b"", b"")  # deleting is fine
    assert hook.execute(b"refs/tags/v1", ZERO, sha) == (b"", b"")  # only branches deploy


def test_checkout_writes_the_whole_tree_and_notes_submodules(env):
    from git_kit import Submodule

    sha = env.commit({"index.html": "x", "ecstatic.toml": "[build]\n", "vendor": Submodule()})
    job = env.job(sha)
    job.workdir = env.tmp_path / "w"
    job.workdir.mkdir()
    env.checkout.run(job)
    assert sorted(p.name for p in (job.workdir / "src").iterdir()) == ["index.html"]
    assert any("submodule 'vendor'" in line for line in job.log.lines)
    assert job.log.lines[-1] == f"checked out {sha[:7].decode()} (1 files, 1 B)"


def test_validate_hook_refuses_plainly_when_the_check_crashes():
    def crash(sha):
        raise ZeroDivisionError

    with pytest.raises(HookError, match="the push could not be checked; try again"):
        ValidateHook(crash, SITE_ID).execute(b"refs/heads/main", ZERO, b"1" * 40)


def test_publish_stages_and_activate_switches(env):
    sha = env.commit({"index.html": "x"})
    job = env.job(sha)
    job.publish_dir = _dir(env.tmp_path / "pub", "staged")
    Publish(env.cdn, env.metrics).run(job)
    assert env.cdn.has_release(SITE_ID, job.release)
    assert not env.cdn.live_dir.exists()  # nothing is live before activate
    Activate(env.cdn, env.api, env.metrics).run(job)
    assert env.live() == "staged"
    assert job.log.lines == [f"published 1 file (6 B) as release {job.release}"]


def test_activate_of_a_preview_switches_only_its_hostname(env):
    env.deploy({"index.html": "prod"})
    outcome, job = env.deploy({"index.html": "preview"}, context="preview", branch="feature/x")
    assert outcome == "live"
    assert env.live(host="feature-x--blog.localhost") == "preview"
    assert env.live() == "prod"
    assert job.url == "http://feature-x--blog.localhost:8080/"


def test_record_prunes_to_the_kept_releases(env):
    for n in range(4):
        env.deploy({"index.html": f"v{n}"})
    newest = [d["release"] for d in env.api.list("ecsd_cred", SITE_ID)[:2]]
    assert env.cdn.releases(SITE_ID) == newest
    assert env.live() == "v3"


def test_a_busy_site_times_out_in_the_queue(env, tmp_path):
    locks = SiteLocks(tmp_path / "locks", timeout=0.05, poll=0.01)
    queue = DeployQueue(env.pipeline, locks, workers=1)
    job = env.job(env.commit({"index.html": "x"}))
    with locks.hold(SITE_ID):
        assert queue.submit(job).result(10) == "failed"
    assert job.log.lines == [
        f"error: deploy failed: another deploy of site {SITE_ID} is still running",
        "error: the live site was not changed",
    ]
    assert list(job.log.follow()) == job.log.lines  # closed
    assert env.api.deploys[job.deploy_id]["state"] == "failed"
    queue.stop(5)


# -- DeployHook (post-receive) ----------------------------------------------------------


def _hook(env, tmp_path, site=None):
    queue = DeployQueue(env.pipeline, SiteLocks(tmp_path / "locks"), workers=1)
    starter = DeployStarter(env.api, queue, env.cdn)
    push = Push(site_id=SITE_ID, site=site or env.site, repo=env.repo, credential="ecsd_cred")
    return DeployHook(starter, push), queue


def test_post_receive_queues_deploys_and_streams_their_log(env, tmp_path):
    sha = env.commit({"index.html": "hi"})
    env.repo.refs[b"refs/heads/main"] = sha
    hook, queue = _hook(env, tmp_path)
    lines = []
    hook.stream([(ZERO, sha, b"refs/heads/main")], lines.append)
    deploy_id = next(iter(env.api.deploys))
    assert lines[0] == "main: deploy queued"
    assert lines[-1] == "live at http://blog.localhost:8080/"
    assert f"published 1 file (2 B) as release 00000001-{deploy_id}" in lines
    queue.stop(5)  # the log's last batch is shipped as the deploy ends
    assert env.api.logs[deploy_id] == lines[1:]  # the api keeps the same log
    assert env.live() == "hi"


def test_a_client_without_sideband_gets_the_collected_output(env, tmp_path):
    sha = env.commit({"index.html": "m"})
    env.repo.refs[b"refs/heads/master"] = sha
    hook, queue = _hook(env, tmp_path)
    text = hook.execute([(ZERO, sha, b"refs/heads/master")]).decode()
    assert text.startswith("master: deploy queued\n")
    assert text.endswith("live at http://blog.localhost:8080/\n")
    assert env.repo.refs.get_symrefs()[b"HEAD"] == b"refs/heads/master"  # was dangling
    queue.stop(5)


def test_the_pusher_leaving_ends_the_following_not_the_deploy(env, tmp_path):
    sha = env.commit({"index.html": "alone"})
    env.repo.refs[b"refs/heads/main"] = sha
    hook, queue = _hook(env, tmp_path)
    seen = []

    def write(line):
        seen.append(line)
        if len(seen) == 2:
            raise BrokenPipeError("the pusher hung up")

    hook.stream([(ZERO, sha, b"refs/heads/main")], write)
    queue.stop(10)  # waits for the running deploy
    assert len(seen) == 2
    assert env.live() == "alone"
    assert next(iter(env.api.deploys.values()))["state"] == "live"


def test_deleting_a_branch_removes_its_preview(env, tmp_path):
    env.deploy({"index.html": "p"}, context="preview", branch="feature/x")
    preview = {"branch": "feature/x", "hostname": "feature-x--blog.localhost"}
    hook, queue = _hook(env, tmp_path, site=dict(env.site, previews=[preview]))
    lines = []
    hook.stream([(b"1" * 40, ZERO, b"refs/heads/feature/x")], lines.append)
    assert lines == ["deleted feature/x; its preview feature-x--blog.localhost is gone"]
    assert env.api.removed == ["feature/x"]
    assert not (env.cdn.live_dir / "feature-x--blog.localhost").exists()
    lines.clear()
    hook.stream([(b"1" * 40, ZERO, b"refs/heads/never")], lines.append)
    assert lines == ["deleted never; it had no preview"]
    queue.stop(5)


def test_deleting_a_branch_finds_its_preview_even_from_a_stale_site(env, tmp_path):
    # The site comes from the authorizer's cache, which may predate the branch's preview.
    _, job = env.deploy({"index.html": "p"}, context="preview", branch="feature/y")
    env.api.deploys[job.deploy_id]["current"] = True
    hook, queue = _hook(env, tmp_path, site=dict(env.site, previews=[]))
    lines = []
    hook.stream([(b"1" * 40, ZERO, b"refs/heads/feature/y")], lines.append)
    assert lines == ["deleted feature/y; its preview feature-y--blog.localhost is gone"]
    assert env.api.removed == ["feature/y"]
    assert not (env.cdn.live_dir / "feature-y--blog.localhost").exists()
    queue.stop(5)


def test_tags_are_stored_not_deployed_and_the_hook_never_raises(env, tmp_path):
    hook, queue = _hook(env, tmp_path)
    lines = []
    hook.stream([(ZERO, b"1" * 40, b"refs/tags/v1")], lines.append)
    assert lines == ["stored refs/tags/v1; only branches deploy"]
    env.api.fail["create"] = Unavailable("api unreachable")
    lines.clear()
    sha = env.commit({"index.html": "x"})
    hook.stream([(ZERO, sha, b"refs/heads/main")], lines.append)
    assert lines[0] == "error: deploy failed: internal error (see the server logs)"
    assert lines[1].startswith("hint: to retry, push a new commit")
    queue.stop(5)


def _dir(path: Path, content: str) -> Path:
    path.mkdir(parents=True)
    (path / "index.html").write_text(content)
    return path
