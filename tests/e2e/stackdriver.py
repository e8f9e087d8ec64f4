"""Drive a whole local stack from tests: start it, talk to it as a user, stop it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import requests

from services.core.config import PORT_DEFAULTS

BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
# Every listener of the layout map, each on its own free port.
PORT_NAMES = tuple(name.upper() for name in PORT_DEFAULTS)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Stack:
    """A running stack and the ways a user talks to it."""

    def __init__(self, home: Path, **settings: str):
        ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.http_port = ports["HTTP"]
        self.prometheus_port = ports["PROMETHEUS"]
        self.env = {
            **os.environ,
            "ECSTATIC_HOME": str(home),
            "ECSTATIC_INTAKE_FLUSH_SECONDS": "0.5",
            **{f"ECSTATIC_{name}_PORT": str(port) for name, port in ports.items()},
            **settings,
        }
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.up_output = ""

    def ecstatic(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        if check:
            assert result.returncode == 0, (
                f"ecstatic {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def create_user(self, name: str) -> str:
        return self.ecstatic("admin", "create-user", name).stdout.strip().splitlines()[-1]

    def api(self, method: str, path: str, token: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return requests.request(method, self.base + path, headers=headers, timeout=10, **kwargs)

    def page(self, host: str, path: str) -> requests.Response:
        return requests.get(
            self.base + path, headers={"Host": host, "User-Agent": BROWSER_UA}, timeout=10
        )


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
    }
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, f"git {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _with_token(git_url: str, token: str, user: str = "x") -> str:
    scheme, rest = git_url.split("://", 1)
    return f"{scheme}://{user}:{token}@{rest}"


def with_token(git_url: str, token: str, user: str = "x") -> str:
    """The git URL with the token as the HTTP Basic password."""
    scheme, rest = git_url.split("://", 1)
    return f"{scheme}://{user}:{token}@{rest}"


def stats(stack: Stack, token: str, site_id: str, kind: str, **params) -> requests.Response:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return stack.api("GET", f"/v1/sites/{site_id}/stats/{kind}?{query}", token)


@contextlib.contextmanager
def running_stack(home: Path, **settings: str) -> Iterator[Stack]:
    """A stack brought up with ``ecstatic up`` in ``home``, and always brought down."""
    stack = Stack(home, **settings)
    up = stack.ecstatic("up", "--timeout", "180", check=False)
    try:
        assert up.returncode == 0, f"ecstatic up failed:\n{up.stdout}\n{up.stderr}"
        stack.up_output = up.stdout
        yield stack
    finally:
        stack.ecstatic("down", check=False)


def make_repo(directory: Path, files: dict[str, bytes], author: str = "Alice") -> Path:
    """A git repository in ``directory`` with ``files`` committed on ``main``."""
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    git(directory, "init", "-q", "-b", "main")
    git(directory, "add", ".")
    identity = ("-c", f"user.name={author}", "-c", f"user.email={author.lower()}@example.com")
    git(directory, *identity, "commit", "-qm", "site")
    return directory


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port``, read from /proc/net."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)
                    # /proc prints each 32-bit word in host (little-endian) order
                    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
                    packed = b"".join(words)
                    family = socket.AF_INET if width == 8 else socket.AF_INET6
                    found.add(socket.inet_ntop(family, packed))
    return found


# -- deploys: builds, streamed output, records -------------------------------------------


@contextlib.contextmanager
def searchable_home(prefix: str = "ecstatic-e2e-") -> Iterator[Path]:
    """A fresh directory for ECSTATIC_HOME whose parents a build slot's uid can search.

    As root, builds run as an unprivileged slot uid that must reach the deploy's work
    directory under ECSTATIC_HOME; pytest's own temporary directories are 0700.
    """
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o711)
    try:
        yield base / "home"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def commit(
    directory: Path,
    files: dict[str, bytes | None],
    message: str,
    author: str = "Alice",
) -> str:
    """Write (or, for None, delete) ``files`` and commit them; returns the new sha."""
    for name, data in files.items():
        path = directory / name
        if data is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    git(directory, "add", "-A", ".")
    identity = ("-c", f"user.name={author}", "-c", f"user.email={author.lower()}@example.com")
    git(directory, *identity, "commit", "-q", "--allow-empty", "-m", message)
    return git(directory, "rev-parse", "HEAD").stdout.strip()


def remote_lines(stderr: str) -> list[str]:
    """What the server said to the pusher: the ``remote:`` lines, without the prefix."""
    lines = []
    for raw in stderr.replace("\r", "\n").splitlines():
        if raw.startswith("remote: "):
            lines.append(raw[len("remote: ") :].rstrip())
        elif raw == "remote:":
            lines.append("")
    return lines


@dataclasses.dataclass
class StreamedPush:
    """A ``git push`` whose stderr was read as it arrived."""

    returncode: int
    lines: list[tuple[float, str]]  # (monotonic seconds since the push began, line)
    seconds: float

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)

    @property
    def remote(self) -> list[str]:
        return remote_lines(self.stderr)

    def arrival(self, text: str) -> float:
        """When the first ``remote:`` line equal to ``text`` arrived."""
        for at, line in self.lines:
            if line.startswith("remote:") and line[len("remote:") :].strip() == text:
                return at
        raise AssertionError(f"no remote line {text!r} in:\n{self.stderr}")


def start_push(cwd: Path, *args: str) -> subprocess.Popen:
    """Start ``git push --progress ARGS`` with stderr as a pipe (read it with ``follow_push``)."""
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
    }
    return subprocess.Popen(
        ["git", "push", "--progress", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group: ``kill_push`` ends git-remote-http too
    )


def kill_push(process: subprocess.Popen) -> None:
    """SIGKILL a started push and its helpers (git-remote-http holds the stderr pipe)."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def follow_push(process: subprocess.Popen, on_line=None, timeout: float = 120.0) -> StreamedPush:
    """Read a started push's stderr line by line, timestamping each line as it arrives."""
    import time

    began = time.monotonic()
    lines: list[tuple[float, str]] = []
    assert process.stderr is not None
    buffer = b""
    fd = process.stderr.fileno()
    while True:
        chunk = os.read(fd, 65536)  # returns what is there: no waiting for a full block
        if not chunk:
            break
        buffer += chunk
        *complete, buffer = buffer.replace(b"\r", b"\n").split(b"\n")
        for raw in complete:
            text = raw.decode("utf-8", "replace")
            lines.append((time.monotonic() - began, text))
            if on_line is not None:
                on_line(text)
        assert time.monotonic() - began < timeout, f"push still running after {timeout}s"
    if buffer:
        lines.append((time.monotonic() - began, buffer.decode("utf-8", "replace")))
    returncode = process.wait(timeout=timeout)
    return StreamedPush(returncode, lines, time.monotonic() - began)


