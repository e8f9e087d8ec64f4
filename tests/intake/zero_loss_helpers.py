"""Real intake processes for the zero-loss tests: a stub api, the process, a sender, counts.

``IntakeProcess`` runs ``ecstatic serve intake,query`` (gunicorn, the embedded engine) in
its own session, so SIGKILL reaches master and worker at once. ``Sender`` streams Bunny
JSON lines in RFC 5424 framing over TCP the way a cooperating sender does during a
hand-over: between writes it looks for EOF from the listener, and on EOF or an error
it stops writing, closes and reconnects, and goes on with the next line it has not
fully written. It records which lines each connection got.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests

from services.cli import ports
from services.core.config import Config
from services.core.schema import INGEST_COLUMNS
from services.intake.spool import DATA, _read_records
from tests.e2e.stackdriver import PORT_NAMES, free_ports
from tests.wsgi_serving import threaded_server

SITE = "5a5a5a5a5a5a5a5a"
HOST = "zeroloss.b-cdn.net"
CADDY_HOST = "zeroloss.localhost"
TOKEN = "ecs_zeroloss"
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
REPO = Path(__file__).resolve().parents[2]


# -- the api the processes ask ------------------------------------------------------------


class StubApi:
    """``/internal/hostmap`` (HOST -> SITE) and the token check (TOKEN owns SITE)."""

    def __init__(self):
        self._server = threaded_server(self._app)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _app(self, environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/internal/hostmap":
            status, body = "200 OK", {"hosts": {HOST: SITE, CADDY_HOST: SITE}}
        elif environ.get("HTTP_AUTHORIZATION") != f"Bearer {TOKEN}":
            status, body = "401 Unauthorized", {"error": "unauthorized"}
        elif path.rstrip("/").endswith(SITE):
            status, body = "200 OK", {"id": SITE}
        else:
            status, body = "404 Not Found", {"error": "not found"}
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- the process ------------------------------------------------------------------------


def process_env(home: Path, api_url: str) -> dict[str, str]:
    """The environment of every process of one test: same home, same ports."""
    found = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    return {
        **os.environ,
        "ECSTATIC_HOME": str(home),
        "ECSTATIC_API_URL": api_url,
        "ECSTATIC_INTAKE_FLUSH_SECONDS": "0.2",
        **{f"ECSTATIC_{name}_PORT": str(port) for name, port in found.items()},
    }


class IntakeProcess:
    """``ecstatic serve intake,query`` in its own session, its output in ``log``."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.syslog_port = int(env["ECSTATIC_INTAKE_SYSLOG_PORT"])
        self.query = f"http://127.0.0.1:{env['ECSTATIC_QUERY_PORT']}"
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", "intake,query"],
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def listening(self) -> bool:
        """True once this very process (its worker) listens on the syslog port."""
        return bool(ports.holders(self.syslog_port) & ports.family(self.pid))

    def wait_listening(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.listening():
            assert self.popen.poll() is None, f"serve exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"never listened on syslog:\n{self.tail()}"
            time.sleep(0.1)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the exit (gunicorn drains, the intake spools)."""
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL master and worker at once: nothing runs a shutdown."""
        os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(30)

    def ensure_gone(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(30)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def server_sockets(self) -> list[dict[str, int]]:
        """Its syslog connections' kernel buffers (``ss``): rcvbuf and bytes unread."""
        pids = ports.family(self.pid)
        found = []
        result = subprocess.run(
            ["ss", "-tmnpH", "state", "established", f"( sport = :{self.syslog_port} )"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        for entry in re.split(r"\n(?=\S)", result.stdout):
            owners = {int(pid) for pid in re.findall(r"pid=(\d+)", entry)}
            memory = re.search(r"skmem:\(r(\d+),rb(\d+)", entry)
            if memory and owners & pids:
                found.append({"unread": int(memory[1]), "rcvbuf": int(memory[2])})
        return found


def stored_requests(process: IntakeProcess) -> int | None:
    """Rows of SITE the query app counts (bots included, the last 24 hours), or None."""
    try:
        answer = requests.get(
            f"{process.query}/v1/sites/{SITE}/stats/timeseries",
            params={"period": "24h", "interval": "hour", "bots": "include"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
    except requests.RequestException:
        return None
    if answer.status_code != 200:
        return None
    return answer.json()["totals"]["requests"]


def wait_for_count(process: IntakeProcess, expected: int, timeout: float = 90.0) -> int:
    """Poll the stats API until it counts ``expected`` rows (or the timeout); the last count."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = stored_requests(process)
        if seen is not None and seen >= expected:
            break
        time.sleep(0.5)
    return -1 if seen is None else seen


def wait_until_steady(process: IntakeProcess, quiet: float = 4.0, timeout: float = 90.0) -> int:
    """Poll the stats API until the count stops changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        seen = stored_requests(process)
        if seen != last:
            last, since = seen, time.monotonic()
        elif seen is not None and time.monotonic() - since >= quiet:
            return seen
        time.sleep(0.5)
    return -1 if last is None else last


_STORED_IDS = """
import json, sys
from services.core.storage import open_storage
storage = open_storage(sys.argv[1])
rows = storage.rows(
    "SELECT if(log_source = 'caddy', path, request_id) AS id, count() AS n"
    " FROM requests GROUP BY id"
)
json.dump({row["id"]: row["n"] for row in rows}, sys.stdout)
"""


def stored_ids(env: dict[str, str]) -> dict[str, int]:
    """Every stored line's id and how often, read from the data path (no process on it):
    a Bunny line's request id, a Caddy line's path."""
    result = subprocess.run(
        [sys.executable, "-c", _STORED_IDS, Config.from_env(env).clickhouse_url],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def spooled_ids(env: dict[str, str]) -> set[str]:
    """Request ids in the intact DATA records of every spool segment (none may be open)."""
    column = INGEST_COLUMNS.index("request_id")
    found = set()
    for path in sorted((Config.from_env(env).intake_state_dir / "wal").glob("*.wal")):
        records, _ = _read_records(path)
        with open(path, "rb") as handle:
            data = handle.read()
        for kind, offset, length, _rows, _ in records:
            if kind == DATA:
                for row in data[offset : offset + length].splitlines():
                    found.add(json.loads(row)[column])
    return found


def caddy_path(n: int) -> str:
    return f"/caddy/{n}"


class CaddyWriter(threading.Thread):
    """Appends ``total`` Caddy access-log lines to ``path`` at ``rate`` lines/s."""

    def __init__(self, path: Path, total: int, rate: float):
        super().__init__(name="caddy-writer", daemon=True)
        self.path, self.total, self.rate = path, total, rate
        self.written = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            with open(self.path, "ab", buffering=0) as log:
                while self.written < self.total:
                    upto = min(self.total, self.written + 10)
                    log.write(b"".join(_caddy_line(n) for n in range(self.written, upto)))
                    self.written = upto
                    time.sleep(max(0.0, started + upto / self.rate - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc


def _caddy_line(n: int) -> bytes:
    record = {
        "level": "info",
        "ts": time.time(),
        "logger": "http.log.access.log0",
        "msg": "handled request",
        "request": {
            "remote_ip": f"10.200.{n >> 8 & 255}.{n & 255}",
            "remote_port": "41714",
            "proto": "HTTP/1.1",
            "method": "GET",
            "host": CADDY_HOST,
            "uri": caddy_path(n),
            "headers": {"User-Agent": [CHROME]},
        },
        "duration": 0.001,
        "size": 3,
        "status": 200,
    }
    return json.dumps(record).encode() + b"\n"


# -- the sender -------------------------------------------------------------------------


def request_id(n: int) -> str:
    return f"zl{n:09d}"


def frame(n: int, host: str = HOST) -> bytes:
    """Line ``n``: a Bunny JSON record in an RFC 5424 frame, LF-terminated."""
    now = datetime.now(UTC)
    body = {
        "Host": host,
        "PathAndQuery": f"/page/{n}",
        "Status": 200,
        "BytesSent": 1234,
        "Timestamp": int(now.timestamp() * 1000),
        "RemoteIp": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
        "UserAgent": CHROME,
        "RequestId": request_id(n),
        "Country": "DE",
        "Referer": "",
    }
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"<134>1 {stamp} edge bunnycdn - logs - {json.dumps(body)}\n".encode()


@dataclass
class Connection:
    """One TCP connection of the sender: the lines fully written to it, and how it ended."""

    lines: list[int] = field(default_factory=list)
    ended_by: str = ""
    sndbuf: int = 0


class Sender(threading.Thread):
    """Streams lines ``0 .. total-1`` at ``rate`` lines/s, reconnecting on EOF or errors."""

    def __init__(
        self,
        port: int,
        total: int,
        rate: float,
        chunk: int = 20,
        sndbuf: int = 0,
        host: str = HOST,
    ):
        super().__init__(name="sender", daemon=True)
        self.host = host
        self.port, self.total, self.rate, self.chunk = port, total, rate, chunk
        self.sndbuf = sndbuf
        self.connections: list[Connection] = []
        self.next = 0  # the first line not fully written yet
        self.error: BaseException | None = None
        self.line_bytes = 0  # the longest line sent
        self.refused = 0  # connection attempts that failed (no listener on the port)

    @property
    def written(self) -> list[int]:
        return [n for connection in self.connections for n in connection.lines]

    def run(self) -> None:
        try:
            started = time.monotonic()
            while self.next < self.total:
                sock = self._connect()
                connection = Connection(sndbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
                self.connections.append(connection)
                try:
                    connection.ended_by = self._stream(sock, connection, started)
                finally:
                    sock.close()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 120
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if self.sndbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
            try:
                sock.connect(("127.0.0.1", self.port))
                sock.setblocking(False)
                return sock
            except OSError:
                sock.close()
                self.refused += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _stream(self, sock: socket.socket, connection: Connection, started: float) -> str:
        pending = b""  # the bytes of lines [first, next_unframed) not yet accepted by send
        first = self.next
        sent_into_first = 0  # bytes of line ``first`` already accepted
        lengths: list[int] = []  # lengths of the lines in ``pending`` (from ``first``)
        while True:
            # With nothing to write, only look (no wait) for the listener's EOF.
            waiting = [sock] if pending else []
            readable, writable, _ = select.select([sock], waiting, [], 0.05 if pending else 0)
            if readable:
                try:
                    if sock.recv(4096) == b"":
                        return "eof"
                except OSError as exc:
                    return type(exc).__name__
            if not pending:
                upto = min(self.total, first + self.chunk)
                if upto == first:
                    return "done"
                due = started + first / self.rate
                if time.monotonic() < due:
                    time.sleep(max(0.0, min(0.01, due - time.monotonic())))
                    continue
                lines = [frame(n, self.host) for n in range(first, upto)]
                lengths = [len(line) for line in lines]
                self.line_bytes = max(self.line_bytes, *lengths)
                pending = b"".join(lines)
                continue
            if not writable:
                continue
            try:
                accepted = sock.send(pending)
            except BlockingIOError:
                continue
            except OSError as exc:
                return type(exc).__name__
            pending = pending[accepted:]
            sent_into_first += accepted
            while lengths and sent_into_first >= lengths[0]:
                sent_into_first -= lengths.pop(0)
                connection.lines.append(first)
                first += 1
                self.next = first
