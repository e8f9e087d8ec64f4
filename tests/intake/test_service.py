import json
import socket
import time

import pytest
from prometheus_client import CollectorRegistry

from services.core.config import Config
from services.core.metrics import IntakeMetrics
from services.intake.service import IntakeService


class FakeStorage:
    """Enough of ``Storage`` for the intake: salts and request inserts."""

    def __init__(self):
        self.salts = []
        self.requests = []
        self.down = False

    def rows(self, sql, parameters=None):
        return [{"salt": salt} for day, salt in self.salts if day == parameters["day"]][:1]

    def insert(self, table, rows, columns):
        if table == "visitor_salts":
            self.salts.extend(rows)
            return
        if self.down:
            raise ConnectionError("clickhouse down")
        self.requests.extend(dict(zip(columns, row, strict=True)) for row in rows)


class StaticHosts:
    def site_id(self, host):
        return {"a.localhost": "s1", "a.b-cdn.net": "s1"}.get(host)


def caddy_line(path):
    return (
        json.dumps(
            {
                "ts": time.time(),
                "logger": "http.log.access.log0",
                "status": 200,
                "size": 1,
                "request": {
                    "remote_ip": "192.0.2.1",
                    "method": "GET",
                    "host": "a.localhost",
                    "uri": path,
                },
            }
        )
        + "\n"
    )


def make(tmp_path, storage, metrics, **kwargs):
    config = Config.from_env(
        {"ECSTATIC_HOME": str(tmp_path), "ECSTATIC_INTAKE_FLUSH_SECONDS": "0.05"}
    )
    return config, IntakeService(
        config, storage, metrics, resolver=StaticHosts(), syslog_port=0, poll_seconds=0.02, **kwargs
    )


def wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_unhealthy_when_inserts_keep_failing_and_stop_is_bounded(tmp_path, metrics, sample):
    storage = FakeStorage()
    storage.down = True
    config, service = make(tmp_path, storage, metrics, unhealthy_after=0.5)
    assert not service.healthy()  # not started
    config.access_log.parent.mkdir(parents=True)
    config.access_log.write_text(caddy_line("/"))
    service.start()
    try:
        assert service.healthy()
        wait_for(lambda: sample("ecstatic_intake_insert_failures_total") >= 1)
        wait_for(lambda: not service.healthy())
        storage.down = False
        wait_for(lambda: service.healthy() and storage.requests)
        storage.down = True
        config.access_log.open("a").write(caddy_line("/never-stored"))
        wait_for(lambda: sample("ecstatic_intake_buffered_rows") == 1)
    finally:
        started = time.monotonic()
        service.stop(2)
        assert time.monotonic() - started < 2.5
    assert [row["path"] for row in storage.requests] == ["/"]
    offsets = json.loads((config.intake_state_dir / "offsets.json").read_text())
    first_line = config.access_log.read_bytes().split(b"\n")[0]
    assert offsets["caddy"]["offset"] == len(first_line) + 1  # not past the unstored line
    assert not service.healthy()


def test_syslog_records_survive_storage_outage_across_restart(tmp_path, metrics, registry):
    storage = FakeStorage()
    storage.down = True
    _, service = make(tmp_path, storage, metrics)
    service.start()
    try:
        record = {
            "Host": "a.b-cdn.net",
            "PathAndQuery": "/cdn",
            "Status": 200,
            "Timestamp": 1767225600000,
            "RemoteIp": "198.51.100.0",
            "RequestId": "r1",
        }
        with socket.create_connection(("127.0.0.1", service.syslog_port)) as conn:
            conn.sendall(json.dumps(record).encode() + b"\n")
        wait_for(lambda: registry.get_sample_value("ecstatic_intake_buffered_rows") == 1)
    finally:
        service.stop(1)
    assert storage.requests == []
    storage.down = False
    _, again = make(tmp_path, storage, IntakeMetrics(CollectorRegistry()))
    again.start()
    try:
        wait_for(lambda: storage.requests)
    finally:
        again.stop(5)
    assert [(row["path"], row["log_source"]) for row in storage.requests] == [("/cdn", "bunny")]


def test_start_fails_loudly_when_port_taken(tmp_path, metrics):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = Config.from_env({"ECSTATIC_HOME": str(tmp_path)})
        service = IntakeService(
            config,
            FakeStorage(),
            metrics,
            resolver=StaticHosts(),
            syslog_port=busy.getsockname()[1],
        )
        with pytest.raises(RuntimeError, match="failed to start"):
            service.start()
        assert not service.healthy()
        service.stop(1)
