import json
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry

from services.core.config import Config
from services.core.metrics import IntakeMetrics
from services.intake.service import IntakeService

pytestmark = pytest.mark.integration

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)


class HostmapApi:
    """A stand-in api answering GET /internal/hostmap on 127.0.0.1."""

    def __init__(self, hosts):
        self.hosts = hosts
        self.down = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"hosts": api.hosts}).encode()
                self.send_response(
                    503 if api.down else 200 if self.path == "/internal/hostmap" else 404
                )
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def caddy_line(host, uri, ip="203.0.113.7", ua=CHROME, status=200, ts=None):
    return (
        json.dumps(
            {
                "level": "info",
                "ts": ts or time.time(),
                "logger": "http.log.access.log0",
                "msg": "handled request",
                "request": {
                    "remote_ip": ip,
                    "remote_port": "41714",
                    "proto": "HTTP/1.1",
                    "method": "GET",
                    "host": host,
                    "uri": uri,
                    "headers": {"User-Agent": [ua], "Referer": ["https://www.google.com/"]},
                },
                "duration": 0.001,
                "size": 3,
                "status": status,
            }
        )
        + "\n"
    )


def bunny_record(host, path, request_id, ip="198.51.100.0"):
    return json.dumps(
        {
            "Host": host,
            "PathAndQuery": path,
            "Status": 200,
            "BytesSent": 10,
            "Timestamp": int(time.time() * 1000),
            "RemoteIp": ip,
            "UserAgent": CHROME,
            "RequestId": request_id,
            "Country": "DE",
            "Referer": "",
        }
    ).encode()


@pytest.fixture
def site():
    name = "s" + secrets.token_hex(4)
    site_id = secrets.token_hex(8)
    api = HostmapApi({f"{name}.localhost": site_id, f"{name}.b-cdn.net": site_id})
    yield name, site_id, api
    api.close()


def make_service(tmp_path, api, storage, flush_seconds="0.1"):
    config = Config.from_env(
        {
            "ECSTATIC_HOME": str(tmp_path),
            "ECSTATIC_API_URL": api.url,
            "ECSTATIC_INTAKE_FLUSH_SECONDS": flush_seconds,
            "ECSTATIC_INTAKE_BATCH_ROWS": "100000",
        }
    )
    registry = CollectorRegistry()
    service = IntakeService(
        config, storage, IntakeMetrics(registry), syslog_port=0, poll_seconds=0.05
    )
    return config, service, registry


def send(port, *payloads):
    with socket.create_connection(("127.0.0.1", port)) as conn:
        for payload in payloads:
            conn.sendall(payload)


def rows_of(storage, site_id):
    return storage.rows(
        "SELECT * FROM requests WHERE site_id = {s:String} ORDER BY ts, path", {"s": site_id}
    )


def wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_file_and_syslog_to_clickhouse(tmp_path, site, chdb_storage):
    name, site_id, api = site
    config, service, registry = make_service(tmp_path, api, chdb_storage)
    sample = lambda name, **labels: registry.get_sample_value(name, labels) or 0  # noqa: E731
    service.start()
    try:
        assert service.healthy()
        config.access_log.parent.mkdir(parents=True, exist_ok=True)
        with open(config.access_log, "a") as log:
            log.write(caddy_line(f"{name}.localhost:8080", "/?utm=1"))
            log.write(caddy_line(f"{name}.localhost:8080", "/style.css"))
            log.write(caddy_line("stranger.example", "/"))
            log.write("not json at all\n")
        syslog = b'<165>1 2026-01-01T00:00:00Z edge bunny - - [meta a="1 ] 2"] \xef\xbb\xbf'
        framed = syslog + bunny_record(f"{name}.b-cdn.net", "/from-bunny/", "rid-2")
        pipe = (
            f"HIT|200|{int(time.time() * 1000)}|5|1|198.51.100.0|-|https://{name}.b-cdn.net/a.pdf|WA|"
            f"curl/8.0|rid-3|FR"
        ).encode()
        send(
            service.syslog_port,
            bunny_record(f"{name}.b-cdn.net", "/b", "rid-1") + b"\n",
            b"garbage frame\n",
            str(len(framed)).encode() + b" " + framed,
            bunny_record(f"{name}.b-cdn.net", "/b", "rid-1") + b"\n",  # duplicate
            pipe + b"\n",
        )
        wait_for(lambda: len(rows_of(chdb_storage, site_id)) == 5)
        # The stranger's line waits for a host map fetched after it arrived, and the
        # file's later lines wait behind it: five rows can land before it is judged.
        wait_for(lambda: sample("ecstatic_intake_lines_received_total", source="caddy") == 4)
    finally:
        service.stop(10)
    rows = rows_of(chdb_storage, site_id)
    by_path = {row["path"]: row for row in rows}
    assert set(by_path) == {"/", "/style.css", "/b", "/from-bunny/", "/a.pdf"}
    assert by_path["/"]["is_page"] and by_path["/"]["log_source"] == "caddy"
    assert (
        by_path["/"]["host"] == f"{name}.localhost"
        and by_path["/"]["referrer_host"] == "www.google.com"
    )
    assert (
        not by_path["/style.css"]["is_page"] and by_path["/style.css"]["file_type"] == "stylesheet"
    )
    assert by_path["/"]["visitor_id"] == by_path["/style.css"]["visitor_id"]
    assert (
        by_path["/from-bunny/"]["log_source"] == "bunny"
        and by_path["/from-bunny/"]["country"] == "DE"
    )
    assert by_path["/a.pdf"]["is_bot"] and by_path["/a.pdf"]["bot_reason"] == "crawler-list"
    assert by_path["/b"]["browser"] == "Chrome" and not by_path["/b"]["is_bot"]
    assert all("203.0.113.7" not in repr(row) and "198.51.100.0" not in repr(row) for row in rows)
    assert sample("ecstatic_intake_lines_received_total", source="caddy") == 4
    assert sample("ecstatic_intake_lines_invalid_total", source="caddy", reason="unknown_host") == 1
    assert sample("ecstatic_intake_lines_invalid_total", source="caddy", reason="not_json") == 1
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="duplicate") == 1
    assert sample("ecstatic_intake_rows_inserted_total") == 5
    assert not service.healthy()  # stopped


def test_stop_flushes_buffered_rows_and_restart_adds_no_duplicates(tmp_path, site, chdb_storage):
    name, site_id, api = site
    config, service, registry = make_service(tmp_path, api, chdb_storage, flush_seconds="300")
    config.access_log.parent.mkdir(parents=True, exist_ok=True)
    with open(config.access_log, "a") as log:
        for i in range(3):
            log.write(caddy_line(f"{name}.localhost", f"/page{i}"))
    service.start()
    try:
        send(
            service.syslog_port,
            b"".join(
                bunny_record(f"{name}.b-cdn.net", f"/cdn{i}", f"q{i}") + b"\n" for i in range(4)
            ),
        )
        wait_for(lambda: registry.get_sample_value("ecstatic_intake_buffered_rows") == 7)
        assert rows_of(chdb_storage, site_id) == []  # nothing flushed yet (300 s interval)
    finally:
        service.stop(10)
    assert len(rows_of(chdb_storage, site_id)) == 7
    offsets = json.loads((config.intake_state_dir / "offsets.json").read_text())
    assert offsets["caddy"]["offset"] == config.access_log.stat().st_size

    again, registry_again = make_service(tmp_path, api, chdb_storage)[1:]
    again.start()
    try:
        with open(config.access_log, "a") as log:
            log.write(caddy_line(f"{name}.localhost", "/after-restart"))
        wait_for(lambda: len(rows_of(chdb_storage, site_id)) == 8)
        time.sleep(0.5)
    finally:
        again.stop(10)
    paths = sorted(row["path"] for row in rows_of(chdb_storage, site_id))
    assert paths == sorted(
        [f"/page{i}" for i in range(3)] + [f"/cdn{i}" for i in range(4)] + ["/after-restart"]
    )


def test_api_down_holds_lines_until_it_answers(tmp_path, site, chdb_storage):
    name, site_id, api = site
    api.down = True
    config, service, registry = make_service(tmp_path, api, chdb_storage)
    config.access_log.parent.mkdir(parents=True, exist_ok=True)
    config.access_log.write_text(caddy_line(f"{name}.localhost", "/while-api-down"))
    service.start()
    try:
        time.sleep(1.0)
        assert rows_of(chdb_storage, site_id) == []
        invalid = registry.get_sample_value(
            "ecstatic_intake_lines_invalid_total", {"source": "caddy", "reason": "unknown_host"}
        )
        assert not invalid  # held back, not dropped
        api.down = False
        wait_for(lambda: len(rows_of(chdb_storage, site_id)) == 1)
    finally:
        service.stop(10)
    assert rows_of(chdb_storage, site_id)[0]["path"] == "/while-api-down"
