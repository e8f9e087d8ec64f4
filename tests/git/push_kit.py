"""The real api and git rooms on 127.0.0.1, and a real git client (imported by name).

``ThreadedRoom`` serves the ``ProcessApp`` of ``build_process_app(["api", "git"])`` on a
threaded stdlib server in this process: the api with its SQLite store under a tmp
``ECSTATIC_HOME``, and the git room with its real pipeline, deploy queue and LocalCDN.
``ProcessRoom`` runs the same rooms under gunicorn (``python -m services.cli serve
api,git``) in a subprocess, for what only a separate process shows. Users are made as
``ecstatic admin create-user`` makes them; sites through ``POST /v1/sites``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zlib
from hashlib import sha1
from pathlib import Path

import psutil
import requests

from services.cdn.local import LocalCDN
from services.core.config import Config
from services.core.runtime import Context
from services.falcon_apps.api.store import MetadataStore
from services.git.backend import SiteRepos
from services.server import build_process_app
from tests.wsgi_serving import QuietHandler, ThreadedWSGIServer

HERE = Path(__file__).parent
REPO = HERE.parent.parent
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def room_env(home: Path, api_port: int, **settings) -> dict[str, str]:
    """The ``ECSTATIC_*`` environment of a test stack: home in tmp, the api on ``api_port``."""
    env = {
        "ECSTATIC_HOME": str(home),
        "ECSTATIC_API_PORT": str(api_port),
        "ECSTATIC_API_URL": f"http://127.0.0.1:{api_port}",
        "ECSTATIC_LOG_LEVEL": "INFO",
    }
    env.update({f"ECSTATIC_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class _Stack:
    """What both rooms offer a test: users, sites, push URLs, live files, deploys."""

    config: Config
    port: int  # where the git room listens (pushes, restores, its /metrics)
    api_port: int

    @property
    def base(self) -> str:
        """The api's base URL."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def git_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn(self) -> LocalCDN:
        return LocalCDN(self.config.cdn_root, sync=False)

    @property
    def repos(self) -> SiteRepos:
        return SiteRepos(self.config.git_root)

    def create_user(self, name: str | None = None) -> str:
        """A new user with a token, as ``ecstatic admin create-user`` makes one."""
        store = MetadataStore(self.config.api_db)
        try:
            _user, token = store.create_user(name or f"u{time.time_ns()}")
        finally:
            store.close()
        return token

    def create_site(self, token: str, name: str) -> dict:
        """``POST /v1/sites``: the new site's JSON."""
        response = requests.post(
            f"{self.base}/v1/sites", json={"name": name}, headers=self.bearer(token), timeout=10
        )
        assert response.status_code == 201, response.text
        return response.json()

    def new_site(self, name: str) -> tuple[str, str]:
        """A new user owning a new site: ``(site_id, token)``."""
        token = self.create_user()
        return self.create_site(token, name)["id"], token

    def site(self, token: str, site_id: str) -> dict:
        response = requests.get(
            f"{self.base}/v1/sites/{site_id}", headers=self.bearer(token), timeout=10
        )
        assert response.status_code == 200, response.text
        return response.json()

    def deploys(self, token: str, site_id: str) -> list[dict]:
        """The site's deploys at the api, newest first."""
        response = requests.get(
            f"{self.base}/v1/sites/{site_id}/deploys", headers=self.bearer(token), timeout=10
        )
        assert response.status_code == 200, response.text
        return response.json()["deploys"]

    def wait_deploys(self, token, site_id, count, timeout=30.0) -> list[dict]:
        """Wait until ``count`` deploys of the site have reached a final state."""
        deadline = time.monotonic() + timeout
        while True:
            deploys = self.deploys(token, site_id)
            final = [d for d in deploys if d["state"] in ("live", "failed", "superseded")]
            if len(final) >= count or time.monotonic() > deadline:
                return deploys
            time.sleep(0.05)

    def log(self, token: str, site_id: str, deploy_id: str) -> dict:
        response = requests.get(
            f"{self.base}/v1/sites/{site_id}/deploys/{deploy_id}/log",
            headers=self.bearer(token),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def restore(self, token: str | None, site_id: str, deploy_id: str) -> requests.Response:
        headers = self.bearer(token) if token else {}
        return requests.post(
            f"{self.git_base}/v1/sites/{site_id}/deploys/{deploy_id}/restore",
            headers=headers,
            timeout=30,
        )

    @staticmethod
    def bearer(token: str) -> dict:
        return {"Authorization": f"Bearer {token}"}

    def url(self, site_id: str, token: str) -> str:
        return f"http://x:{token}@127.0.0.1:{self.port}/git/{site_id}.git"

    def live(self, host: str) -> Path:
        return self.config.cdn_root / "live" / host

    def repo_dir(self, site_id: str) -> Path:
        return self.repos.path(site_id)

    def metric(self, name: str, labels: dict | None = None) -> float:
        """One sample of the process's ``/metrics``, 0 when absent."""
        text = requests.get(f"{self.git_base}/metrics", timeout=10).text
        wanted = name + (
            "{" + ",".join(f'{k}="{v}"' for k, v in (labels or {}).items()) + "}" if labels else ""
        )
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


class ThreadedRoom(_Stack):
    """``build_process_app(["api", "git"])`` on a threaded stdlib server in this process."""

    def __init__(self, root: Path, **settings):
        self.root = Path(root)
        # Bind first: the config's api URL is this very server.
        self.server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler)
        self.port = self.api_port = self.server.server_port
        self.config = Config.from_env(room_env(self.root / "home", self.port, **settings))
        self.app = build_process_app(["api", "git"], Context(self.config))
        self.statuses: list[tuple[str, str, int]] = []  # (method, path, status) answered
        self.server.set_app(self._recording)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _recording(self, environ, start_response):
        def start(status, headers, exc_info=None):
            self.statuses.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], int(status[:3])))
            return start_response(status, headers, exc_info)

        return self.app(environ, start)

    def stop(self):
        self.server.shutdown()
        for background in self.app.backgrounds:
            background.stop(timeout=30)
        self.server.server_close()


