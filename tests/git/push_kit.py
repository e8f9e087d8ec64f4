"""Real servers and a real git client for the intake tests (imported by name)."""

from __future__ import annotations

import json
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
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psutil
import requests
from git_kit import FakeAuthorizer, make_site
from room_kit import Room

from services.git.checkout import Limits
from services.git.limits import IntakeLimits

HERE = Path(__file__).parent
REPO = HERE.parent.parent


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


class ThreadedRoom:
    """A ``Room`` on a threaded stdlib server on 127.0.0.1 (in this process)."""

    def __init__(self, root: Path, limits: Limits, intake: IntakeLimits):
        self.authorizer = FakeAuthorizer()
        self.room = Room(root, self.authorizer, limits, intake)
        self.server = make_server(
            "127.0.0.1", 0, self.room.app, server_class=_Server, handler_class=_Quiet
        )
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def site(self, site_id, name, token):
        return self.authorizer.add(token, make_site(site_id, name))

    def url(self, site_id, token):
        return f"http://x:{token}@127.0.0.1:{self.port}/git/{site_id}.git"

    def live(self, host):
        return self.room.cdn.live_dir / host

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessRoom:
    """A ``Room`` under gunicorn (gthread, one worker) in a subprocess."""

    def __init__(self, root: Path, spec: dict):
        self.root = Path(root)
        self.spec = {"port": free_port(), **spec}
        self.port = self.spec["port"]
        self.stderr_path = self.root / f"stderr-{time.time_ns()}.log"
        self.proc = None

    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.stderr_path, "wb")
        env = {**os.environ, "PYTHONPATH": f"{REPO}:{HERE}"}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "room_kit.py"), str(self.root), json.dumps(self.spec)],
            stdout=self._stderr,
            stderr=self._stderr,
            env=env,
            cwd=REPO,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.stderr()
            try:
                requests.get(f"http://127.0.0.1:{self.port}/", timeout=0.5)
                if self.worker() is not None:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not start:\n" + self.stderr())

    def worker(self) -> psutil.Process | None:
        children = psutil.Process(self.proc.pid).children()
        return children[0] if children else None

    def kill9(self):
        for proc in [*psutil.Process(self.proc.pid).children(), psutil.Process(self.proc.pid)]:
            proc.kill()
        self.proc.wait(10)
        self._stderr.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()
        if not self._stderr.closed:
            self._stderr.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def url(self, site_id, token):
        return f"http://x:{token}@127.0.0.1:{self.port}/git/{site_id}.git"


def rss_peak_kib(proc: psutil.Process) -> int:
    """Peak resident set (VmHWM) of a live process, in KiB."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def make_git(tmp_path: Path):
    assert shutil.which("git"), "the git CLI is required (the setup installs it)"
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "P",
        "GIT_AUTHOR_EMAIL": "p@e.com",
        "GIT_COMMITTER_NAME": "P",
        "GIT_COMMITTER_EMAIL": "p@e.com",
        "LC_ALL": "C",
    }

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

    return run


def new_work(git, path: Path) -> Path:
    git("-c", "init.defaultBranch=main", "init", "-q", str(path))
    return path


def commit(git, work: Path, files: dict, message="update") -> str:
    for name, content in files.items():
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


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
