"""A faithful local double of bunny.net's Edge Storage API and the Core API purge.

Two real HTTP/1.1 servers on 127.0.0.1 (ephemeral ports): one answers the storage API
(``/{zone}/{path}``), one the Core API (``/pullzone/{id}/purgeCache``). Status codes,
JSON bodies and listing fields copy /work/shared/reference/bunny.md; where bunny.net's
behaviour is UNCONFIRMED the double is strict (uppercase checksums only, a
Content-Length on every upload, no zone-root delete) and lists in a non-alphabetical
order so no client can rely on ordering.

Every request is recorded (``requests``) with the AccessKey removed. Faults can be
injected per (method, path glob): an error status, a stall past the client's timeout,
or a dropped connection, optionally after the request took effect (a lost response).
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

USER_ID = "6f2a1f0e-0d5a-4c43-9c0e-2b3f3e1d9a10"
UNAUTHORIZED = {"HttpCode": 401, "Message": "Unauthorized"}
NOT_FOUND = {"HttpCode": 404, "Message": "Object Not Found"}
UPLOADED = {"HttpCode": 201, "Message": "File uploaded."}
FILE_DELETED = {"HttpCode": 200, "Message": "File deleted successfuly."}  # bunny's spelling
DIR_DELETED = {"HttpCode": 200, "Message": "Directory deleted successfuly."}
PULL_ZONE_NOT_FOUND = {
    "ErrorKey": "pullZone.not_found",
    "Field": "PullZone",
    "Message": "The requested Pull Zone was not found",  # exact text UNCONFIRMED
}


@dataclass
class Recorded:
    """One request as the double saw it (``seq``/``applied`` share one event counter)."""

    seq: int
    method: str
    path: str  # percent-decoded
    raw_path: str  # as sent on the wire
    headers: dict[str, str]  # without AccessKey
    body_size: int
    status: int | None = None  # None: dropped or stalled, no response sent
    applied: int | None = None  # event number when it changed/read state, if it did


@dataclass
class Fault:
    """Answer the next ``times`` requests matching (method, glob) abnormally."""

    method: str
    pattern: str
    times: int
    kind: str  # "status", "stall" or "drop"
    status: int = 503
    retry_after: float | None = None
    seconds: float = 2.0
    after_apply: bool = False  # stall/drop only after the request took effect


@dataclass
class StoredFile:
    data: bytes
    checksum: str
    guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    stamp: str = field(default_factory=lambda: _stamp())


@dataclass
class Zone:
    name: str
    password: str
    id: int
    files: dict[str, StoredFile] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)  # implicit, kept after their files go


class BunnyDouble:
    """In-memory storage zones and pull zones behind two local HTTP servers."""

    def __init__(self, api_key: str = "account-api-key"):
        self.api_key = api_key
        self.zones: dict[str, Zone] = {}
        self.pull_zones: set[int] = set()
        self.purges: list[tuple[int, str | None]] = []
        self.max_in_flight = 0  # most requests handled at once, to check worker bounds
        self._in_flight = 0
        self._faults: list[Fault] = []
        self._log: list[Recorded] = []
        self._events = itertools.count(1)
        self._lock = threading.RLock()
        self._release = threading.Event()
        self._servers = [self._server("storage"), self._server("core")]

    # -- setup and inspection -----------------------------------------------------------

    def __enter__(self) -> BunnyDouble:
        for server in self._servers:
            # A short poll interval keeps shutdown (and so each test's teardown) quick.
            threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()  # wake stalled handlers
        for server in self._servers:
            server.shutdown()
            server.server_close()

    @property
    def storage_host(self) -> str:
        return f"127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def add_zone(self, name: str, password: str) -> Zone:
        with self._lock:
            self.zones[name] = Zone(name, password, id=1000 + len(self.zones))
            return self.zones[name]

    def files(self, zone: str) -> dict[str, bytes]:
        with self._lock:
            return {path: f.data for path, f in self.zones[zone].files.items()}

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._log)

    def matching(self, method: str, pattern: str = "*") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and fnmatch.fnmatch(r.path, pattern)]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self.max_in_flight = 0

    def snapshot(self) -> dict[str, tuple[dict, set]]:
        """Every zone's files and directories, to ``restore`` later (cheap: no copies of data)."""
        with self._lock:
            return {name: (dict(z.files), set(z.dirs)) for name, z in self.zones.items()}

    def restore(self, snapshot: dict[str, tuple[dict, set]]) -> None:
        """Put zones back as snapshotted; forget faults, purges and the request log."""
        with self._lock:
            for name, (files, dirs) in snapshot.items():
                self.zones[name].files, self.zones[name].dirs = dict(files), set(dirs)
            self._faults.clear()
            self.purges.clear()
            self.clear_log()

    def fail(self, method, pattern, times=1, status=503, retry_after=None) -> None:
        self._add(Fault(method, pattern, times, "status", status, retry_after))

    def stall(self, method, pattern, times=1, seconds=2.0, after_apply=False) -> None:
        self._add(Fault(method, pattern, times, "stall", seconds=seconds, after_apply=after_apply))

    def drop(self, method, pattern, times=1, after_apply=False) -> None:
        self._add(Fault(method, pattern, times, "drop", after_apply=after_apply))

    # -- internals ----------------------------------------------------------------------

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if (
                    fault.times > 0
                    and fault.method == method
                    and fnmatch.fnmatch(path, fault.pattern)
                ):
                    fault.times -= 1
                    return fault
        return None

    def _server(self, role: str) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.double, server.role = self, role
        return server

    def storage(self, method: str, path: str, headers, body: bytes):
        """Answer one storage request: ``(status, json-or-bytes, extra headers)``."""
        zone_name, _, rest = path.lstrip("/").partition("/")
        zone = self.zones.get(zone_name)
        if zone is None or headers.get("AccessKey") != zone.password:
            return 401, UNAUTHORIZED, {}
        is_dir = path.endswith("/")
        rest = rest.rstrip("/")
        if method == "GET" and is_dir:
            return 200, self._listing(zone, rest), {}
        if method == "GET":
            stored = zone.files.get(rest)
            return (200, stored.data, {}) if stored else (404, NOT_FOUND, {})
        if method == "PUT" and not is_dir and rest:
            if headers.get("Content-Length") is None:
                return 411, {"HttpCode": 411, "Message": "Length Required"}, {}
            checksum = hashlib.sha256(body).hexdigest().upper()
            if headers.get("Checksum") not in (None, checksum):
                return 400, {"HttpCode": 400, "Message": "Checksum mismatch."}, {}
            zone.files[rest] = StoredFile(body, checksum)
            parts = rest.split("/")
            zone.dirs.update("/".join(parts[:n]) for n in range(1, len(parts)))
            return 201, UPLOADED, {}
        if method == "DELETE" and is_dir:
            if not rest:  # real root-delete behaviour is UNCONFIRMED: refuse it
                return 400, {"HttpCode": 400, "Message": "Cannot delete the root."}, {}
            inside = [p for p in zone.files if p.startswith(rest + "/")]
            if rest not in zone.dirs and not inside:
                return 404, NOT_FOUND, {}
            for p in inside:
                del zone.files[p]
            zone.dirs = {d for d in zone.dirs if d != rest and not d.startswith(rest + "/")}
            return 200, DIR_DELETED, {}
        if method == "DELETE":
            if zone.files.pop(rest, None) is None:
                return 404, NOT_FOUND, {}
            return 200, FILE_DELETED, {}
        return 400, {"HttpCode": 400, "Message": "Bad request."}, {}

    def _listing(self, zone: Zone, directory: str) -> list[dict]:
        base = directory + "/" if directory else ""
        entries = []
        for name in sorted({d[len(base) :] for d in zone.dirs if _child(base, d)}, reverse=True):
            entries.append(_entry(zone, directory, name, None))
        for path in sorted((p for p in zone.files if _child(base, p)), reverse=True):
            entries.append(_entry(zone, directory, path[len(base) :], zone.files[path]))
        return entries

    def core(self, method: str, path: str, headers, body: bytes):
        """Answer one Core API request (only the purge route exists here)."""
        if headers.get("AccessKey") != self.api_key:
            # Core 401 bodies may not be JSON [3p]; this text is an assumption.
            return 401, {"Message": "Authorization has been denied for this request."}, {}
        parts = path.strip("/").split("/")
        if (
            method != "POST"
            or len(parts) != 3
            or parts[0] != "pullzone"
            or parts[2] != "purgeCache"
        ):
            return 404, {"Message": "No HTTP resource was found."}, {}
        if not parts[1].isdigit() or int(parts[1]) not in self.pull_zones:
            return 404, PULL_ZONE_NOT_FOUND, {}
        try:
            tag = (json.loads(body) if body else {}).get("CacheTag")
        except (ValueError, AttributeError):
            return 400, {"Message": "The request is invalid."}, {}
        self.purges.append((int(parts[1]), tag))
        return 204, None, {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's pool expects
    # Buffer each answer and flush it whole: headers and body in separate small writes
    # meet the client's delayed ACK and cost ~40 ms per request.
    wbufsize = 1 << 16

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self):
        self._handle()

    do_PUT = do_DELETE = do_POST = do_GET

    def _handle(self) -> None:
        double: BunnyDouble = self.server.double
        with double._lock:
            double._in_flight += 1
            double.max_in_flight = max(double.max_in_flight, double._in_flight)
        try:
            self._answer(double)
        finally:
            with double._lock:
                double._in_flight -= 1

    def _answer(self, double: BunnyDouble) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        raw = urlsplit(self.path).path
        headers = {k: v for k, v in self.headers.items() if k.lower() != "accesskey"}
        with double._lock:
            record = Recorded(
                next(double._events), self.command, unquote(raw), raw, headers, len(body)
            )
            double._log.append(record)
        fault = double._take_fault(self.command, record.path)
        if fault and fault.kind == "status":
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            return self._respond(
                record, fault.status, {"HttpCode": fault.status, "Message": "Error"}, extra
            )
        if fault and not fault.after_apply:
            return self._abort(fault)
        with double._lock:
            answer = getattr(double, self.server.role)(
                self.command, unquote(raw), self.headers, body
            )
            record.applied = next(double._events)
        if fault:
            return self._abort(fault)
        self._respond(record, *answer)

    def _abort(self, fault: Fault) -> None:
        if fault.kind == "stall":
            self.server.double._release.wait(fault.seconds)
        self.close_connection = True  # no response at all: the client sees a drop

    def _respond(self, record: Recorded, status: int, payload, extra: dict) -> None:
        if isinstance(payload, bytes):
            data, kind = payload, "application/octet-stream"
        else:
            data = b"" if payload is None else json.dumps(payload).encode()
            kind = "application/json"
        self.send_response(status)
        if isinstance(payload, list) and "gzip" in self.headers.get("Accept-Encoding", ""):
            data = gzip.compress(data)  # bunny gzips listings for clients that accept it
            self.send_header("Content-Encoding", "gzip")
        if payload is not None:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        record.status = status  # before the client can see the answer and assert on it
        self.wfile.write(data)


def _child(base: str, path: str) -> bool:
    return path.startswith(base) and path != base.rstrip("/") and "/" not in path[len(base) :]


def _entry(zone: Zone, directory: str, name: str, stored: StoredFile | None) -> dict:
    stamp = stored.stamp if stored else _stamp()
    return {
        "Guid": stored.guid if stored else str(uuid.uuid5(uuid.NAMESPACE_URL, directory + name)),
        "StorageZoneName": zone.name,
        "Path": f"/{zone.name}/{directory}/" if directory else f"/{zone.name}/",
        "ObjectName": name,
        "Length": len(stored.data) if stored else 0,
        "LastChanged": stamp,
        "ServerId": 42 if stored else 0,
        "ArrayNumber": 1 if stored else 0,
        "IsDirectory": stored is None,
        "UserId": USER_ID,
        "ContentType": "",
        "DateCreated": stamp,
        "StorageZoneId": zone.id,
        "Checksum": stored.checksum if stored else None,
        "ReplicatedZones": "" if stored else None,
    }


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
