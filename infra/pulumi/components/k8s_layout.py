"""The platform's workloads, derived from the layout map (``services/targets.py``).

Ports, volumes, commands, Caddy's routes and Prometheus's jobs all come from the map and
from the same ``ECSTATIC_*`` environment contract the local stack uses
(``services.core.config.Config``); the only numbers written here are those of programs
the map does not describe (Caddy's public 80/443, Alertmanager), each with its reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.core.config import Config
from services.platform import caddy, prometheus
from services.platform.prometheus import ALERTMANAGER_YML
from services.targets import MODULES, PLATFORM, Listener, Process, processes

from .k8s_workloads import HOME, ConfigMount, Json, Port, Workload, state_mount_path

__all__ = [
    "CLICKHOUSE_PORT",
    "CLICKHOUSE_URL_KEY",
    "CLICKHOUSE_URL_SECRET",
    "OPS_DIR",
    "PUBLIC_PORTS",
    "RESOURCES",
    "Layout",
    "rule_files",
]

OPS_DIR = Path(__file__).resolve().parents[3] / "ops"
ECSTATIC_UID = 10001  # the image's ecstatic user (Dockerfile)
NOBODY = 65534  # the official Prometheus and Alertmanager images run as nobody
# Caddy's defaults, which services.platform.caddy.cluster() keeps: visitors and Let's
# Encrypt's HTTP-01 / TLS-ALPN-01 challenges need exactly these public ports.
PUBLIC_PORTS = {"https": 443, "http": 80}
# Not in the map: ClickHouse's HTTP interface (a server the map does not run).
CLICKHOUSE_PORT = 8123
CLICKHOUSE_URL_SECRET = "clickhouse-url"
CLICKHOUSE_URL_KEY = "url"


def _resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> Json:
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


# Requests fit a small box (the Hetzner CX22's 2 vCPU / 4 GB); limits stop a runaway part.
RESOURCES: dict[str, Json] = {
    "api": _resources("100m", "128Mi", "1", "512Mi"),
    "git": _resources("100m", "256Mi", "1", "1Gi"),  # unpacks and uploads whole releases
    "query": _resources("100m", "256Mi", "1", "1Gi"),
    "intake": _resources("200m", "384Mi", "1", "1Gi"),  # device-detector's rules in memory
    "caddy": _resources("100m", "128Mi", "1", "512Mi"),
    "prometheus": _resources("100m", "256Mi", "1", "1Gi"),
    "alertmanager": _resources("20m", "32Mi", "200m", "128Mi"),
    "clickhouse": _resources("500m", "1Gi", "2", "3Gi"),
}


def rule_files(ops: Path = OPS_DIR) -> dict[str, str]:
    """Prometheus rule files under ``ops``: ConfigMap key -> text.

    Every ``ops/**/*.rules.yml`` and ``ops/rules/*.yml``; the key is the path below
    ``ops`` with ``/`` as ``__`` (ConfigMap keys cannot hold a slash).
    """
    found = {*ops.glob("**/*.rules.yml"), *ops.glob("rules/*.yml")}
    return {
        str(path.relative_to(ops)).replace("/", "__"): path.read_text()
        for path in sorted(found)
        if path.is_file()
    }


def _checksum(*texts: str) -> str:
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()


def _port_name(listener: Listener) -> str:
    return listener.name.replace("_", "-")


@dataclass(frozen=True)
class Layout:
    """The platform's layout in one namespace: services, config files, workloads."""

    namespace: str
    api_host: str
    sites_domain: str
    acme_email: str
    acme_ca: str | None
    in_cluster_clickhouse: bool

    # -- addresses --
    def host(self, service: str) -> str:
        """The in-cluster DNS name of a Service."""
        return f"{service}.{self.namespace}.svc.cluster.local"

    @property
    def processes(self) -> list[Process]:
        """One process per room: production runs a ClickHouse server, not the engine."""
        return processes(embedded=False)

    def process_of(self, room: str) -> Process:
        """The process (Deployment) that runs ``room``."""
        return next(p for p in self.processes if room in p.rooms)

    def config(self) -> Config:
        """The Ecstatic config every process gets, through the local stack's contract."""
        api = MODULES["api"].listeners[0]
        return Config.from_env(
            {
                "ECSTATIC_HOME": HOME,
                "ECSTATIC_BIND_HOST": "0.0.0.0",
                "ECSTATIC_API_URL": f"http://{self.host(self.process_of('api').name)}:{api.default}",
                "ECSTATIC_SITES_DOMAIN": self.sites_domain,
                "ECSTATIC_SITE_SCHEME": "https",
                "ECSTATIC_PUBLIC_URL": f"https://{self.api_host}",
                # "http" is Caddy's public port: 443 here, so site URLs carry no port.
                "ECSTATIC_HTTP_PORT": str(PUBLIC_PORTS["https"]),
            }
        )

    def upstream(self, room: str) -> str:
        """host:port of the Service serving ``room`` (Caddy's reverse_proxy target)."""
        listener = MODULES[room].listeners[0]
        return f"{self.host(self.process_of(room).name)}:{self.config().port(listener.name)}"

    def metrics_address(self, job: str, listener: Listener) -> str:
        """host:port Prometheus scrapes for ``job`` (see ``prometheus.jobs``)."""
        return f"{self.host(job)}:{self.config().port(listener.name)}"

    # -- generated files --
    def caddyfile(self) -> str:
        """Production's Caddyfile, from ``services.platform.caddy.cluster``."""
        config = self.config()
        return caddy.cluster(
            caddy.ClusterCaddy(
                api_host=self.api_host,
                acme_email=self.acme_email,
                upstream=self.upstream,
                home=HOME,
                internal_port=config.port(PLATFORM["caddy"].metrics[0]),
                access_log_roll_mb=config.access_log_roll_mb,
                acme_ca=self.acme_ca,
            )
        )

    def jobs(self) -> dict[str, tuple[str, str]]:
        """Prometheus's jobs: every process and platform program with metrics."""
        return prometheus.jobs(self.processes, self.metrics_address)

    def prometheus_yml(self, rules: Mapping[str, str]) -> str:
        """prometheus.yml: the jobs, the rule files, the Alertmanager."""
        return prometheus.scrape_config(
            self.jobs(),
            interval="15s",
            rule_files=[f"/etc/ecstatic-prometheus/rules/{key}" for key in sorted(rules)],
            alertmanagers=[
                self.metrics_address("alertmanager", PLATFORM["alertmanager"].listeners[0])
            ],
        )

    # -- workloads --
    def ecstatic_env(self, process: Process) -> list[Json]:
        """The ``ECSTATIC_*`` environment of one process; ClickHouse's URL from the Secret."""
        env = dict(self.config().environ())
        # The default (the embedded engine's path) never reaches a pod: the URL is a secret.
        env.pop("ECSTATIC_CLICKHOUSE_URL")
        items: list[Json] = [{"name": k, "value": v} for k, v in sorted(env.items())]
        if process.storage:  # only the rooms that open ClickHouse get its credentials
            ref = {"name": CLICKHOUSE_URL_SECRET, "key": CLICKHOUSE_URL_KEY}
            items.append({"name": "ECSTATIC_CLICKHOUSE_URL", "valueFrom": {"secretKeyRef": ref}})
        return items

    def process_workload(
        self, process: Process, image: str, replicas: int, cdn_ranges: Sequence[str]
    ) -> Workload:
        """The Deployment of one Ecstatic process: ``ecstatic serve <spec>``.

        Its public listeners (the intake's syslog port) are for the CDN's edges only.
        """
        config = self.config()
        ports = tuple(
            Port(_port_name(lis), config.port(lis.name), lis.public) for lis in process.listeners
        )
        return Workload(
            name=process.name,
            image=image,
            command=("ecstatic", "serve", process.spec),
            ports=ports,
            health=(config.port(process.http.name), "/healthz"),
            uid=ECSTATIC_UID,
            resources=RESOURCES[process.name],
            writes=process.writes,
            reads=process.reads,
            env=tuple(self.ecstatic_env(process)),
            replicas=replicas,
            source_ranges=tuple(cdn_ranges) if any(p.public for p in ports) else (),
        )

    def caddy_workload(self, image: str) -> Workload:
        """Caddy: 80/443 public, its internal port (probes, metrics) cluster-only."""
        spec = PLATFORM["caddy"]
        internal = next(lis for lis in spec.listeners if lis.name == spec.metrics[0])
        port = self.config().port(internal.name)
        public = tuple(Port(name, number, public=True) for name, number in PUBLIC_PORTS.items())
        caddy_home = state_mount_path("caddy")
        return Workload(
            name="caddy",
            image=image,
            command=(
                "caddy",
                "run",
                "--config",
                "/etc/ecstatic-caddy/Caddyfile",
                "--adapter",
                "caddyfile",
            ),
            ports=(*public, Port(_port_name(internal), port)),
            health=(port, spec.health[1]),
            uid=ECSTATIC_UID,
            resources=RESOURCES["caddy"],
            writes=spec.writes,
            reads=spec.reads,
            # Certificates and autosaved config on the "caddy" volume, as in the local stack.
            env=(
                {"name": "XDG_DATA_HOME", "value": f"{caddy_home}/data"},
                {"name": "XDG_CONFIG_HOME", "value": f"{caddy_home}/config"},
            ),
            config=(ConfigMount("caddyfile", "/etc/ecstatic-caddy", config_map="caddy"),),
            # 80/443 as a non-root user without capabilities (a "safe" sysctl since 1.22).
            sysctls=({"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"},),
            annotations={"ecstatic/config-sha256": _checksum(self.caddyfile())},
        )

    def prometheus_workload(self, image: str, rules: Mapping[str, str], size_gi: int) -> Workload:
        """Prometheus scraping every job, its database on the "prometheus" volume."""
        spec = PLATFORM["prometheus"]
        listener = spec.listeners[0]
        port = self.config().port(listener.name)
        return Workload(
            name="prometheus",
            image=image,
            command=(
                "prometheus",
                "--config.file=/etc/ecstatic-prometheus/config/prometheus.yml",
                f"--storage.tsdb.path={state_mount_path('prometheus')}",
                # Keep a margin below the volume so the database never fills it.
                f"--storage.tsdb.retention.size={size_gi * 800}MB",
                f"--web.listen-address=:{port}",
            ),
            ports=(Port(_port_name(listener), port),),
            health=(port, spec.health[1]),
            uid=NOBODY,
            resources=RESOURCES["prometheus"],
            writes=spec.writes,
            config=(
                # Whole directories, never subPath: those never see a ConfigMap's update.
                ConfigMount("config", "/etc/ecstatic-prometheus/config", config_map="prometheus"),
                ConfigMount(
                    "rules", "/etc/ecstatic-prometheus/rules", config_map="prometheus-rules"
                ),
            ),
            annotations={
                "ecstatic/config-sha256": _checksum(
                    self.prometheus_yml(rules), *(f"{k}\0{v}" for k, v in sorted(rules.items()))
                )
            },
        )

    def alertmanager_workload(self, image: str) -> Workload:
        """Alertmanager with the minimal config (one null receiver), one replica."""
        spec = PLATFORM["alertmanager"]
        port = self.config().port(spec.listeners[0].name)
        return Workload(
            name="alertmanager",
            image=image,
            command=(
                "alertmanager",
                "--config.file=/etc/ecstatic-alertmanager/alertmanager.yml",
                f"--storage.path={state_mount_path('alertmanager')}",
                f"--web.listen-address=:{port}",
                "--cluster.listen-address=",  # one replica: no gossip port
            ),
            ports=(Port(_port_name(spec.listeners[0]), port),),
            health=(port, spec.health[1]),
            uid=NOBODY,
            resources=RESOURCES["alertmanager"],
            config=(
                ConfigMount("config", "/etc/ecstatic-alertmanager", config_map="alertmanager"),
            ),
            writes=spec.writes,  # silences and the notification log survive a restart
            annotations={"ecstatic/config-sha256": _checksum(ALERTMANAGER_YML)},
        )
