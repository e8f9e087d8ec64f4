"""The Ecstatic image: every process starts in it read-only as the service user, stops cleanly.

Each process of the layout (storage rooms grouped on the embedded engine, as without a
ClickHouse server) runs with only the volumes for the state it writes, on free loopback
ports of the host network.
"""

from __future__ import annotations

import json
import os

import pytest

from services.targets import STATE, Process, processes
from tests.container.podman import (
    container,
    host_pids,
    http_status,
    ids,
    open_files,
    podman,
    stop,
    wait_http,
)
from tests.container.rooms import (
    HOME,
    SERVICE_UID,
    free_layout_ports,
    run_args,
    server_less,
    volumes,
)

# The first test builds the images (minutes on a fresh machine): see images.py.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

PROCESSES = server_less()


def test_every_room_runs_in_some_tested_process():
    """api and git alone, query and intake together on chDB: nothing left out."""
    tested = {room for p in PROCESSES for room in p.rooms}
    assert tested == {room for p in processes(embedded=False) for room in p.rooms}
    assert [set(p.rooms) for p in PROCESSES] == [{"api"}, {"git"}, {"intake", "query"}]


def test_image_runs_as_the_service_user_by_default(images):
    user = podman("image", "inspect", "--format", "{{.Config.User}}", images["ecstatic"])
    assert user.stdout.strip() == f"{SERVICE_UID}:{SERVICE_UID}"
    out = podman(
        "run", "--rm", "--read-only", "--network", "none", "--entrypoint", "/bin/sh",
        images["ecstatic"], "-c", "id -u; id -g; echo $ECSTATIC_HOME",
    ).stdout.split()
    assert out == [str(SERVICE_UID), str(SERVICE_UID), HOME]


def test_image_has_no_compiler_and_no_test_or_infra_packages(images):
    compilers = podman(
        "run", "--rm", "--read-only", "--network", "none", "--entrypoint", "/bin/sh",
        images["ecstatic"], "-c",
        "for c in gcc cc c++ g++ clang ld as make; do command -v $c; done; true",
    )
    assert compilers.stdout.strip() == ""
    probe = (
        "import importlib.util as u, json, services.server; "
        "print(json.dumps([m for m in ('pytest', 'testinfra', 'hypothesis', 'pulumi', "
        "'pulumi_kubernetes', 'pulumi_hcloud', 'kubernetes_validate', 'jsonschema', 'pip', "
        "'setuptools') if u.find_spec(m)]))"
    )
    found = podman(
        "run", "--rm", "--read-only", "--network", "none", "--entrypoint",
        "/opt/ecstatic/bin/python", images["ecstatic"], "-c", probe,
    )
    assert json.loads(found.stdout) == []


def _messages(log: str) -> list[str]:
    """The ``message`` of each JSON log line (the image logs one JSON object per line)."""
    found = []
    for line in log.splitlines():
        try:
            found.append(json.loads(line)["message"])
        except (ValueError, KeyError, TypeError):
            continue
    return found


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_process_runs_read_only_as_service_user_and_stops_cleanly(
    images, process: Process, tmp_path
):
    ports = free_layout_ports()
    state = volumes(process, tmp_path)
    assert set(state) == set(process.writes)
    name = f"ecstatic-test-{process.name}-{os.getpid()}"
    args = run_args(process, ports, state)
    with container(name, images["ecstatic"], args, ["serve", process.spec]):
        # Every HTTP port of the process answers its /healthz.
        for listener in process.listeners:
            if listener.protocol == "http":
                url = f"http://127.0.0.1:{ports[listener.name]}/healthz"
                assert wait_http(url, name, timeout=180) == 200, url

        pids = host_pids(name)
        assert pids and all(ids(pid) == (SERVICE_UID, SERVICE_UID) for pid in pids)
        # gunicorn's worker heartbeat is an unlinked file in /tmp: why /tmp is a tmpfs.
        held = [path for pid in pids for path in open_files(pid)]
        assert any(path.startswith("/tmp/wgunicorn-") for path in held), held

        for target in ("/probe", f"{HOME}/probe", "/opt/ecstatic/probe"):
            denied = podman("exec", name, "/bin/sh", "-c", f": > {target}", check=False)
            assert denied.returncode != 0 and "Read-only file system" in denied.stderr, target
        for state_name in process.writes:
            volume = f"{HOME}/{STATE[state_name].path}"
            podman("exec", name, "/bin/sh", "-c", f": > {volume}/.probe && rm {volume}/.probe")

        code, took, log = stop(name, grace=30)
    assert code == 0, log[-3000:]
    assert took < 30, f"SIGTERM was not enough ({took:.1f} s)"
    messages = _messages(log)
    for expected in ("Handling signal: term", "stopped", "Shutting down: Master"):
        assert expected in messages, (expected, messages[-10:])
    if "intake" in process.rooms:
        assert "intake stopped" in messages  # flushed its buffer and saved its offsets
    assert http_status(f"http://127.0.0.1:{ports[process.http.name]}/healthz") is None
