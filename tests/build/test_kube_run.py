"""KubeRunner against a local double of the Kubernetes API, through the real ``kubernetes`` client.

The double (HTTP on 127.0.0.1, a free port) serves exactly the endpoints the runner uses:
create/read/delete a Job, list its pods by label, and follow a container's log (chunked,
as the API server streams it). It records every request. Each test scripts one build: the
log chunks, whether a chunk waits until the runner has passed the previous line on, the
build container's final state and the Job's final condition. When the script says the Job
succeeded, the double plays the ``collect`` container: it writes the site into the
directory the submitted manifest's ``/out`` mount names, as the kubelet would mount it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from services.build.config import ConfigError
from services.build.kube_job import BUILD_CONTAINER, COLLECT_CONTAINER, JobSettings
from services.build.kube_run import KubeRunner
from services.build.limits import BuildLimits

NS = "ecstatic-builds"
SETTINGS = JobSettings(NS, "localhost/ecstatic-builder:test", "builder", "build-exchange", 10001)
LIMITS = BuildLimits(timeout_seconds=60, max_output_bytes=10_000, tail_lines=5)


@dataclass
class Script:
    """What the double makes one build do."""

    chunks: list[bytes] = field(default_factory=lambda: [b"hello\n"])
    wait_between: bool = False  # send chunk n+1 only once the runner passed chunk n on
    exit_code: int = 0
    terminated_reason: str = "Completed"
    pod_reason: str | None = None  # "Evicted"
    job_failed: str | None = None  # the Failed condition's reason; None: Complete
    waiting: str | None = None  # the build container never starts: this waiting reason
    site: dict[str, bytes] = field(default_factory=lambda: {"index.html": b"<h1>ok</h1>"})


class Double:
    """The Kubernetes API endpoints KubeRunner calls, scripted and recorded."""

    def __init__(self, script: Script, exchange: Path):
        self.script = script
        self.exchange = exchange
        self.requests: list[tuple[str, str, dict]] = []
        self.jobs: dict[str, dict] = {}
        self.posted: list[dict] = []  # every Job body as submitted
        self.source_seen: dict[str, list[str]] = {}
        self.passed_on = threading.Event()  # set by the test's on_line
        self.live = True  # every waiting chunk found its predecessor already passed on
        self.log_done = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Double:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def api(self) -> client.ApiClient:
        config = client.Configuration(host=f"http://127.0.0.1:{self._server.server_port}")
        return client.ApiClient(config)

    def calls(self, method: str) -> list[tuple[str, dict]]:
        return [(path, query) for m, path, query in self.requests if m == method]

    # -- the objects --
    def _pod(self, name: str) -> dict:
        s = self.script
        if s.waiting:
            state = {"waiting": {"reason": s.waiting, "message": "no such image"}}
        elif not self.log_done.is_set():
            state = {"running": {"startedAt": "2025-01-01T00:00:00Z"}}
        else:
            state = {"terminated": {"exitCode": s.exit_code, "reason": s.terminated_reason}}
        status = {
            "phase": "Running",
            "initContainerStatuses": [
                {
                    "name": BUILD_CONTAINER,
                    "image": SETTINGS.image,
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        }
        if s.pod_reason and self.log_done.is_set():
            status.update(phase="Failed", reason=s.pod_reason)
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{name}-x7k2p", "namespace": NS},
            "status": status,
        }

    def _job(self, name: str) -> dict:
        job = dict(self.jobs[name])
        conditions = []
        if self.log_done.is_set() and not self.script.waiting:
            if self.script.job_failed:
                conditions.append(
                    {"type": "Failed", "status": "True", "reason": self.script.job_failed}
                )
            else:
                conditions.append({"type": "Complete", "status": "True"})
        job["status"] = {"conditions": conditions}
        return job

    def _collect(self, name: str) -> None:
        # The /out mount of the collect container, resolved as the kubelet would.
        pod = self.jobs[name]["spec"]["template"]["spec"]
        mounts = next(c for c in pod["containers"] if c["name"] == COLLECT_CONTAINER)[
            "volumeMounts"
        ]
        out = self.exchange / next(m for m in mounts if m["mountPath"] == "/out")["subPath"]
        for rel, data in self.script.site.items():
            (out / "site" / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / "site" / rel).write_bytes(data)

    # -- HTTP --
    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str):
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                double.requests.append((method, url.path, query))
                return url.path.split("/"), query

            def do_POST(self) -> None:
                parts, _ = self._route("POST")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                name = body["metadata"]["name"]
                double.jobs[name] = body
                double.posted.append(body)
                source = double.exchange / name / "src"
                double.source_seen[name] = sorted(
                    str(p.relative_to(source)) for p in source.rglob("*")
                )
                self._reply(201, body)

            def do_GET(self) -> None:
                parts, query = self._route("GET")
                if parts[-1] == "pods":
                    wanted = query["labelSelector"].split("=", 1)[1]
                    items = [double._pod(wanted)] if wanted in double.jobs else []
                    self._reply(200, {"apiVersion": "v1", "kind": "PodList", "items": items})
                elif parts[-1] == "log":
                    self._log()
                else:
                    self._reply(200, double._job(parts[-1]))

            def _log(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i, chunk in enumerate(double.script.chunks):
                    if i and double.script.wait_between:
                        double.live &= double.passed_on.wait(10)
                        double.passed_on.clear()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                name = next(iter(double.jobs))
                if not double.script.job_failed:
                    double._collect(name)
                double.log_done.set()
                self.wfile.write(b"0\r\n\r\n")

            def do_DELETE(self) -> None:
                parts, _ = self._route("DELETE")
                double.jobs.pop(parts[-1], None)
                self._reply(200, {"apiVersion": "v1", "kind": "Status", "status": "Success"})

        return Handler


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    source = tmp_path / "checkout"
    (source / "content").mkdir(parents=True)
    (source / "hugo.toml").write_text('title = "t"\n')
    (source / "content" / "_index.md").write_text("# hi\n")
    return source


def run(double: Double, tree: Path, tmp_path: Path, **kwargs):
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        double.passed_on.set()

    runner = KubeRunner(double.api(), SETTINGS, double.exchange, poll_seconds=0.05)
    result = runner.run(
        "hugo --minify",
        tree,
        tmp_path / "work" / "build",
        on_line=on_line,
        publish="public",
        limits=kwargs.pop("limits", LIMITS),
        **kwargs,
    )
    return result, lines


@pytest.fixture
def exchange(tmp_path: Path) -> Path:
    path = tmp_path / "exchange"
    path.mkdir()
    (tmp_path / "work").mkdir()
    return path


def test_success_streams_lines_live_and_returns_the_site(tree, tmp_path, exchange):
    script = Script(chunks=[b"Start building\n", b"Pages | 3\nTotal in 12 ms\n"], wait_between=True)
    with Double(script, exchange) as double:
        result, lines = run(double, tree, tmp_path, environment={"HUGO_ENV": "production"})
    assert result.ok, result
    assert (result.reason, result.exit_code, result.message) == ("ok", 0, "")
    # The second chunk was sent only after the runner had passed the first line on.
    assert double.live
    assert lines == ["Start building", "Pages | 3", "Total in 12 ms"]
    assert (result.publish_dir / "index.html").read_bytes() == b"<h1>ok</h1>"
    assert result.publish_dir.is_relative_to(tmp_path / "work" / "build")
    (name,) = double.source_seen
    assert double.source_seen[name] == ["content", "content/_index.md", "hugo.toml"]
    # The manifest submitted: the job's own exchange directories, limits, clean env.
    (post,) = double.calls("POST")
    assert post[0] == f"/apis/batch/v1/namespaces/{NS}/jobs"
    # Followed the build container's log, then deleted the Job with its pod.
    logs = [q for p, q in double.calls("GET") if p.endswith("/log")]
    assert logs == [{"container": "build", "follow": "true"}]
    assert double.calls("DELETE") == [
        (f"/apis/batch/v1/namespaces/{NS}/jobs/{name}", {"propagationPolicy": "Background"})
    ]
    assert list(exchange.iterdir()) == []


def test_the_submitted_job_carries_the_limits_and_no_ecstatic_env(tree, tmp_path, exchange):
    with Double(Script(), exchange) as double:
        run(double, tree, tmp_path, environment={"HUGO_ENV": "production"})
    (job,) = double.posted
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 60)
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "builder"
    (build,) = pod["initContainers"]
    env = {e["name"]: e["value"] for e in build["env"]}
    assert env["HUGO_ENV"] == "production"
    assert not [n for n in env if n.startswith("ECSTATIC_")]
    assert build["resources"]["limits"]["memory"] == str(LIMITS.memory_bytes)
    assert f"--nproc={LIMITS.max_processes}" in build["command"]
    assert build["command"][-1] == "hugo --minify"


def test_failure_reports_the_exit_code_and_the_tail(tree, tmp_path, exchange):
    chunks = [f"line {i}\n".encode() for i in range(8)] + [b"Error: template broken\n"]
    script = Script(
        chunks=chunks, exit_code=2, terminated_reason="Error", job_failed="BackoffLimitExceeded"
    )
    with Double(script, exchange) as double:
        result, lines = run(double, tree, tmp_path)
    assert not result.ok
    assert (result.reason, result.exit_code) == ("failed", 2)
    assert result.message == "the build command exited with status 2"
    assert result.tail == ["line 4", "line 5", "line 6", "line 7", "Error: template broken"]
    assert len(lines) == 9
    assert len(double.calls("DELETE")) == 1
    assert list(exchange.iterdir()) == []


def test_deadline_exceeded_is_a_timeout(tree, tmp_path, exchange):
    script = Script(
        chunks=[b"working\n"],
        job_failed="DeadlineExceeded",
        terminated_reason="Error",
        exit_code=137,
    )
    with Double(script, exchange) as double:
        result, _ = run(double, tree, tmp_path, limits=BuildLimits(timeout_seconds=3))
    assert (result.ok, result.reason, result.exit_code) == (False, "timeout", None)
    assert result.message == "the build timed out after 3 s"
    assert double.posted[0]["spec"]["activeDeadlineSeconds"] == 3
    assert len(double.calls("DELETE")) == 1


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (
            Script(exit_code=137, terminated_reason="OOMKilled", job_failed="BackoffLimitExceeded"),
            "memory",
        ),
        (
            Script(
                pod_reason="Evicted",
                job_failed="BackoffLimitExceeded",
                exit_code=137,
                terminated_reason="Error",
            ),
            "output_too_large",
        ),
        (Script(waiting="ErrImagePull"), "sandbox_error"),
        (Script(chunks=[b"x" * 4000 + b"\n"] * 4), "output_too_large"),
    ],
    ids=["oom-killed", "evicted-for-disk", "image-pull", "log-over-cap"],
)
def test_other_outcomes_map_to_the_sandbox_reasons(tree, tmp_path, exchange, script, reason):
    with Double(script, exchange) as double:
        result, _ = run(double, tree, tmp_path)
    assert (result.ok, result.reason) == (False, reason), result
    assert len(double.calls("DELETE")) == 1
    assert list(exchange.iterdir()) == []


def test_missing_publish_directory_fails_like_the_sandbox(tree, tmp_path, exchange):
    with Double(Script(site={}), exchange) as double:
        result, _ = run(double, tree, tmp_path)
    assert (result.ok, result.reason) == (False, "failed")
    assert result.message == "the build did not create the directory 'public'"


def test_refused_environment_never_reaches_the_api(tree, tmp_path, exchange):
    with Double(Script(), exchange) as double:
        with pytest.raises(ConfigError):
            run(double, tree, tmp_path, environment={"ECSTATIC_API_TOKEN": "x"})
    assert double.requests == []


def test_an_unreachable_api_is_a_sandbox_error(tree, tmp_path, exchange):
    runner = KubeRunner(
        client.ApiClient(client.Configuration(host="http://127.0.0.1:9")),
        SETTINGS,
        exchange,
        poll_seconds=0.05,
    )
    started = time.monotonic()
    result = runner.run("true", tree, tmp_path / "work" / "b", on_line=print, limits=LIMITS)
    assert (result.ok, result.reason) == (False, "sandbox_error")
    assert result.message.startswith("the Kubernetes API is unreachable")
    assert time.monotonic() - started < 30
    assert list(exchange.iterdir()) == []
