import json
import socket
import time

import pytest
from prometheus_client import CollectorRegistry

from services.core.config import Config
from services.core.metrics import IntakeMetrics
from services.core.schema import INGEST_TABLE
from services.intake.service import IntakeService


class FakeStorage:
    """Enough of ``Storage`` for the intake: salts, settings and raw request inserts."""

    def __init__(self):
        self.salts = []
        self.requests = []
        self.tokens = []
        self.down = False

    def command(self, sql, parameters=None):
        return None

    def rows(self, sql, parameters=None):
        if "visitor_salts" in sql and parameters and "day" in parameters:
            return [{"salt": salt} for day, salt in self.salts if day == parameters["day"]][:1]
        return []

    def insert(self, table, rows, columns):
        assert table == "visitor_salts"
        self.salts.extend(rows)

    def insert_raw(self, table, columns, data, fmt, settings):
        assert (table, fmt) == (INGEST_TABLE, "JSONCompactEachRow")
        if self.down:
            raise ConnectionError("clickhouse down")
        token = settings["insert_deduplication_token"]
        if token in self.tokens:
            return  # what ClickHouse's deduplication does with a replayed batch
        self.tokens.append(token)
        for line in data.splitlines():
            self.requests.append(dict(zip(columns, json.loads(line), strict=True)))


class StaticHosts:
    HOSTS = {"a.localhost": "s1", "a.b-cdn.net": "s1"}

    def known(self):
        return self.HOSTS

    def stale(self):
        return False

    def site_id(self, host, since=None):
        return self.HOSTS.get(host)


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
        config.access_log.open("a").write(caddy_line("/stored-later"))
        wait_for(lambda: sample("ecstatic_intake_buffered_rows") == 1)
    finally:
        started = time.monotonic()
        service.stop(2)
        assert time.monotonic() - started < 2.5
    assert [row["raw_path"] for row in storage.requests] == ["/"]
    assert not service.healthy()
    # The line is in the spool, so the file's offset moved past it; the next life stores it.
    offsets = json.loads((config.intake_state_dir / "offsets.json").read_text())
    assert offsets["caddy"]["offset"] == config.access_log.stat().st_size
    storage.down = False
    _, again = make(tmp_path, storage, IntakeMetrics(CollectorRegistry()))
    again.start()
    try:
        wait_for(lambda: len(storage.requests) == 2)
    finally:
        again.stop(5)
    assert [row["raw_path"] for row in storage.requests] == ["/", "/stored-later"]


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
            "Timestamp": int(time.time() * 1000),
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
    assert [(row["raw_path"], row["log_source"]) for row in storage.requests] == [("/cdn", "bunny")]
    assert b"198.51.100" not in b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


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