class ProcessRoom(_Stack):
    """The same rooms under gunicorn (gthread, one worker each): ``ecstatic serve ...``.

    ``split=False`` serves ``api,git`` in one process; ``split=True`` runs ``serve api``
    and ``serve git`` as two processes, as the default layout does (``targets.processes``).
    """

    def __init__(self, root: Path, split: bool = False, **settings):
        self.root = Path(root)
        self.split = split
        self.api_port = free_port()
        self.port = free_port()
        self.env = room_env(self.root / "home", self.api_port, git_port=self.port, **settings)
        self.config = Config.from_env(self.env)
        stamp = time.time_ns()
        self.specs = ["api", "git"] if split else ["api,git"]
        self.stderr_paths = [self.root / f"stderr-{stamp}-{spec}.log" for spec in self.specs]
        self.procs: list[subprocess.Popen] = []
        self._files: list = []

    @property
    def proc(self) -> subprocess.Popen:
        """The gunicorn master serving the git room."""
        return self.procs[-1]

    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO)}
        for spec, path in zip(self.specs, self.stderr_paths, strict=True):
            out = open(path, "wb")
            self._files.append(out)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.cli", "serve", spec],
                    stdout=out,
                    stderr=out,
                    env=env,
                    cwd=REPO,
                )
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in self.procs), self.stderr()
            try:
                ok = all(
                    requests.get(f"{base}/healthz", timeout=0.5).status_code == 200
                    for base in (self.base, self.git_base)
                )
                if ok and all(psutil.Process(p.pid).children() for p in self.procs):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not start:\n" + self.stderr())

    def worker(self) -> psutil.Process | None:
        """The gunicorn worker that runs the git room."""
        children = psutil.Process(self.proc.pid).children()
        return children[0] if children else None

    def kill9(self):
        for master in self.procs:
            for proc in [*psutil.Process(master.pid).children(), psutil.Process(master.pid)]:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            master.wait(10)
        self._close()

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._close()

    def _close(self):
        for out in self._files:
            if not out.closed:
                out.close()

    def stderr(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.stderr_paths)


def rss_peak_kib(proc: psutil.Process) -> int:
    """Peak resident set (VmHWM) of a live process, in KiB."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def git_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
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


def make_git(tmp_path: Path):
    assert shutil.which("git"), "the git CLI is required (the setup installs it)"
    env = git_env(tmp_path)

    def run(*args, cwd=None, check=True, timeout=120):
        result = subprocess.run(
            ["git", "-c", "credential.helper=", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    run.env = env
    return run


def new_work(git, path: Path) -> Path:
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
    git("commit", "-q", "--allow-empty", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def pack_of(git, work: Path, sha: str) -> bytes:
    """A pack of everything reachable from ``sha``, made by the real git client."""
    result = subprocess.run(
        ["git", "pack-objects", "--stdout", "--revs", "-q"],
        input=f"{sha}\n".encode(),
        cwd=work,
        env=git.env,
        capture_output=True,
        check=True,
    )
    return result.stdout


def pkt(line: bytes) -> bytes:
    return b"%04x" % (len(line) + 4) + line


def bomb_body(inflated: int) -> bytes:
    """A receive-pack body: one ref command, then a pack of one blob of ``inflated`` zeros.

    The pack holds ~1/1000 of that (zlib of zeros); gzip of the whole body shrinks it
    again to a few KiB, as the attacker's 3.6 KB request did.
    """
    head = bytearray()
    size = inflated
    byte = (3 << 4) | (size & 0x0F)
    size >>= 4
    while size:
        head.append(byte | 0x80)
        byte, size = size & 0x7F, size >> 7
    head.append(byte)
    deflate = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    parts = [deflate.compress(zeros) for _ in range(inflated >> 20)]
    parts.append(deflate.compress(bytes(inflated & ((1 << 20) - 1))))
    parts.append(deflate.flush())
    pack = b"PACK" + (2).to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes(head) + b"".join(parts)
    pack += sha1(pack).digest()
    command = b"0" * 40 + b" " + b"1" * 40 + b" refs/heads/main\x00 report-status side-band-64k"
    return pkt(command) + b"0000" + pack


def post_pack(port, site_id, token, body: bytes, gzipped=False, timeout=60):
    headers = {"Content-Type": "application/x-git-receive-pack-request"}
    if gzipped:
        body = gzip_bytes(body)
        headers["Content-Encoding"] = "gzip"
    return requests.post(
        f"http://127.0.0.1:{port}/git/{site_id}.git/git-receive-pack",
        data=body,
        headers=headers,
        auth=("x", token),
        timeout=timeout,
    )


def gzip_bytes(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, 9)
