"""The deploy pipeline on ``bunny``: real steps, a real api, the Bunny double underneath.

Every deploy here runs ``Pipeline`` with the git room's real ``Publish``, ``Activate`` and
``Record`` steps over ``BunnyReleases`` (a ``LocalCDN`` release store plus ``BunnyCDN``
on a ``BunnyStorage`` client), talking to the real api app (``create_app`` with a real
``MetadataStore``) over HTTP on 127.0.0.1, whose purger is ``purger_for(config.deploy)``:
the real ``BunnyPurge`` pointed at the double's Core API. Restores go through the git
room's ``RestoreApp`` with the real ``SiteAuthorizer`` and ``DeployApi``. Only the build
is a stand-in: a step named ``build`` that hands over a prepared directory.

Request counts come from the double's own log of what reached it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import threading
from pathlib import Path

import pytest
import requests
from falcon import testing
from prometheus_client import CollectorRegistry

from services.cdn.base import PublishError
from services.cdn.bunny import BunnyCDN
from services.cdn.bunny_http import RetryPolicy
from services.cdn.bunny_releases import BunnyReleases
from services.cdn.bunny_storage import BunnyStorage
from services.cdn.local import LocalCDN
from services.core.auth import SiteAuthorizer
from services.core.config import Config
from services.core.metrics import GitMetrics, HttpMetrics
from services.core.runtime import Context
from services.falcon_apps.api import app as api_app
from services.falcon_apps.api import purge as api_purge
from services.falcon_apps.api.purge import BunnyZonePurger, NoPurge, purger_for
from services.falcon_apps.api.store import MetadataStore
from services.git.deploy_api import DeployApi
from services.git.deploy_log import DeployLog
from services.git.deploys import DeployStarter, Push
from services.git.locks import SiteLocks
from services.git.pipeline import DeployJob, Pipeline
from services.git.restore import RestoreApp
from services.git.steps import Activate, Publish, Record
from tests.cdn.bunny_double import BunnyDouble
from tests.wsgi_serving import threaded_server

ZONE = "sites"
STORAGE_KEY = "zone-pw-7d41-STORAGE-SECRET"
ACCOUNT_KEY = "acct-key-93fe-ACCOUNT-SECRET"
PULL_ZONE = 4242
WORKERS = 8
ATTEMPTS = 3
# Short timeouts and backoffs keep stalls and retries cheap on a busy 2-core box.
FAST = RetryPolicy(attempts=ATTEMPTS, backoff_initial=0.01, backoff_max=0.05, timeout=(2.0, 1.0))


# -- the double, the api, the room -------------------------------------------------------


@pytest.fixture(scope="module")
def shared_double():
    with BunnyDouble(api_key=ACCOUNT_KEY) as bunny:
        bunny.add_zone(ZONE, STORAGE_KEY)
        bunny.pull_zones.add(PULL_ZONE)
        yield bunny


@pytest.fixture
def double(shared_double):
    """The module's double, emptied: no files, no faults, no purges, no request log."""
    shared_double.restore({ZONE: ({}, set())})
    return shared_double


def bunny_env(home: Path, double: BunnyDouble, **extra: str) -> dict[str, str]:
    return {
        "ECSTATIC_HOME": str(home),
        "ECSTATIC_CDN": "bunny",
        "ECSTATIC_BUNNY_STORAGE_ZONE": ZONE,
        "ECSTATIC_BUNNY_STORAGE_KEY": STORAGE_KEY,
        "ECSTATIC_BUNNY_STORAGE_HOST": double.storage_host,
        "ECSTATIC_BUNNY_API_KEY": ACCOUNT_KEY,
        "ECSTATIC_BUNNY_PULL_ZONE_ID": str(PULL_ZONE),
        **extra,
    }


