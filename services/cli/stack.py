"""The local stack: Caddy, the services, Prometheus, under supervisord.

Everything is generated under ``$ECSTATIC_HOME/run`` from the config, so two stacks with
different homes and ports can run side by side (the end-to-end tests rely on that).

The intake's process has two supervisord programs (slots) that take turns: ``restart``
starts the idle slot beside the running one (its ports are SO_REUSEPORT), waits until it
holds every port and answers, then stops the old one, which drains its senders to the
new one. So a restart under load loses no line. Only a running slot counts for state
and health.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from services import targets
from services.cli import ports
from services.core.config import Config
from services.core.private_files import OWNER_ONLY_UMASK
from services.platform import prometheus

__all__ = ["Part", "parts", "Stack", "StackError"]

REPO_ROOT = Path(__file__).resolve().parents[2]


# Which slot's state a part shows, most telling first.
_LIVELIEST = ("RUNNING", "STARTING", "BACKOFF", "STOPPING", "FATAL", "EXITED")


class StackError(RuntimeError):
    """The stack could not be brought to the asked state."""


@dataclass(frozen=True)
class Part:
    """One supervised process of the local stack and how to tell it is healthy."""

    name: str
    command: list[str]
    health_url: str
    metrics_url: str | None
    ports: tuple[int, ...]  # every port it binds: each must be free, then held by it
    stop_seconds: int = 40
    slots: tuple[str, ...] = ()  # programs taking turns across restarts; () = just ``name``

    @property
    def programs(self) -> tuple[str, ...]:
        """Its supervisord programs; the first is the one started by default."""
        return self.slots or (self.name,)


def _caddyfile() -> Path:
    return Path(os.environ.get("ECSTATIC_CADDYFILE") or REPO_ROOT / "Caddyfile")


def _local(config: Config, listener: str, path: str = "") -> str:
    return f"http://127.0.0.1:{config.port(listener)}{path}"


def parts(config: Config) -> list[Part]:
    """The processes of the embedded default, in start order, from ``services.targets``."""
    platform = targets.PLATFORM

    def platform_part(name: str, command: list[str]) -> Part:
        p = platform[name]
        return Part(
            name,
            command,
            _local(config, *p.health),
            _local(config, *p.metrics) if p.metrics else None,
            tuple(config.port(lis.name) for lis in p.listeners),
        )

    rooms = [
        Part(
            process.name,
            [sys.executable, "-m", "services.cli", "serve", process.spec],
            _local(config, process.http.name, "/healthz"),
            _local(config, process.http.name, "/metrics"),
            tuple(config.port(lis.name) for lis in process.listeners),
            # A process with the intake binds its ports SO_REUSEPORT: it can hand over.
            slots=(process.name, f"{process.name}-b") if "intake" in process.rooms else (),
        )
        # The embedded engine: the ClickHouse owners share one process (see processes()).
        for process in targets.processes(config.embedded_clickhouse)
    ]
    caddy = platform_part(
        "caddy", [_which("caddy"), "run", "--config", str(_caddyfile()), "--adapter", "caddyfile"]
    )
    prometheus = platform_part(
        "prometheus",
        [
            _which("prometheus"),
            f"--config.file={config.run_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={config.state_dir('prometheus')}",
            f"--web.listen-address=127.0.0.1:{config.port('prometheus')}",
            "--web.enable-lifecycle",
        ],
    )
    alertmanager = platform_part(
        "alertmanager",
        [
            _which("prometheus-alertmanager"),
            f"--config.file={config.run_dir / 'alertmanager.yml'}",
            f"--storage.path={config.state_dir('alertmanager')}",
            f"--web.listen-address=127.0.0.1:{config.port('alertmanager')}",
            "--cluster.listen-address=",  # one instance: no gossip port on 0.0.0.0:9094
        ],
    )
    return [caddy, *rooms, alertmanager, prometheus]


def _which(program: str) -> str:
    found = shutil.which(program)
    if not found:
        raise StackError(f"{program} is not installed; run ./bootstrap.sh up to install everything")
    return found


def prometheus_config(config: Config) -> str:
    """Prometheus scrape config covering every part of the stack."""

    def address(_job: str, listener: targets.Listener) -> str:
        return f"127.0.0.1:{config.port(listener.name)}"

    jobs = prometheus.jobs(targets.processes(config.embedded_clickhouse), address)
    alertmanager = address("alertmanager", targets.PLATFORM["alertmanager"].listeners[0])
    return prometheus.scrape_config(jobs, alertmanagers=[alertmanager])


def supervisord_config(config: Config) -> str:
    """supervisord config running every part with its log under ``$ECSTATIC_HOME/logs``."""
    run, logs = config.run_dir, config.log_dir
    # Caddy keeps its autosave and certificate storage under XDG dirs: keep them in home too.
    environ = {
        **config.environ(),
        "XDG_DATA_HOME": str(config.state_dir("caddy") / "data"),
        "XDG_CONFIG_HOME": str(config.state_dir("caddy") / "config"),
    }
    env = ",".join(f'{k}="{v}"' for k, v in sorted(environ.items()))
    sections = [
        "; Generated by `ecstatic up`; edits are overwritten.\n"
        f"[unix_http_server]\nfile={run / 'supervisor.sock'}\nchmod=0700\n\n"
        f"[supervisord]\nlogfile={logs / 'supervisord.log'}\npidfile={run / 'supervisord.pid'}\n"
        # supervisord resets its umask when it daemonizes (022 unless told): every part
        # it starts, Caddy and its access log included, inherits this one.
        f"directory={config.home}\numask={OWNER_ONLY_UMASK:03o}\nenvironment={env}\n\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
        f"[supervisorctl]\nserverurl=unix://{run / 'supervisor.sock'}\n"
    ]
    for part in parts(config):
        command = " ".join(_quote(arg) for arg in part.command)
        for program in part.programs:
            autostart = "true" if program == part.programs[0] else "false"
            sections.append(
                f"\n[program:{program}]\ncommand={command}\ndirectory={config.home}\n"
                f"autostart={autostart}\nautorestart=true\nstartsecs=1\nstartretries=3\n"
                f"stopsignal=TERM\nstopwaitsecs={part.stop_seconds}\nstopasgroup=true\n"
                f"killasgroup=true\nredirect_stderr=true\n"
                f"stdout_logfile={logs / (program + '.log')}\n"
                f"stdout_logfile_maxbytes=20MB\nstdout_logfile_backups=3\n"
            )
    return "".join(sections)


def _quote(arg: str) -> str:
    if any(c in arg for c in " \"'%;"):
        return '"' + arg.replace("%", "%%").replace('"', '\\"') + '"'
    return arg


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers 200."""
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


