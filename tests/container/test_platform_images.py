"""The Caddy and Prometheus images built from Debian's packages start read-only as non-root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.container.podman import container, free_ports, host_pids, ids, podman, stop, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

CADDYFILE = """\
{{
	admin 127.0.0.1:{admin}
	auto_https off
}}
http://127.0.0.1:{http} {{
	bind 127.0.0.1
	respond /healthz "ok" 200
}}
"""

PROMETHEUS_YML = "global:\n  scrape_interval: 15s\nscrape_configs: []\n"


def _image_user(ref: str) -> tuple[int, int]:
    """The image's numeric USER (uid:gid), which must not be root."""
    user = podman("image", "inspect", "--format", "{{.Config.User}}", ref).stdout.strip()
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0, user
    return int(uid), int(gid)


def _state_dir(path: Path, owner: tuple[int, int]) -> Path:
    path.mkdir(parents=True)
    os.chown(path, *owner)
    path.chmod(0o700)
    return path


def _read_only_args(mounts: dict[Path, str]) -> list[str]:
    args = ["--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp", "--network", "host"]
    for source, target in mounts.items():
        args += ["--volume", f"{source}:{target}"]
    return args


def _check_running(name: str, url: str, owner: tuple[int, int]) -> None:
    assert wait_http(url, name, timeout=60) == 200, url
    pids = host_pids(name)
    assert pids and all(ids(pid) == owner for pid in pids)
    code, _, log = stop(name, grace=30)
    assert code == 0, log[-3000:]


def test_caddy_starts_read_only_as_non_root(images, tmp_path):
    owner = _image_user(images["caddy"])
    http, admin = free_ports(2)
    config = tmp_path / "Caddyfile"
    config.write_text(CADDYFILE.format(http=http, admin=admin))
    config.chmod(0o644)
    mounts = {
        config: "/etc/caddy/Caddyfile:ro",
        _state_dir(tmp_path / "data", owner): "/data",  # certificates
        _state_dir(tmp_path / "config", owner): "/config",  # autosaved config
    }
    command = ["run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
    name = f"ecstatic-test-caddy-{os.getpid()}"
    with container(name, images["caddy"], _read_only_args(mounts), command):
        _check_running(name, f"http://127.0.0.1:{http}/healthz", owner)


def test_prometheus_starts_read_only_as_non_root(images, tmp_path):
    owner = _image_user(images["prometheus"])
    (port,) = free_ports(1)
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_YML)
    config.chmod(0o644)
    mounts = {
        config: "/etc/prometheus/prometheus.yml:ro",
        _state_dir(tmp_path / "tsdb", owner): "/prometheus",
    }
    command = [
        "--config.file=/etc/prometheus/prometheus.yml",
        "--storage.tsdb.path=/prometheus",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    name = f"ecstatic-test-prometheus-{os.getpid()}"
    with container(name, images["prometheus"], _read_only_args(mounts), command):
        _check_running(name, f"http://127.0.0.1:{port}/-/ready", owner)