class Serving:
    """A WSGI app on an ephemeral 127.0.0.1 port, in a thread."""

    def __init__(self, app):
        self.server = threaded_server(app)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.daemon = True
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Room:
    """The git room's deploy parts on ``bunny``, the api they talk to, and one user's site."""

    def __init__(self, home: Path, double: BunnyDouble):
        self.double = double
        self.config = Config.from_env(bunny_env(home, double))
        self.store = MetadataStore(self.config.api_db)
        purger = purger_for(self.config.deploy, base_url=double.api_url, policy=FAST)
        assert isinstance(purger, BunnyZonePurger)
        self.purger = purger
        app = api_app.create_app(
            self.store, self.config, HttpMetrics(CollectorRegistry()), purger=purger
        )
        self.api_server = Serving(app)
        self.api = DeployApi(self.api_server.url)
        _, self.token = self.store.create_user("alice")
        created = requests.post(
            self.api_server.url + "/v1/sites",
            json={"name": "blog"},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        self.site_id = created.json()["id"]
        self.host = created.json()["hostnames"][0]
        self.credential = self.api.credential(self.token, self.site_id)

        self.storage = BunnyStorage(
            ZONE, STORAGE_KEY, double.storage_host, scheme="http", pool_size=WORKERS, policy=FAST
        )
        self.releases = LocalCDN(home / "cdn", sync=False)
        self.cdn = BunnyReleases(self.releases, BunnyCDN(self.storage, workers=WORKERS))
        self.metrics = GitMetrics(CollectorRegistry())
        self.built: dict[str, Path] = {}  # deploy id -> the directory its "build" made
        self.pipeline = Pipeline(
            [
                GivenBuild(self.built),
                Publish(self.cdn, self.metrics),
                Activate(self.cdn, self.api, self.metrics),
                Record(self.api, self.cdn),
            ],
            self.api,
            self.metrics,
            home / "work",
        )
        self.authorizer = SiteAuthorizer(self.api_server.url, cache_seconds=0)
        self.restorer = RestoreApp(
            self.api, self.authorizer.site, self.cdn, SiteLocks(home / "locks")
        )
        self._shas = (hashlib.sha1(str(n).encode()).hexdigest() for n in itertools.count())

    def close(self) -> None:
        self.storage.close()
        self.purger.close()
        self.api_server.close()
        self.store.close()

    def site(self) -> dict:
        answer = requests.get(
            f"{self.api_server.url}/v1/sites/{self.site_id}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def deploy(self, source: Path, context: str = "production", branch: str = "main"):
        """Run one deploy of ``source`` through the pipeline: ``(outcome, job)``."""
        body = {"context": context, "branch": branch, "commit_sha": next(self._shas)}
        record = self.api.create(self.credential, self.site_id, body)
        job = DeployJob(
            site_id=self.site_id,
            site=self.site(),
            deploy=record,
            repo=None,
            commit=body["commit_sha"].encode(),
            credential=self.credential,
            log=DeployLog(),
        )
        self.built[job.deploy_id] = source
        outcome = self.pipeline.run(job)
        job.deploy = self.api.get(self.credential, self.site_id, job.deploy_id)
        return outcome, job

    def restore(self, deploy_id: str):
        path = f"/v1/sites/{self.site_id}/deploys/{deploy_id}/restore"
        return testing.simulate_post(
            self.restorer, path, headers={"Authorization": f"Bearer {self.token}"}
        )

    def remote(self, prefix: str | None = None) -> dict[str, bytes]:
        """The files under a prefix of the zone (the site's own by default)."""
        start = f"{prefix or self.site_id}/"
        files = self.double.files(ZONE)
        return {p[len(start) :]: d for p, d in files.items() if p.startswith(start)}

    def live_deploy_id(self) -> str | None:
        live = self.site().get("live_deploy")
        return live and live["id"]


class GivenBuild:
    """The build step, standing in for ``Build``: publish a directory prepared beforehand."""

    name = "build"

    def __init__(self, built: dict[str, Path]):
        self._built = built

    def run(self, job: DeployJob) -> None:
        job.publish_dir = self._built.pop(job.deploy_id)


@pytest.fixture
def room(tmp_path, double):
    room = Room(tmp_path / "home", double)
    yield room
    room.close()


# -- sites --------------------------------------------------------------------------------

DIRS = ["", "css", "js/vendor", "blog/2024", "img/a b", "docs/ü"]


def make_site(root: Path, count: int = 1000, seed: int = 3) -> Path:
    """``count`` files of 1-2 KiB of seeded random bytes over a few nested directories."""
    rng = random.Random(seed)
    for n in range(count):
        directory = root / DIRS[n % len(DIRS)]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"page-{n:04d}.html").write_bytes(rng.randbytes(rng.randint(1024, 2048)))
    return root


def copy_site(source: Path, target: Path) -> Path:
    for path in source.rglob("*"):
        if path.is_file():
            dest = target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(path.read_bytes())
    return target


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def count(double: BunnyDouble, method: str) -> int:
    return len(double.matching(method))


@pytest.fixture(scope="module")
def site_v1(tmp_path_factory) -> Path:
    return make_site(tmp_path_factory.mktemp("v1") / "site")


@pytest.fixture(scope="module")
def site_v2(tmp_path_factory, site_v1) -> Path:
    """``site_v1`` with exactly one file changed."""
    site = copy_site(site_v1, tmp_path_factory.mktemp("v2") / "site")
    (site / "css/page-0001.html").write_bytes(b"<h1>changed</h1>")
    return site


@pytest.fixture(scope="module")
def small_v1(tmp_path_factory) -> Path:
    """A 200-file site, for the tests whose point is not the 1,000 files."""
    return make_site(tmp_path_factory.mktemp("small") / "site", count=200, seed=11)


def deployed(room: Room, site: Path, double: BunnyDouble) -> DeployJob:
    outcome, job = room.deploy(site)
    assert outcome == "live", job.log.lines
    double.clear_log()
    double.purges.clear()
    return job


@pytest.fixture
def first(room, site_v1, double):
    """The first deploy of ``site_v1`` done; the double's request log and purges cleared."""
    return deployed(room, site_v1, double)


@pytest.fixture
def first_small(room, small_v1, double):
    """The same with ``small_v1``."""
    return deployed(room, small_v1, double)


# -- deploys ------------------------------------------------------------------------------


def test_a_first_deploy_uploads_every_file_once_and_purges_once(room, double, site_v1):
    outcome, job = room.deploy(site_v1)

    assert outcome == "live", job.log.lines
    assert count(double, "PUT") == 1000
    assert len({r.path for r in double.matching("PUT")}) == 1000
    assert count(double, "DELETE") == 0
    assert count(double, "GET") == 1  # the listing of the (empty) prefix
    assert room.remote() == tree(site_v1)
    assert double.purges == [(PULL_ZONE, None)]
    assert job.deploy["state"] == "live" and job.deploy["file_count"] == 1000
    assert room.live_deploy_id() == job.deploy_id
    assert room.releases.live_release(room.host) == (room.site_id, job.release)
    assert any("1000 uploaded, 0 unchanged" in line for line in job.log.lines)


def test_a_one_file_change_sends_exactly_one_put_and_no_delete(room, double, first, site_v2):
    outcome, job = room.deploy(site_v2)

    assert outcome == "live", job.log.lines
    puts = double.matching("PUT")
    assert [r.path for r in puts] == [f"/{ZONE}/{room.site_id}/css/page-0001.html"]
    assert count(double, "DELETE") == 0
    assert room.remote() == tree(site_v2)
    assert double.purges == [(PULL_ZONE, None)]
    assert any("1 uploaded, 999 unchanged" in line for line in job.log.lines)
    assert room.releases.live_release(room.host) == (room.site_id, job.release)


def test_removed_files_are_deleted_only_after_every_new_file_is_in_place(
    room, double, first_small, small_v1, tmp_path
):
    site = copy_site(small_v1, tmp_path / "v3")
    for name in ("css/page-0007.html", "js/vendor/page-0002.html", "page-0000.html"):
        (site / name).write_bytes(b"changed " + name.encode())
    (site / "new/added.html").parent.mkdir()
    (site / "new/added.html").write_bytes(b"added")
    (site / "blog/2024/page-0003.html").unlink()  # one file of a directory that stays
    for path in (site / "img/a b").iterdir():  # a whole directory goes
        path.unlink()
    (site / "img/a b").rmdir()

    outcome, job = room.deploy(site)

    assert outcome == "live", job.log.lines
    assert count(double, "PUT") == 4
    deletes = double.matching("DELETE")
    prefix = f"/{ZONE}/{room.site_id}"
    assert sorted(r.path for r in deletes) == [
        f"{prefix}/blog/2024/page-0003.html",
        f"{prefix}/img/",  # one recursive delete: nothing is left under img/
    ]
    last_put = max(r.applied for r in double.matching("PUT"))
    assert all(r.seq > last_put for r in deletes), "a DELETE was sent before a PUT finished"
    assert room.remote() == tree(site)


def test_restore_uploads_only_the_difference_through_the_restore_route(
    room, double, first, site_v1, site_v2
):
    outcome, second = room.deploy(site_v2)
    assert outcome == "live"
    double.clear_log()
    double.purges.clear()

    answer = room.restore(first.deploy_id)

    assert answer.status_code == 200, answer.json
    puts = double.matching("PUT")
    assert [r.path for r in puts] == [f"/{ZONE}/{room.site_id}/css/page-0001.html"]
    assert puts[0].body_size == len((site_v1 / "css/page-0001.html").read_bytes())
    assert count(double, "DELETE") == 0
    assert room.remote() == tree(site_v1)
    assert double.purges == [(PULL_ZONE, None)]
    assert room.releases.live_release(room.host) == (room.site_id, first.release)
    assert room.live_deploy_id() == first.deploy_id

    # And forward again: the same one file.
    double.clear_log()
    assert room.restore(second.deploy_id).status_code == 200
    assert [r.path for r in double.matching("PUT")] == [puts[0].path]
    assert room.remote() == tree(site_v2) and len(double.purges) == 2


def test_a_preview_lives_under_its_own_prefix_and_goes_alone(
    room, double, first_small, small_v1, tmp_path
):
    preview_site = copy_site(small_v1, tmp_path / "preview")
    (preview_site / "index.html").write_bytes(b"<h1>preview</h1>")

    outcome, job = room.deploy(preview_site, context="preview", branch="feature/login")

    assert outcome == "live", job.log.lines
    hostname = job.deploy["hostname"]
    assert hostname != room.host and hostname != room.site_id
    assert count(double, "PUT") == 201
    assert all(r.path.startswith(f"/{ZONE}/{hostname}/") for r in double.matching("PUT"))
    assert room.remote(hostname) == tree(preview_site)
    assert room.remote() == tree(small_v1)  # production untouched
    assert room.releases.live_release(room.host) == (room.site_id, first_small.release)
    assert room.releases.live_release(hostname) == (room.site_id, job.release)
    assert double.purges == [(PULL_ZONE, None)]

    # The branch is deleted: the git room's DeployStarter removes the preview.
    double.clear_log()
    push = Push(site_id=room.site_id, site=room.site(), repo=None, credential=room.credential)
    said = DeployStarter(room.api, None, room.cdn).remove_preview(push, b"refs/heads/feature/login")

    assert hostname in said
    assert [(r.method, r.path) for r in double.requests] == [("DELETE", f"/{ZONE}/{hostname}/")]
    assert room.remote(hostname) == {}
    assert room.remote() == tree(small_v1)
    assert set(double.files(ZONE)) == {f"{room.site_id}/{p}" for p in tree(small_v1)}
    assert room.releases.live_release(hostname) is None
    assert room.releases.live_release(room.host) == (room.site_id, first_small.release)


# -- faults -------------------------------------------------------------------------------


def changed_site(base: Path, target: Path, changes: int = 20, removals: int = 5) -> Path:
    """``base`` with ``changes`` files rewritten and ``removals`` files removed."""
    site = copy_site(base, target)
    names = sorted(tree(site))
    for name in names[:changes]:
        (site / name).write_bytes(b"v2 of " + name.encode())
    for name in names[changes : changes + removals]:
        (site / name).unlink()
    return site


def test_transient_5xx_and_timeouts_on_puts_are_retried_to_a_correct_tree(
    room, double, first_small, small_v1, tmp_path
):
    site = changed_site(small_v1, tmp_path / "v2")
    names = sorted(tree(small_v1))
    prefix = f"/{ZONE}/{room.site_id}"
    double.fail("PUT", f"{prefix}/{names[0]}", times=ATTEMPTS - 1, status=503)
    double.fail("PUT", f"{prefix}/{names[1]}", times=1, status=429, retry_after=0.01)
    double.stall("PUT", f"{prefix}/{names[2]}", times=1, seconds=3.0)  # past the read timeout
    double.drop("PUT", f"{prefix}/{names[3]}", times=1, after_apply=True)  # a lost answer

    outcome, job = room.deploy(site)

    assert outcome == "live", job.log.lines
    assert room.remote() == tree(site)
    assert count(double, "PUT") == 20 + (ATTEMPTS - 1) + 1 + 1 + 1
    assert count(double, "DELETE") == 5
    last_put = max(r.applied for r in double.matching("PUT") if r.applied)
    assert all(r.seq > last_put for r in double.matching("DELETE"))
    assert double.purges == [(PULL_ZONE, None)]
    assert room.releases.live_release(room.host) == (room.site_id, job.release)


@pytest.mark.parametrize("fault", ["status", "stall"])
def test_puts_failing_beyond_the_retries_fail_cleanly(
    room, double, first_small, small_v1, tmp_path, fault
):
    site = changed_site(small_v1, tmp_path / "v2")
    failing = sorted(tree(small_v1))[10]
    path = f"/{ZONE}/{room.site_id}/{failing}"
    if fault == "status":
        double.fail("PUT", path, times=ATTEMPTS, status=502)
    else:
        double.stall("PUT", path, times=ATTEMPTS, seconds=3.0)
    before = room.remote()

    outcome, job = room.deploy(site)

    assert outcome == "failed"
    assert job.deploy["state"] == "failed" and job.deploy["reason"] == "activate_failed"
    lines = job.log.lines
    assert any(f"upload of {failing} failed" in line for line in lines), lines
    assert "error: the live site was not changed" in lines
    assert len([r for r in double.matching("PUT") if r.path == path]) == ATTEMPTS
    assert count(double, "DELETE") == 0
    after = room.remote()
    assert set(after) == set(before)  # nothing deleted: the 5 removed files are still there
    assert after[failing] == before[failing]
    assert all(after[p] in (before[p], (site / p).read_bytes()) for p in tree(site))
    # What the hostname serves did not move, at the api nor in the release links.
    assert room.releases.live_release(room.host) == (room.site_id, first_small.release)
    assert room.live_deploy_id() == first_small.deploy_id
    assert double.purges == []
    assert STORAGE_KEY not in "\n".join(lines) and ACCOUNT_KEY not in "\n".join(lines)

    # The next deploy of the same files repairs the tree.
    double.clear_log()
    outcome, _ = room.deploy(site)
    assert outcome == "live" and room.remote() == tree(site)
    assert count(double, "DELETE") == 5 and double.purges == [(PULL_ZONE, None)]


def test_one_purge_per_successful_activation(room, double, small_v1, tmp_path):
    small_v2 = copy_site(small_v1, tmp_path / "v2")
    (small_v2 / "page-0000.html").write_bytes(b"v2")
    outcomes = [room.deploy(s)[0] for s in (small_v1, small_v2, small_v1)]
    assert outcomes == ["live", "live", "live"]
    assert double.purges == [(PULL_ZONE, None)] * 3
    deploys = room.api.list(room.credential, room.site_id)
    assert room.restore(deploys[1]["id"]).status_code == 200
    assert double.purges == [(PULL_ZONE, None)] * 4
    assert len(double.matching("POST", f"/pullzone/{PULL_ZONE}/purgeCache")) == 4


# -- the api's purger from its config -----------------------------------------------------


def _user_headers(config: Config, name: str) -> dict[str, str]:
    store = MetadataStore(config.api_db)
    try:
        _, token = store.create_user(name)
    finally:
        store.close()
    return {"Authorization": f"Bearer {token}"}


def test_build_wires_the_bunny_purger_from_the_config(tmp_path, double, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(api_purge, "CORE_API_URL", double.api_url)
    config = Config.from_env(bunny_env(tmp_path, double))
    mount = api_app.build(Context(config))
    client = testing.TestClient(mount.app)
    headers = _user_headers(config, "carol")
    site = client.simulate_post("/v1/sites", json={"name": "wired"}, headers=headers).json

    answer = client.simulate_post(f"/v1/sites/{site['id']}/purge", headers=headers)

    assert answer.status_code == 202, answer.json
    assert double.purges == [(PULL_ZONE, None)]
    assert [(r.method, r.path) for r in double.requests] == [
        ("POST", f"/pullzone/{PULL_ZONE}/purgeCache")
    ]
    assert ACCOUNT_KEY not in caplog.text


@pytest.mark.parametrize(
    "settings",
    [
        {"ECSTATIC_CDN": "local"},
        {"ECSTATIC_BUNNY_API_KEY": ""},
        {"ECSTATIC_BUNNY_PULL_ZONE_ID": "0"},
    ],
)
def test_without_bunny_or_its_account_settings_the_purger_is_a_no_op(
    tmp_path, double, settings, caplog
):
    config = Config.from_env(bunny_env(tmp_path, double, **settings))
    purger = purger_for(config.deploy, base_url=double.api_url)
    assert isinstance(purger, NoPurge)
    purger.purge({"id": "x"})
    assert double.requests == []
    if settings.get("ECSTATIC_CDN") != "local":
        assert "cache purges do nothing" in caplog.text
    assert ACCOUNT_KEY not in caplog.text and STORAGE_KEY not in caplog.text


@pytest.mark.parametrize("failure", ["unavailable", "refused"])
def test_a_failed_purge_is_503_and_the_key_is_in_no_log_or_error(tmp_path, double, caplog, failure):
    caplog.set_level(logging.DEBUG)
    config = Config.from_env(bunny_env(tmp_path, double))
    if failure == "unavailable":
        double.fail("POST", "/pullzone/*", times=ATTEMPTS, status=503)
        deploy = config.deploy
    else:  # the Core API refuses the key
        deploy = Config.from_env(
            bunny_env(tmp_path, double, ECSTATIC_BUNNY_API_KEY=ACCOUNT_KEY + "-wrong")
        ).deploy
    purger = purger_for(deploy, base_url=double.api_url, policy=FAST)
    store = MetadataStore(config.api_db)
    try:
        client = testing.TestClient(
            api_app.create_app(store, config, HttpMetrics(CollectorRegistry()), purger=purger)
        )
        _, token = store.create_user("dave")
        headers = {"Authorization": f"Bearer {token}"}
        site = client.simulate_post("/v1/sites", json={"name": "down"}, headers=headers).json

        answer = client.simulate_post(f"/v1/sites/{site['id']}/purge", headers=headers)
    finally:
        store.close()
        purger.close()

    assert answer.status_code == 503
    expected = "BunnyUnavailable" if failure == "unavailable" else "BunnyAuthError"
    assert expected in answer.json["message"]
    assert len(double.matching("POST")) == (ATTEMPTS if failure == "unavailable" else 1)
    assert double.purges == []
    assert "cdn purge failed" in caplog.text
    for secret in (ACCOUNT_KEY, STORAGE_KEY):
        assert secret not in caplog.text
        assert secret not in answer.text
        assert secret not in repr(purger)


@pytest.mark.parametrize("hostnames", [[], "blog.localhost", ["blog.localhost", "../evil"]])
def test_activate_checks_hostnames_before_any_upload(room, double, small_v1, hostnames):
    room.cdn.stage(room.site_id, "00000001-x", small_v1)
    with pytest.raises(PublishError):
        room.cdn.activate(room.site_id, hostnames, "00000001-x")
    assert double.requests == []
    assert room.releases.live_release(room.host) is None
