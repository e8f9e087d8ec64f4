"""NetworkPolicies from the layout map: deny everything, then allow each declared path.

Each allowed path is an ``Edge`` between two parts on one TCP port, and every edge has a
reason in the map: a ``talks_to`` peer (its HTTP port; ClickHouse's for storage rooms), a
Prometheus job (its metrics port), or Prometheus's Alertmanager. Outside the cluster only
DNS (to kube-system), Caddy's ACME traffic and an external ClickHouse are reachable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.targets import MODULES, PLATFORM

from .k8s_layout import CLICKHOUSE_PORT, Layout
from .k8s_workloads import LABEL, Json, Workload

__all__ = ["Edge", "External", "edges", "externals", "policies"]

# k3s's default pod and service networks, and link-local (the cloud's metadata service):
# "the internet" in an egress rule never means these.
CLUSTER_CIDRS = ("10.42.0.0/16", "10.43.0.0/16", "169.254.0.0/16")
# ClickHouse's HTTP and HTTPS ports (ClickHouse Cloud speaks HTTPS on 8443).
EXTERNAL_CLICKHOUSE_PORTS = (CLICKHOUSE_PORT, 8443)
DNS_PORT = 53
# k3s's API server on the server nodes' addresses: git's build Jobs (k8s_builds.py). k3s's
# policy controller (kube-router) sees connections to the `kubernetes` Service after
# kube-proxy's DNAT, so the node address and this port are what a rule must allow.
API_SERVER_PORT = 6443


@dataclass(frozen=True)
class Edge:
    """``source`` pods may open TCP connections to ``target`` pods on ``port``."""

    source: str
    target: str
    port: int
    reason: str


@dataclass(frozen=True)
class External:
    """``source`` pods may reach addresses outside the cluster on ``ports``."""

    source: str
    ports: tuple[int, ...]
    reason: str


def _http_port(layout: Layout, room: str) -> int:
    return layout.config().port(MODULES[room].listeners[0].name)


def edges(layout: Layout) -> list[Edge]:
    """Every in-cluster path the platform allows, derived from the map."""
    found: list[Edge] = []
    for process in layout.processes:
        for peer in process.talks_to:
            if peer == "clickhouse":
                if layout.in_cluster_clickhouse:
                    found.append(Edge(process.name, "clickhouse", CLICKHOUSE_PORT, "storage"))
            else:
                target = layout.process_of(peer).name
                found.append(Edge(process.name, target, _http_port(layout, peer), "talks_to"))
    for peer in PLATFORM["caddy"].talks_to:  # the routes, and the api's on-demand TLS ask
        target = layout.process_of(peer).name
        found.append(Edge("caddy", target, _http_port(layout, peer), "talks_to"))
    for job, (hostport, _path) in layout.jobs().items():
        host, _, port = hostport.rpartition(":")
        if host != layout.host(job):  # the job's name is its Service's: keep them one
            raise RuntimeError(f"prometheus job {job} scrapes {hostport}, not its Service")
        found.append(Edge("prometheus", job, int(port), "scrape"))
    alertmanager = PLATFORM["alertmanager"].listeners[0]
    found.append(
        Edge("prometheus", "alertmanager", layout.config().port(alertmanager.name), "alerts")
    )
    return found


def externals(layout: Layout) -> list[External]:
    """Egress beyond the cluster: ACME for Caddy, the API server for git's build Jobs,
    an external ClickHouse for storage."""
    found = [
        External("caddy", (443, 80), "acme"),
        External(layout.process_of("git").name, (API_SERVER_PORT,), "kube-api"),
    ]
    if not layout.in_cluster_clickhouse:
        found += [
            External(p.name, EXTERNAL_CLICKHOUSE_PORTS, "storage")
            for p in layout.processes
            if p.storage
        ]
    return found


def _peer(name: str) -> Json:
    return {"podSelector": {"matchLabels": {LABEL: name}}}


def _tcp(*ports: int) -> list[Json]:
    return [{"port": port, "protocol": "TCP"} for port in ports]


def _internet() -> Json:
    return {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(CLUSTER_CIDRS)}}


def policies(
    workloads: Sequence[Workload], allowed: Sequence[Edge], outside: Sequence[External]
) -> dict[str, Json]:
    """NetworkPolicy name -> spec: default deny, DNS, then one policy per part."""
    found: dict[str, Json] = {
        # An empty podSelector with no rules: nothing in, nothing out, for every pod.
        "default-deny": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        "allow-dns": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            },
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": [
                        {"port": DNS_PORT, "protocol": "UDP"},
                        {"port": DNS_PORT, "protocol": "TCP"},
                    ],
                }
            ],
        },
    }
    names = {w.name for w in workloads}
    for name in sorted(names | {e.target for e in allowed}):
        ingress = [
            {"from": [_peer(e.source)], "ports": _tcp(e.port)} for e in allowed if e.target == name
        ]
        public = [p.port for w in workloads if w.name == name for p in w.ports if p.public]
        if public:  # no "from": any source (the LoadBalancer's source ranges narrow it)
            ingress.append({"ports": _tcp(*public)})
        egress = [
            {"to": [_peer(e.target)], "ports": _tcp(e.port)} for e in allowed if e.source == name
        ]
        egress += [
            {"to": [_internet()], "ports": _tcp(*x.ports)} for x in outside if x.source == name
        ]
        spec: Json = {
            "podSelector": {"matchLabels": {LABEL: name}},
            "policyTypes": ["Ingress", "Egress"],
        }
        if ingress:
            spec["ingress"] = ingress
        if egress:
            spec["egress"] = egress
        found[f"allow-{name}"] = spec
    return found
