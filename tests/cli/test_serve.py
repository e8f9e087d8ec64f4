"""`ecstatic serve TARGETS` runs rooms side by side in one process and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.e2e.stackdriver import PORT_NAMES, free_ports

pytestmark = pytest.mark.integration


def _serve(tmp_path, targets: str):
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    env = {
        **os.environ,
        "ECSTATIC_HOME": str(tmp_path / "home"),
        **{f"ECSTATIC_{name}_PORT": str(port) for name, port in ports.items()},
    }
    log = open(tmp_path / "serve.log", "w+")  # noqa: SIM115 - closed by the caller
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", targets], env=env, stdout=log, stderr=log
    )
    return process, ports, log


def _wait_healthy(url: str, process, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "serve exited early"
        try:
            answer = requests.get(url, timeout=2)
            if answer.status_code == 200:
                return answer.json()
        except requests.RequestException:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} not healthy within {timeout}s")


def _stop(process, log) -> list[dict]:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0
    log.seek(0)
    return [json.loads(line) for line in log if line.startswith("{")]


def test_serve_all_mounts_every_room_on_every_port(tmp_path):
    process, ports, log = _serve(tmp_path, "all")
    try:
        for name in ("API", "GIT", "QUERY", "INTAKE"):
            health = _wait_healthy(f"http://127.0.0.1:{ports[name]}/healthz", process)
            # git brings its deploy workers, which report as their own part.
            assert health["rooms"] == {
                "api": True,
                "git": True,
                "deploys": True,
                "query": True,
                "intake": True,
            }
        api = f"http://127.0.0.1:{ports['QUERY']}"
        # one process, every room's routes: the api answers on the query port too
        assert requests.get(f"{api}/v1/sites", timeout=5).status_code == 401
        assert (
            requests.get(f"{api}/v1/sites/0123456789abcdef/stats/timeseries", timeout=5).status_code
            == 401
        )
        metrics = requests.get(f"{api}/metrics", timeout=5).text
        for family in (
            "ecstatic_http_requests_total",
            "ecstatic_intake_lines_received_total",
            "ecstatic_git_deploys_total",
        ):
            assert f"# TYPE {family} counter" in metrics, family
    finally:
        records = _stop(process, log)
        log.close()
    messages = [r["message"] for r in records]
    assert "intake stopped" in messages and "stopped" in messages


def test_serve_one_room_binds_only_its_port(tmp_path):
    process, ports, log = _serve(tmp_path, "intake")
    try:
        health = _wait_healthy(f"http://127.0.0.1:{ports['INTAKE']}/healthz", process)
        assert health["rooms"] == {"intake": True}
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{ports['API']}/healthz", timeout=2)
    finally:
        _stop(process, log)
        log.close()


def test_serve_rejects_unknown_targets(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "serve", "api,nope"],
        env={**os.environ, "ECSTATIC_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown target 'nope'" in result.stderr