class Stack:
    """Start, stop and inspect the supervised local stack of one ``ECSTATIC_HOME``."""

    def __init__(self, config: Config):
        self.config = config
        self.conf_path = config.run_dir / "supervisord.conf"

    # -- supervisord plumbing --
    def _pid(self) -> int | None:
        try:
            pid = int((self.config.run_dir / "supervisord.pid").read_text().strip())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def running(self) -> bool:
        """True while this home's supervisord is alive."""
        return self._pid() is not None

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``supervisorctl`` against this home's supervisord."""
        return subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf_path), *args],
            capture_output=True,
            text=True,
            check=check,
        )

    def write_configs(self) -> None:
        """Create the state directories and (re)write the generated configs."""
        for directory in (
            self.config.run_dir,
            self.config.log_dir,
            self.config.cdn_root / "live",
            self.config.cdn_root / "releases",
            self.config.state_dir("prometheus"),
        ):
            directory.mkdir(parents=True, exist_ok=True)
        (self.config.run_dir / "prometheus.yml").write_text(prometheus_config(self.config))
        (self.config.run_dir / "alertmanager.yml").write_text(prometheus.ALERTMANAGER_YML)
        # It carries the environment, credentials included: owner-only.
        self.conf_path.touch(mode=0o600)
        self.conf_path.chmod(0o600)
        self.conf_path.write_text(supervisord_config(self.config))

    def up(self, timeout: float = 120.0) -> None:
        """Start every part (or whatever is stopped) and wait until all are healthy.

        Raises:
            StackError: a port a part needs is taken by another program (naming the port
                and its holder), or a part does not become healthy in time.
        """
        self.write_configs()
        running = self.running()
        states = self.states() if running else {}
        # A part already RUNNING holds its own ports; every other part needs them free.
        starting = [p for p in parts(self.config) if states.get(p.name) != "RUNNING"]
        problems = ports.taken((port for part in starting for port in part.ports), ours=self._pid())
        if problems:
            raise StackError(
                "cannot start: " + "; ".join(problems) + ". Stop that program, or choose other "
                "ports with the ECSTATIC_*_PORT variables (see the README)."
            )
        if running:
            self.ctl("reread", check=False)
            self.ctl("update", check=False)
            # One program per part: "start all" would start both slots of the intake.
            if starting:
                self.ctl("start", *(self.program(p.name) for p in starting), check=False)
        else:
            subprocess.run(
                [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf_path)],
                check=True,
                env={**os.environ, **self.config.environ()},
            )
        self.wait_healthy(timeout)

    def health(self) -> dict[str, bool]:
        """Each part's health: RUNNING under this stack's supervisord, every one of its
        ports held by that very process (or its children), and its health URL answering.
        (Mid-restart both slots of a part run; the ports are then held by the two.)"""
        status = self._status()
        return {
            part.name: all(ports.owned_by(port, *status[part.name][1]) for port in part.ports)
            and healthy(part.health_url)
            for part in parts(self.config)
        }

    def program(self, name: str) -> str:
        """The supervisord program behind part ``name``: its running slot, else the first
        (a name that is no part is returned as it is)."""
        part = self._part(name)
        if part is None:
            return name
        programs = self._program_status()
        running = [p for p in part.programs if programs.get(p, ("", None))[0] == "RUNNING"]
        return running[-1] if running else part.programs[0]

    def control(self, action: str, names: list[str]) -> subprocess.CompletedProcess:
        """``start``/``stop`` parts by name: a part with slots means its running slot."""
        programs = []
        for name in names:
            part = self._part(name)
            if action == "stop" and part is not None and part.slots:
                status = self._program_status()
                up = [p for p in part.programs if status.get(p, ("", None))[0] != "STOPPED"]
                programs += up or [part.programs[0]]
            else:
                programs.append(self.program(name))
        return self.ctl(action, *programs, check=False)

    def restart(self, name: str, timeout: float = 120.0) -> str:
        """Restart part ``name``; one with slots hands over (see the module docstring).

        Returns the program now running it.

        Raises:
            StackError: the part is unknown, or the new process did not take its ports
                or become healthy in time (the old one then keeps running).
        """
        part = self._part(name)
        if part is None:
            raise StackError(f"no part named {name!r}")
        if not part.slots:
            self.ctl("restart", name, check=False)
            self.wait_healthy(timeout)
            return name
        status = self._program_status()
        running = [p for p in part.programs if status.get(p, ("", None))[0] == "RUNNING"]
        if not running:
            self.ctl("start", part.programs[0], check=False)
            self.wait_healthy(timeout)
            return part.programs[0]
        old = running[0]
        new = running[1] if len(running) > 1 else next(p for p in part.programs if p != old)
        self._start_beside(part, new, timeout)
        self.ctl("stop", old, check=False)  # SIGTERM: it drains its senders to ``new``
        self.wait_healthy(timeout)
        return new

    def _start_beside(self, part: Part, program: str, timeout: float) -> None:
        """Start ``program`` and wait until it holds every port of ``part`` and answers."""
        self.ctl("start", program, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self._program_status().get(program, ("", None))[1]
            mine = ports.family(pid)
            if mine and all(ports.holders(port) & mine for port in part.ports):
                if healthy(part.health_url):
                    return
            time.sleep(0.2)
        log = self.log_tail(program)
        self.ctl("stop", program, check=False)
        raise StackError(
            f"{program} did not take the ports of {part.name} within {timeout:.0f}s; the "
            f"running one keeps serving. Last lines of {self.log_path(program)}:\n{log}"
        )

    def _part(self, name: str) -> Part | None:
        return next((p for p in parts(self.config) if p.name == name), None)

    def wait_healthy(self, timeout: float) -> None:
        """Wait until every part is healthy; fail naming the first that is not."""
        deadline = time.monotonic() + timeout
        pending = parts(self.config)
        while pending and time.monotonic() < deadline:
            health = self.health()
            pending = [p for p in pending if not health[p.name]]
            if pending:
                # supervisord gives up on a part that keeps crashing: no use waiting on.
                states = self.states()
                for part in pending:
                    if states.get(part.name) == "FATAL":
                        raise StackError(
                            f"{part.name} keeps exiting ({states[part.name]}); last lines "
                            f"of {self.log_path(part.name)}:\n{self.log_tail(part.name)}"
                        )
                time.sleep(0.5)
        if pending:
            part = pending[0]
            raise StackError(
                f"{part.name} is not healthy at {part.health_url} after {timeout:.0f}s; "
                f"last lines of {self.log_path(part.name)}:\n{self.log_tail(part.name)}"
            )
        # Healthy is not enough: wait until Prometheus has scraped every part once.
        while time.monotonic() < deadline:
            targets = self.prometheus_targets()
            if targets and all(t["health"] == "up" for t in targets):
                return
            time.sleep(0.5)
        down = [t for t in self.prometheus_targets() if t["health"] != "up"]
        raise StackError(f"prometheus cannot scrape every part after {timeout:.0f}s: {down}")

    def log_path(self, name: str) -> Path:
        """Where a part's (its running slot's) or a program's output goes."""
        program = self.program(name) if self._part(name) is not None and self.running() else name
        return self.config.log_dir / f"{program}.log"

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The last lines of a part's log."""
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log yet)"

    def down(self, timeout: float = 90.0) -> bool:
        """Stop every part and supervisord; True if it was running."""
        pid = self._pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)  # supervisord stops its children, then itself
        deadline = time.monotonic() + timeout
        while self._pid() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._pid() is not None:
            raise StackError(f"supervisord (pid {pid}) did not stop within {timeout:.0f}s")
        return True

    def _program_status(self) -> dict[str, tuple[str, int | None]]:
        """supervisord's (state, pid) of each program; pid only while RUNNING."""
        if not self.running():
            return {}
        found: dict[str, tuple[str, int | None]] = {}
        for line in self.ctl("status", check=False).stdout.splitlines():
            # "api   RUNNING   pid 123, uptime 0:00:05"
            fields = line.replace(",", " ").split()
            if len(fields) >= 2:
                pid = int(fields[3]) if fields[1] == "RUNNING" and len(fields) > 3 else None
                found[fields[0]] = (fields[1], pid)
        return found

    def _status(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Each part's state and the pids of its RUNNING programs.

        A part with slots is in the state of its liveliest slot: RUNNING when one runs,
        STARTING or FATAL when one is, else its first slot's (an idle slot's STOPPED
        says nothing about the part).
        """
        if not self.running():
            return {p.name: ("DOWN", ()) for p in parts(self.config)}
        programs = self._program_status()
        found = {}
        for part in parts(self.config):
            seen = [programs.get(p, ("UNKNOWN", None)) for p in part.programs]
            states = [state for state, _ in seen]
            state = next((s for s in _LIVELIEST if s in states), states[0])
            found[part.name] = (state, tuple(pid for _, pid in seen if pid))
        return found

    def states(self) -> dict[str, str]:
        """supervisord's state of each part (RUNNING, STOPPED, ...)."""
        return {name: state for name, (state, _) in self._status().items()}

    def pids(self) -> dict[str, int]:
        """The pid of each RUNNING part (mid-restart, its later slot's)."""
        return {name: pids[-1] for name, (_, pids) in self._status().items() if pids}

    def prometheus_targets(self) -> list[dict]:
        """Prometheus's view of its scrape targets, or [] when it is down."""
        url = f"http://127.0.0.1:{self.config.port('prometheus')}/api/v1/targets"
        try:
            data = requests.get(url, timeout=3).json()["data"]["activeTargets"]
        except (requests.RequestException, ValueError, KeyError):
            return []
        return [
            {
                "job": t["labels"].get("job"),
                "url": t.get("scrapeUrl"),
                "health": t.get("health"),
                "last_error": t.get("lastError", ""),
            }
            for t in data
        ]
