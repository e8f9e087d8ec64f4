import base64
import io
import logging
import threading

import pytest
from dulwich.errors import GitProtocolError, NotGitRepository
from dulwich.hooks import Hook
from dulwich.protocol import pkt_line
from git_kit import make_site
from prometheus_client import CollectorRegistry

from services.cdn import LocalCDN
from services.core.config import Config
from services.core.metrics import HttpMetrics, make_measured_app
from services.core.runtime import Context, Mount
from services.git.app import build, create_app
from services.git.backend import SiteBackend, SiteRepos
from services.git.checkout import Limits
from services.git.deploys import DeployStarter
from services.git.locks import SiteLocks
from services.git.middleware import ErrorGuard, route_of
from services.git.queue import DeployQueue
from services.git.restore import RestoreApp
from services.git.steps import Checkout

SITE_ID = "0123456789abcdef"
AUTH = "Basic " + base64.b64encode(b"x:good").decode()


class StartResponse:
    def __init__(self):
        self.calls = []
        self.written = []

    def __call__(self, status, headers, exc_info=None):
        self.calls.append((status, dict(headers)))
        return self.written.append

    @property
    def status(self):
        return self.calls[-1][0]

    @property
    def headers(self):
        return self.calls[-1][1]


def run(app, environ):
    start = StartResponse()
    result = app(environ, start)
    try:
        chunks = list(result)  # dulwich writes through start_response's write() meanwhile
        body = b"".join(start.written) + b"".join(chunks)
    finally:
        if hasattr(result, "close"):
            result.close()
    return start, body


class FakeApi:
    """The api's deploy routes as the git room calls them: a credential, and nothing else."""

    def __init__(self):
        self.credentials = []

    def credential(self, token, site_id):
        self.credentials.append((token, site_id))
        return "ecsd_cred"

    def list(self, credential, site_id):
        return []


class NoQueue:
    def submit(self, job):
        raise AssertionError("these requests start no deploy")


@pytest.fixture
def app(tmp_path, authorizer):
    authorizer.add("good", make_site(SITE_ID, "blog"))
    api = FakeApi()
    cdn = LocalCDN(tmp_path / "cdn", sync=False)
    locks = SiteLocks(tmp_path / "git" / ".locks")
    app = create_app(
        tmp_path / "git",
        authorizer,
        DeployStarter(api, NoQueue(), cdn),
        Checkout(Limits(100, 10_000)),
        api,
        RestoreApp(api, authorizer.site, cdn, locks),
    )
    app.api = api
    return app


def environ(path, method="GET", query="", body=b"", **extra):
    env = {
        "PATH_INFO": path,
        "REQUEST_METHOD": method,
        "QUERY_STRING": query,
        "HTTP_AUTHORIZATION": AUTH,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)) if body and "HTTP_TRANSFER_ENCODING" not in extra else "",
    }
    env.update(extra)
    return env


# -- repositories -----------------------------------------------------------------------


def test_site_repos_create_bare_repositories_on_first_open(tmp_path):
    repos = SiteRepos(tmp_path / "git")
    repo = repos.open(SITE_ID)
    try:
        assert repo.bare
        assert repo.refs.get_symrefs()[b"HEAD"] == b"refs/heads/main"
        assert repo.path.rstrip("/") == str(tmp_path / "git" / f"{SITE_ID}.git")
    finally:
        repo.close()
    repos.open(SITE_ID).close()  # second open finds it
    assert sorted(p.name for p in (tmp_path / "git").iterdir()) == [f"{SITE_ID}.git"]


@pytest.mark.parametrize(
    "site_id", ["../x", "0123456789ABCDEF", "abc", "0123456789abcdef/..", "", None]
)
def test_site_repos_refuse_non_site_ids(tmp_path, site_id):
    with pytest.raises(ValueError):
        SiteRepos(tmp_path).path(site_id)


def test_concurrent_first_opens_all_succeed(tmp_path):
    repos = SiteRepos(tmp_path / "git")
    errors = []

    def open_it():
        try:
            repos.open(SITE_ID).close()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in (tmp_path / "git").iterdir()) == [f"{SITE_ID}.git"]


def test_backend_serves_only_the_authorised_site_with_only_our_hooks(tmp_path):
    repos = SiteRepos(tmp_path / "git")
    repos.open(SITE_ID).close()
    script = tmp_path / "git" / f"{SITE_ID}.git" / "hooks" / "post-receive"
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\ntouch /tmp/should-never-run\n")
    script.chmod(0o755)
    ours = Hook()
    backend = SiteBackend(
        repos, SITE_ID, f"/git/{SITE_ID}.git", lambda repo: {"post-receive": ours}
    )

    for other in [
        "/git/fedcba9876543210.git",
        "/",
        f"/git/{SITE_ID}.git/..",
        f"/git/../git/{SITE_ID}.git",
    ]:
        with pytest.raises(NotGitRepository):
            backend.open_repository(other)
    repo = backend.open_repository(f"/git/{SITE_ID}.git".encode())  # dulwich passes bytes for POSTs
    assert repo.hooks == {"post-receive": ours}
    backend.close()


# -- the WSGI app -----------------------------------------------------------------------


def test_info_refs_advertises_receive_pack_and_creates_the_repo(app, tmp_path):
    start, body = run(
        app, environ(f"/git/{SITE_ID}.git/info/refs", query="service=git-receive-pack")
    )
    assert start.status == "200 OK"
    assert start.headers["Content-Type"] == "application/x-git-receive-pack-advertisement"
    assert b"# service=git-receive-pack" in body and b"report-status" in body
    assert (tmp_path / "git" / f"{SITE_ID}.git" / "HEAD").exists()


