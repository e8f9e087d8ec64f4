"""Configuration: the only module that reads ``os.environ``.

Every knob is an ``ECSTATIC_*`` variable with a validated default. ``Config.from_env``
collects every problem before failing, so a bad deployment shows all its mistakes at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.targets import STATE, listeners

from .deploy_config import DeployConfig
from .deploy_config import read as read_deploy_config
from .intake_config import IntakeConfig, QueryConfig, read_intake, read_query

__all__ = ["Config", "ConfigError", "PORT_DEFAULTS", "default_home"]

# From the layout map. The defaults stay clear of the ports Debian's own caddy (80, 2019)
# and prometheus (9090) services take when their packages are installed.
PORT_DEFAULTS = {name: listener.default for name, listener in listeners().items()}


def default_home(environ: Mapping[str, str], uid: int) -> Path:
    """Where state lives when ``ECSTATIC_HOME`` is unset: never relative to the cwd.

    Root gets ``/var/lib/ecstatic`` (as Dokku and piku keep theirs); anyone else the XDG
    state directory, so ``ecstatic status`` finds the stack from any directory.
    """
    if uid == 0:
        return Path("/var/lib/ecstatic")
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME") or "~") / ".local/state")
    return Path(base) / "ecstatic"


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


class ConfigError(ValueError):
    """One or more configuration values are invalid."""


@dataclass(frozen=True)
class Config:
    """Process-wide configuration, built once from the environment."""

    home: Path
    ports: Mapping[str, int]
    clickhouse_url: str
    api_url: str
    public_url: str
    sites_domain: str
    site_scheme: str
    log_level: str
    threads: int
    max_deploy_bytes: int
    max_deploy_files: int
    max_file_bytes: int
    max_tree_depth: int
    git_max_push_bytes: int
    git_min_rate: int
    git_body_grace_seconds: float
    git_pushes_per_user: int
    auth_cache_seconds: float
    bind_host: str
    access_log_roll_mb: int
    deploy_credential_seconds: int = 900
    deploy: DeployConfig = field(default_factory=DeployConfig)
    intake: IntakeConfig = field(default_factory=IntakeConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    extra: Mapping[str, str] = field(default_factory=dict)

    # -- derived locations: every piece of state lives under ``home`` --
    @property
    def run_dir(self) -> Path:
        """Generated config files, pid files and sockets."""
        return self.home / "run"

    def state_dir(self, name: str) -> Path:
        """The directory of one piece of state named in ``services.targets.STATE``."""
        return self.home / STATE[name].path

    @property
    def log_dir(self) -> Path:
        """Process logs and Caddy's access log."""
        return self.state_dir("access-logs")

    @property
    def access_log(self) -> Path:
        """Caddy's JSON access log, followed by the intake."""
        return self.log_dir / "access.log"

    @property
    def cdn_root(self) -> Path:
        """Root of the local CDN: releases and the live switch per hostname."""
        return self.state_dir("releases")

    @property
    def api_db(self) -> Path:
        """The api's metadata store (SQLite)."""
        return self.state_dir("metadata") / "ecstatic.sqlite3"

    @property
    def git_root(self) -> Path:
        """Bare repositories, one per site."""
        return self.state_dir("repositories")

    @property
    def intake_state_dir(self) -> Path:
        """Offsets and caches the intake keeps across restarts."""
        return self.state_dir("spool")

    @property
    def embedded_clickhouse(self) -> bool:
        """ClickHouse is the embedded engine (chDB): its owners must share one process."""
        return self.clickhouse_url.startswith("chdb://")

    def port(self, name: str) -> int:
        """The port of a named listener (see ``PORT_DEFAULTS``)."""
        return self.ports[name]

    def site_hostname(self, site_name: str) -> str:
        """The hostname a site is served on."""
        return f"{site_name}.{self.sites_domain}"

    def site_url(self, site_name: str) -> str:
        """The URL visitors open for a site."""
        port = self.ports["http"]
        default = {"http": 80, "https": 443}[self.site_scheme]
        suffix = "" if port == default else f":{port}"
        return f"{self.site_scheme}://{self.site_hostname(site_name)}{suffix}/"

    def git_url(self, site_id: str) -> str:
        """The HTTP remote a site's source is pushed to."""
        return f"{self.public_url}/git/{site_id}.git"

    def environ(self) -> dict[str, str]:
        """This config as environment variables, for child processes, Caddy and pods.

        Every field is here, so ``Config.from_env(config.environ()) == config``: the local
        stack and the Kubernetes pods get one contract (tests/core/test_config.py).
        """
        env = {
            "ECSTATIC_HOME": str(self.home),
            "ECSTATIC_CLICKHOUSE_URL": self.clickhouse_url,
            "ECSTATIC_API_URL": self.api_url,
            "ECSTATIC_PUBLIC_URL": self.public_url,
            "ECSTATIC_SITES_DOMAIN": self.sites_domain,
            "ECSTATIC_SITE_SCHEME": self.site_scheme,
            "ECSTATIC_LOG_LEVEL": self.log_level,
            "ECSTATIC_THREADS": str(self.threads),
            "ECSTATIC_MAX_DEPLOY_BYTES": str(self.max_deploy_bytes),
            "ECSTATIC_MAX_DEPLOY_FILES": str(self.max_deploy_files),
            "ECSTATIC_MAX_FILE_BYTES": str(self.max_file_bytes),
            "ECSTATIC_MAX_TREE_DEPTH": str(self.max_tree_depth),
            "ECSTATIC_GIT_MAX_PUSH_BYTES": str(self.git_max_push_bytes),
            "ECSTATIC_GIT_MIN_RATE": str(self.git_min_rate),
            "ECSTATIC_GIT_BODY_GRACE_SECONDS": repr(self.git_body_grace_seconds),
            "ECSTATIC_GIT_PUSHES_PER_USER": str(self.git_pushes_per_user),
            "ECSTATIC_AUTH_CACHE_SECONDS": repr(self.auth_cache_seconds),
            "ECSTATIC_BIND_HOST": self.bind_host,
            "ECSTATIC_ACCESS_LOG_ROLL_MB": str(self.access_log_roll_mb),
            "ECSTATIC_DEPLOY_CREDENTIAL_SECONDS": str(self.deploy_credential_seconds),
        }
        for name, value in self.ports.items():
            env[f"ECSTATIC_{name.upper()}_PORT"] = str(value)
        env.update(self.deploy.environ())
        env.update(self.intake.environ())
        env.update(self.query.environ())
        env.update(self.extra)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build and validate the config from environment variables.

        Raises:
            ConfigError: listing every invalid value.
        """
        env = os.environ if environ is None else environ
        errors: list[str] = []

        def integer(name: str, default: int, low: int, high: int) -> int:
            raw = env.get(name, "")
            if raw == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                errors.append(f"{name}={raw!r} is not an integer")
                return default
            if not low <= value <= high:
                errors.append(f"{name}={value} is outside {low}..{high}")
            return value

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = env.get(name, "")
            if raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                errors.append(f"{name}={raw!r} is not a number")
                return default
            if not low <= value <= high:
                errors.append(f"{name}={value} is outside {low}..{high}")
            return value

        # Resolved once, here, to an absolute path; child processes get it through environ().
        raw_home = env.get("ECSTATIC_HOME") or default_home(env, os.getuid())
        home = Path(raw_home).expanduser().resolve()
        ports = {
            name: integer(f"ECSTATIC_{name.upper()}_PORT", default, 1, 65535)
            for name, default in PORT_DEFAULTS.items()
        }
        if len(set(ports.values())) != len(ports):
            errors.append(f"ports must be distinct: {ports}")

        sites_domain = env.get("ECSTATIC_SITES_DOMAIN") or "localhost"
        if not _HOSTNAME.match(sites_domain):
            errors.append(f"ECSTATIC_SITES_DOMAIN={sites_domain!r} is not a hostname")
        site_scheme = env.get("ECSTATIC_SITE_SCHEME") or "http"
        if site_scheme not in ("http", "https"):
            errors.append(f"ECSTATIC_SITE_SCHEME={site_scheme!r} must be http or https")

        clickhouse_url = (
            env.get("ECSTATIC_CLICKHOUSE_URL") or f"chdb://{home / STATE['clickhouse'].path}"
        )
        if not clickhouse_url.startswith(("chdb://", "http://", "https://")):
            scheme = clickhouse_url.partition("://")[0][:20]  # never echo credentials
            errors.append(f"ECSTATIC_CLICKHOUSE_URL scheme {scheme!r} is not chdb, http or https")

        log_level = (env.get("ECSTATIC_LOG_LEVEL") or "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            errors.append(f"ECSTATIC_LOG_LEVEL={log_level!r} is not a log level")

        # Loopback by default: only Caddy listens beyond it. Containers set 0.0.0.0.
        bind_host = env.get("ECSTATIC_BIND_HOST") or "127.0.0.1"
        config = cls(
            home=home,
            ports=ports,
            clickhouse_url=clickhouse_url,
            api_url=(env.get("ECSTATIC_API_URL") or f"http://127.0.0.1:{ports['api']}").rstrip("/"),
            public_url=(
                env.get("ECSTATIC_PUBLIC_URL") or f"http://localhost:{ports['http']}"
            ).rstrip("/"),
            sites_domain=sites_domain,
            site_scheme=site_scheme,
            log_level=log_level,
            threads=integer("ECSTATIC_THREADS", 8, 1, 256),
            max_deploy_bytes=integer("ECSTATIC_MAX_DEPLOY_BYTES", 512 * 2**20, 1, 2**40),
            max_deploy_files=integer("ECSTATIC_MAX_DEPLOY_FILES", 50_000, 1, 10_000_000),
            # Push limits (README: "Deploys"). dulwich reads at most 1 GiB per body.
            max_file_bytes=integer("ECSTATIC_MAX_FILE_BYTES", 100 * 2**20, 1, 2**34),
            max_tree_depth=integer("ECSTATIC_MAX_TREE_DEPTH", 32, 1, 256),
            git_max_push_bytes=integer("ECSTATIC_GIT_MAX_PUSH_BYTES", 2**30, 2**16, 2**30),
            git_min_rate=integer("ECSTATIC_GIT_MIN_RATE", 8192, 1, 2**30),
            git_body_grace_seconds=number("ECSTATIC_GIT_BODY_GRACE_SECONDS", 10.0, 0.1, 3600),
            git_pushes_per_user=integer("ECSTATIC_GIT_PUSHES_PER_USER", 2, 1, 64),
            auth_cache_seconds=number("ECSTATIC_AUTH_CACHE_SECONDS", 5.0, 0, 3600),
            bind_host=bind_host,
            access_log_roll_mb=integer("ECSTATIC_ACCESS_LOG_ROLL_MB", 100, 1, 100_000),
            # Push credentials outlive one build: long enough for a slow one, no longer.
            deploy_credential_seconds=integer(
                "ECSTATIC_DEPLOY_CREDENTIAL_SECONDS", 900, 60, 86_400
            ),
            deploy=read_deploy_config(env, integer, errors),
            intake=read_intake(env, integer, number, errors, bind_host),
            query=read_query(env, integer, number),
        )
        if errors:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
        return config