def push(cwd: Path, *args: str, timeout: float = 120.0) -> StreamedPush:
    """``git push --progress ARGS``, its stderr read and timestamped as it arrives."""
    return follow_push(start_push(cwd, *args), timeout=timeout)


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")


def deploys(stack: Stack, token: str, site_id: str) -> list[dict]:
    answer = stack.api("GET", f"/v1/sites/{site_id}/deploys", token)
    assert answer.status_code == 200, answer.text
    return answer.json()["deploys"]


def deploy_log(stack: Stack, token: str, site_id: str, deploy_id: str) -> dict:
    answer = stack.api("GET", f"/v1/sites/{site_id}/deploys/{deploy_id}/log", token)
    assert answer.status_code == 200, answer.text
    return answer.json()


def host_of(url: str) -> str:
    """``http://blog.localhost:8080/`` -> ``blog.localhost``."""
    return url.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]


def supervisor_pid(stack: Stack, program: str) -> int:
    """The pid supervisord runs ``program`` under (0 while it is not running)."""
    conf = Path(stack.env["ECSTATIC_HOME"]) / "run" / "supervisord.conf"
    result = subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), "pid", program],
        capture_output=True,
        text=True,
        timeout=30,
    )
    try:
        return int(result.stdout.strip())
    except ValueError:
        return 0


def metric_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric in Prometheus text format: sorted label pairs -> value."""
    import re

    found = {}
    pattern = re.compile(r"^" + re.escape(name) + r"(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            labels = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or "")
            found[tuple(sorted(labels))] = float(match["value"])
    return found