def test_unauthorised_requests_create_nothing(app, tmp_path):
    env = environ(f"/git/{SITE_ID}.git/info/refs", query="service=git-receive-pack")
    env["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(b"x:bad").decode()
    start, _ = run(app, env)
    assert start.status == "401 Unauthorized"
    assert not (tmp_path / "git").exists()


def _delete_command() -> bytes:
    return (
        pkt_line(b"1" * 40 + b" " + b"0" * 40 + b" refs/heads/gone\x00report-status delete-refs")
        + b"0000"
    )


def _receive_pack(body, **extra):
    return environ(
        f"/git/{SITE_ID}.git/git-receive-pack",
        method="POST",
        body=body,
        CONTENT_TYPE="application/x-git-receive-pack-request",
        **extra,
    )


def test_raw_chunked_bodies_are_dechunked_by_dulwich(app):
    # What the stdlib server hands over: the chunked framing still in place.
    payload = _delete_command()
    chunked = f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
    start, body = run(app, _receive_pack(chunked, HTTP_TRANSFER_ENCODING="chunked"))
    assert start.status == "200 OK"
    assert b"unpack ok" in body
    assert app.api.credentials == [("good", SITE_ID)]  # the token bought a credential


def test_the_api_refusing_a_credential_refuses_the_push_with_503(app):
    def down(token, site_id):
        from services.core.errors import Unavailable

        raise Unavailable("api unreachable: ConnectionError")

    app.api.credential = down
    start, body = run(app, _receive_pack(_delete_command()))
    assert start.status == "503 Service Unavailable"
    assert b"the Ecstatic api could not start a deploy (api unreachable" in body


def test_bodies_the_server_already_dechunked_are_not_dechunked_again(app):
    # What gunicorn hands over: a plain body, the header kept, wsgi.input_terminated set.
    env = _receive_pack(_delete_command(), HTTP_TRANSFER_ENCODING="chunked")
    env["wsgi.input_terminated"] = True
    start, body = run(app, env)
    assert start.status == "200 OK"
    assert b"unpack ok" in body


def test_garbage_from_the_client_does_not_crash(app, caplog):
    with caplog.at_level(logging.WARNING):
        start, _ = run(app, _receive_pack(b"zzzz-not-a-pkt-line"))
    assert start.calls  # answered
    assert any(r.message == "bad git request" for r in caplog.records)


def test_build_mounts_the_room_and_its_deploy_queue_without_touching_disk(tmp_path):
    ctx = Context(
        config=Config.from_env({"ECSTATIC_HOME": str(tmp_path / "home")}),
        registry=CollectorRegistry(),
    )
    mount, queue = build(ctx)
    assert isinstance(mount, Mount) and isinstance(queue, DeployQueue)
    assert mount.name == "git" and queue.name == "deploys" and queue.healthy()
    assert mount.paths.match(f"/git/{SITE_ID}.git/info/refs")
    assert mount.paths.match(f"/v1/sites/{SITE_ID}/deploys/abc/restore")
    assert not mount.paths.match("/v1/sites")
    assert not (tmp_path / "home").exists()
    start, _ = run(mount.app, environ(f"/git/{SITE_ID}.git/info/refs", HTTP_AUTHORIZATION=""))
    assert start.status == "401 Unauthorized"
    queue.stop(5)


# -- middleware -------------------------------------------------------------------------


def failing_app(exc, start_first=False):
    def app(environ, start_response):
        if start_first:
            start_response("200 OK", [])

        def body():
            yield b"partial"
            raise exc

        if not start_first:
            raise exc
        return body()

    return app


def test_error_guard_answers_client_errors_with_400():
    start, body = run(ErrorGuard(failing_app(GitProtocolError("bad pkt"))), {"PATH_INFO": "/git/x"})
    assert start.status == "400 Bad Request"
    assert body == b"bad git request: bad pkt\n"


def test_error_guard_answers_other_errors_with_500():
    start, body = run(
        ErrorGuard(failing_app(RuntimeError("secret detail"))), {"PATH_INFO": "/git/x"}
    )
    assert start.status == "500 Internal Server Error"
    assert body == b"internal error\n"


def test_error_guard_ends_a_started_response_quietly():
    start, body = run(
        ErrorGuard(failing_app(RuntimeError("late"), start_first=True)), {"PATH_INFO": "/"}
    )
    assert [status for status, _ in start.calls] == ["200 OK"]
    assert body == b"partial"


def test_request_metrics_use_route_templates(app):
    registry = CollectorRegistry()
    observed = make_measured_app(app, HttpMetrics(registry), "git", route_of)
    env = environ(
        f"/git/{SITE_ID}.git/info/refs", query="service=git-upload-pack", HTTP_AUTHORIZATION=""
    )
    run(observed, env)
    run(observed, environ("/git/nope", REQUEST_METHOD="BREW"))
    labels = {
        "service": "git",
        "route": "/git/{site}.git/info/refs",
        "method": "GET",
        "status": "401",
    }
    assert registry.get_sample_value("ecstatic_http_requests_total", labels) == 1
    other = {"service": "git", "route": "unmatched", "method": "OTHER", "status": "404"}
    assert registry.get_sample_value("ecstatic_http_requests_total", other) == 1


@pytest.mark.parametrize(
    ("path", "route"),
    [
        (f"/git/{SITE_ID}.git/info/refs", "/git/{site}.git/info/refs"),
        (f"/git/{SITE_ID}.git/git-receive-pack", "/git/{site}.git/git-receive-pack"),
        (f"/git/{SITE_ID}.git/git-upload-pack", "/git/{site}.git/git-upload-pack"),
        (f"/git/{SITE_ID}.git/HEAD", "/git/{site}.git/{path}"),
        ("/git/", "unmatched"),
    ],
)
def test_route_of(path, route):
    assert route_of(path) == route
