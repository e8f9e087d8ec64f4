"""Ecstatic on Kubernetes: every target, Caddy, Prometheus, Alertmanager and ClickHouse.

Everything is derived from the layout map (``services/targets.py``) through
``k8s_layout``: one Deployment per process of ``processes(embedded=False)``, a claim per
piece of state, Services, NetworkPolicies for exactly the paths the map declares, and
the config files the local stack renders from the same map. See PLATFORM.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from services.platform.prometheus import ALERTMANAGER_YML
from services.targets import STATE

from . import k8s_clickhouse as ch
from .k8s_builds import Builds, BuildsLayout, with_builds
from .k8s_layout import (
    CLICKHOUSE_URL_KEY,
    CLICKHOUSE_URL_SECRET,
    Layout,
    rule_files,
)
from .k8s_network import edges, externals, policies
from .k8s_workloads import PART_OF, Workload, deployment_spec, pvc_spec, service_specs

__all__ = ["Platform", "PlatformArgs", "scalable"]


@dataclass(frozen=True)
class PlatformArgs:
    """What the platform needs beyond the layout map (read by ``config.py``)."""

    namespace: str
    image: str  # the Ecstatic image (one image, every target)
    api_host: str
    sites_domain: str
    acme_email: str
    acme_ca: str | None
    clickhouse_url: pulumi.Input[str] | None  # secret; None = in-cluster ClickHouse
    clickhouse_password: pulumi.Input[str]  # secret
    clickhouse_image: str  # official clickhouse/clickhouse-server, pinned version
    caddy_image: str
    prometheus_image: str
    alertmanager_image: str
    cdn_source_ranges: list[str]  # CDN edge CIDRs allowed to the intake's syslog port
    storage_class: str | None
    volume_sizes: dict[str, int] = field(default_factory=dict)  # STATE name -> GiB
    replicas: dict[str, int] = field(default_factory=dict)  # process name -> replicas
    # git's build Jobs (k8s_builds.py): the generators' image and the Jobs' namespace.
    builder_image: str = "localhost/ecstatic-builder:0.1.0"
    builds_namespace: str = "ecstatic-builds"


def scalable(layout: Layout) -> set[str]:
    """Processes that may run more than one replica: those that write no state.

    Every piece of state is a ReadWriteOnce volume with one writer (SQLite, the git
    deploy lock, the intake's offsets); see PLATFORM.md.
    """
    return {p.name for p in layout.processes if not p.writes}


def _check(args: PlatformArgs, layout: Layout) -> None:
    unknown = set(args.volume_sizes) - set(STATE)
    if unknown:
        raise ValueError(
            f"volume_sizes: unknown state {sorted(unknown)}; choose from {list(STATE)}"
        )
    names = {p.name for p in layout.processes}
    if set(args.replicas) - names:
        raise ValueError(f"replicas: unknown process {sorted(set(args.replicas) - names)}")
    for name, count in args.replicas.items():
        if count < 1 or (count > 1 and name not in scalable(layout)):
            raise ValueError(f"replicas: {name} runs exactly once (see PLATFORM.md), not {count}")


class Platform(pulumi.ComponentResource):
    """The whole Ecstatic platform in one namespace of a cluster."""

    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None):
        """Declare every Kubernetes object of the platform.

        Args:
            name: The component's name; children are named ``f"{name}-<part>"``.
            args: Images, hostnames, ClickHouse and sizing (see ``PlatformArgs``).
            opts: Resource options; pass the k3s ``Provider`` here (children inherit it).
        """
        super().__init__("ecstatic:platform:Platform", name, None, opts)
        layout = Layout(
            namespace=args.namespace,
            api_host=args.api_host,
            sites_domain=args.sites_domain,
            acme_email=args.acme_email,
            acme_ca=args.acme_ca,
            in_cluster_clickhouse=args.clickhouse_url is None,
        )
        _check(args, layout)
        self._name, self._args, self._layout = name, args, layout

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": args.namespace, "labels": dict(PART_OF)},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._secrets()
        rules = rule_files()
        self._config_maps(rules)
        builds = BuildsLayout(args.namespace, args.builds_namespace, args.builder_image)
        workloads = [
            with_builds(w, builds) if w.name == builds.git else w for w in self._workloads(rules)
        ]
        self._claims(workloads)
        Builds(f"{name}-builds", builds, self._child())
        for workload in workloads:
            self._deploy(workload)
        if layout.in_cluster_clickhouse:
            self._clickhouse()
        for policy, spec in policies(workloads, edges(layout), externals(layout)).items():
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy}", metadata=self._meta(policy), spec=spec, opts=self._child()
            )

        self.api_url = pulumi.Output.from_input(f"https://{args.api_host}")
        self.namespace_name = self.namespace.metadata.apply(lambda m: m["name"])
        self.register_outputs({"api_url": self.api_url, "namespace": self.namespace_name})

    # -- helpers --
    def _child(self) -> pulumi.ResourceOptions:
        # Every child waits for the namespace and inherits this component's provider.
        return pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])

    def _meta(self, object_name: str, **labels: str) -> dict:
        return {
            "name": object_name,
            "namespace": self._args.namespace,
            "labels": {**PART_OF, **labels},
        }

    # -- parts --
    def _secrets(self) -> None:
        args = self._args
        if args.clickhouse_url is None:
            url = ch.server_url(self._layout, args.clickhouse_password)
            users = pulumi.Output.secret(
                pulumi.Output.from_input(args.clickhouse_password).apply(ch.users_xml)
            )
            k8s.core.v1.Secret(
                f"{self._name}-clickhouse-users",
                metadata=self._meta(ch.USERS_SECRET),
                string_data={ch.USERS_KEY: users},
                opts=self._child(),
            )
        else:
            url = pulumi.Output.secret(pulumi.Output.from_input(args.clickhouse_url))
        k8s.core.v1.Secret(
            f"{self._name}-clickhouse-url",
            metadata=self._meta(CLICKHOUSE_URL_SECRET),
            string_data={CLICKHOUSE_URL_KEY: url},
            opts=self._child(),
        )

    def _config_maps(self, rules: dict[str, str]) -> None:
        files = {
            "caddy": {"Caddyfile": self._layout.caddyfile()},
            "prometheus": {"prometheus.yml": self._layout.prometheus_yml(rules)},
            "prometheus-rules": rules,
            "alertmanager": {"alertmanager.yml": ALERTMANAGER_YML},
        }
        for config_map, data in files.items():
            k8s.core.v1.ConfigMap(
                f"{self._name}-{config_map}-config",
                metadata=self._meta(config_map),
                data=data,
                opts=self._child(),
            )

    def _size(self, state: str) -> int:
        return self._args.volume_sizes.get(state, STATE[state].size_gi)

    def _workloads(self, rules: dict[str, str]) -> list[Workload]:
        args, layout = self._args, self._layout
        found = [
            layout.process_workload(
                p, args.image, args.replicas.get(p.name, 1), args.cdn_source_ranges
            )
            for p in layout.processes
        ]
        found.append(layout.caddy_workload(args.caddy_image))
        found.append(
            layout.prometheus_workload(args.prometheus_image, rules, self._size("prometheus"))
        )
        found.append(layout.alertmanager_workload(args.alertmanager_image))
        return found

    def _claims(self, workloads: list[Workload]) -> None:
        # One claim per piece of state any part mounts, shared by its writer and readers.
        used = {s for w in workloads for s in (*w.writes, *w.reads)}
        for state in (s for s in STATE if s in used):
            k8s.core.v1.PersistentVolumeClaim(
                f"{self._name}-{state}-claim",
                metadata=self._meta(state),
                spec=pvc_spec(self._size(state), self._args.storage_class),
                # Deleting a claim deletes the data: never as a side effect of an update.
                opts=pulumi.ResourceOptions.merge(
                    self._child(), pulumi.ResourceOptions(protect=True)
                ),
            )

    def _deploy(self, w: Workload) -> None:
        k8s.apps.v1.Deployment(
            f"{self._name}-{w.name}",
            metadata=self._meta(w.name, **{"app.kubernetes.io/name": w.name}),
            spec=deployment_spec(w),
            # Pods that share a ReadWriteOnce claim can take longer than the default wait.
            opts=pulumi.ResourceOptions.merge(
                self._child(),
                pulumi.ResourceOptions(custom_timeouts=pulumi.CustomTimeouts(create="15m")),
            ),
        )
        for service, spec in service_specs(w).items():
            k8s.core.v1.Service(
                f"{self._name}-{service}-service",
                metadata=self._meta(service, **{"app.kubernetes.io/name": w.name}),
                spec=spec,
                opts=self._child(),
            )

    def _clickhouse(self) -> None:
        args = self._args
        k8s.core.v1.Service(
            f"{self._name}-clickhouse-service",
            metadata=self._meta(ch.NAME, **{"app.kubernetes.io/name": ch.NAME}),
            spec=ch.service_spec(),
            opts=self._child(),
        )
        k8s.apps.v1.StatefulSet(
            f"{self._name}-clickhouse",
            metadata=self._meta(ch.NAME, **{"app.kubernetes.io/name": ch.NAME}),
            spec=ch.statefulset_spec(
                args.clickhouse_image,
                args.volume_sizes.get(ch.NAME, ch.default_size()),
                args.storage_class,
            ),
            opts=self._child(),
        )
