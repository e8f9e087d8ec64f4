"""The processes under test, started as a user would: ``ecstatic serve api`` and
``ecstatic serve intake,query`` with a throwaway ``ECSTATIC_HOME`` and free ports.

Everything here goes through public surfaces: the CLI (``admin create-user``), the
api's ``/v1/sites`` and ``/internal/hostmap``, the query room's stats API, every
room's ``/healthz`` and ``/metrics``, and the intake's syslog port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from services.core.config import PORT_DEFAULTS

__all__ = ["Services", "ServiceError", "samples"]

ECSTATIC = Path(sys.executable).parent / "ecstatic"


class ServiceError(RuntimeError):
    """A process did not start, or the api refused a call."""


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, keyed by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class Services:
    """The api and the intake+query process of one benchmark run."""

    def __init__(self, home: Path, settings: dict[str, str] | None = None):
        self.home = home
        names = list(PORT_DEFAULTS)
        self.ports = dict(zip(names, _free_ports(len(names)), strict=True))
        self.env = {
            **os.environ,
            "ECSTATIC_HOME": str(home),
            **{f"ECSTATIC_{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
            **(settings or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.http = requests.Session()

    def _log(self, target: str) -> Path:
        return self.home / f"{target.replace(',', '+')}.log"

    def url(self, port: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    # -- processes ---------------------------------------------------------------------

    def start(self, target: str, health_ports: list[str], timeout: float = 120.0) -> int:
        """Run ``ecstatic serve TARGET`` until every port's ``/healthz`` answers 200."""
        log = open(self._log(target), "ab")  # noqa: SIM115
        process = subprocess.Popen(
            [str(ECSTATIC), "serve", target],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopping it stops its workers
        )
        log.close()
        self.processes[target] = process
        deadline = time.monotonic() + timeout
        for port in health_ports:
            while True:
                if process.poll() is not None:
                    tail = self._log(target).read_text(errors="replace")[-2000:]
                    raise ServiceError(
                        f"ecstatic serve {target} exited {process.returncode}:\n{tail}"
                    )
                try:
                    if self.http.get(self.url(port, "/healthz"), timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise ServiceError(f"ecstatic serve {target}: {port} not healthy")
                time.sleep(0.1)
        return process.pid

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM each process group we started, then SIGKILL what is left."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self.processes.clear()

    # -- users and sites ---------------------------------------------------------------

    def create_user(self, name: str) -> str:
        """A user made with the CLI; returns its API token."""
        result = subprocess.run(
            [str(ECSTATIC), "admin", "create-user", name],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"create-user: {result.stderr.strip()}")
        return result.stdout.strip().splitlines()[-1]

    def create_sites(self, token: str, names: list[str]) -> list[dict]:
        """Sites made through ``POST /v1/sites``; each JSON has ``id`` and ``hostnames``."""
        headers = {"Authorization": f"Bearer {token}"}
        sites = []
        for name in names:
            response = self.http.post(
                self.url("api", "/v1/sites"), json={"name": name}, headers=headers, timeout=10
            )
            if response.status_code != 201:
                raise ServiceError(f"POST /v1/sites {name}: {response.status_code} {response.text}")
            sites.append(response.json())
        return sites

    def hostmap(self) -> dict[str, str]:
        """What the intake will learn: ``GET /internal/hostmap`` on the api."""
        response = self.http.get(self.url("api", "/internal/hostmap"), timeout=10)
        response.raise_for_status()
        return response.json()["hosts"]

    # -- reading back ------------------------------------------------------------------

    def metrics(self, port: str = "intake") -> dict:
        """The samples of one room's ``/metrics``."""
        response = self.http.get(self.url(port, "/metrics"), timeout=10)
        response.raise_for_status()
        return samples(response.text)

    def site_requests(self, token: str, site_ids: list[str], workers: int = 8) -> dict[str, int]:
        """Each site's ``count()`` of rows as the stats API reports it (bots included)."""
        headers = {"Authorization": f"Bearer {token}"}

        def one(site_id: str) -> int:
            response = requests.get(
                self.url("query", f"/v1/sites/{site_id}/stats/timeseries"),
                params={"period": "24h", "bots": "include"},
                headers=headers,
                timeout=30,
            )
            if response.status_code != 200:
                raise ServiceError(f"stats {site_id}: {response.status_code} {response.text}")
            return int(response.json()["totals"]["requests"])

        with ThreadPoolExecutor(workers) as pool:
            return dict(zip(site_ids, pool.map(one, site_ids), strict=True))
