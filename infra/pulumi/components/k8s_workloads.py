"""Kubernetes object specs for one workload of the platform, as plain camelCase dicts.

A ``Workload`` says what a part needs (image, command, ports, state, probes, resources);
the functions here turn it into Deployment, Service and PersistentVolumeClaim specs with
the same hardening for every part. Nothing here knows the layout map: ``k8s_layout``
derives the workloads from it, ``platform`` creates the resources.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.targets import STATE

from .cloud_init import STATE_NODE_LABEL

__all__ = [
    "HANDS_OVER",
    "HOME",
    "LABEL",
    "STATE_NODE",
    "ClaimMount",
    "ConfigMount",
    "Port",
    "Workload",
    "container",
    "deployment_spec",
    "labels",
    "pod_spec",
    "pvc_spec",
    "service_specs",
    "state_mount_path",
]

# ECSTATIC_HOME inside every pod: each piece of STATE is a volume at HOME/<STATE.path>.
HOME = "/var/lib/ecstatic"
LABEL = "app.kubernetes.io/name"
# The node whose local-path volumes live on the Hetzner state volume (the k3s server).
STATE_NODE = dict([STATE_NODE_LABEL.split("=", 1)])
PART_OF = {"app.kubernetes.io/part-of": "ecstatic"}
# Parts whose state is made for two processes at once (the intake: a spool segment per
# process, one follower of Caddy's log at a time), so a rolling update loses nothing.
HANDS_OVER = frozenset({"intake"})

Json = dict[str, Any]


@dataclass(frozen=True)
class Port:
    """A container port; ``public`` ones go to the LoadBalancer Service."""

    name: str  # at most 15 characters, [a-z0-9-]
    port: int
    public: bool = False


@dataclass(frozen=True)
class ConfigMount:
    """A ConfigMap or Secret mounted read-only into the container."""

    volume: str
    path: str
    config_map: str | None = None
    secret: str | None = None


@dataclass(frozen=True)
class ClaimMount:
    """A claim that is not a piece of STATE, mounted read-write (git's build exchange)."""

    claim: str
    path: str


@dataclass(frozen=True)
class Workload:
    """Everything one part of the platform needs from Kubernetes."""

    name: str
    image: str
    command: tuple[str, ...]
    ports: tuple[Port, ...]
    health: tuple[int, str]  # (port, path) answering 200: readiness and liveness
    uid: int
    resources: Json
    writes: tuple[str, ...] = ()  # STATE names: one PVC each, mounted read-write
    reads: tuple[str, ...] = ()  # STATE names mounted read-only
    env: tuple[Json, ...] = ()
    config: tuple[ConfigMount, ...] = ()
    scratch: tuple[str, ...] = ("/tmp",)  # writable emptyDirs on the read-only root
    replicas: int = 1
    sysctls: tuple[Json, ...] = ()
    # Who may reach the public ports (LoadBalancer source ranges); empty: anyone.
    source_ranges: tuple[str, ...] = ()
    annotations: Json = field(default_factory=dict)
    claims: tuple[ClaimMount, ...] = ()
    # A ServiceAccount whose token is mounted: only a part that talks to the API (git).
    service_account: str | None = None


def labels(name: str) -> Json:
    """The labels of a part's pods; ``LABEL`` alone selects them."""
    return {LABEL: name, **PART_OF}


def state_mount_path(state: str) -> str:
    """Where a piece of state is mounted: the same path the local stack uses."""
    return f"{HOME}/{STATE[state].path}"


def _security_context(uid: int) -> Json:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(port: int, path: str, period: int, failures: int) -> Json:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _volume_name(state: str) -> str:
    return f"state-{state}"


def _scratch_name(index: int) -> str:
    return f"scratch-{index}"


def container(w: Workload) -> Json:
    """The workload's one container: non-root, read-only root, no capabilities."""
    mounts = [{"name": _volume_name(s), "mountPath": state_mount_path(s)} for s in w.writes]
    mounts += [
        {"name": _volume_name(s), "mountPath": state_mount_path(s), "readOnly": True}
        for s in w.reads
    ]
    for c in w.config:
        mounts.append({"name": c.volume, "mountPath": c.path, "readOnly": True})
    mounts += [{"name": f"claim-{c.claim}", "mountPath": c.path} for c in w.claims]
    mounts += [{"name": _scratch_name(i), "mountPath": p} for i, p in enumerate(w.scratch)]
    port, path = w.health
    spec: Json = {
        "name": w.name,
        "image": w.image,
        "command": list(w.command),
        "ports": [{"name": p.name, "containerPort": p.port, "protocol": "TCP"} for p in w.ports],
        "env": list(w.env),
        "resources": w.resources,
        # A startup probe gives slow starts (schema migration, the device-detector rules)
        # time without making liveness lenient for the rest of the pod's life.
        "startupProbe": _probe(port, path, period=2, failures=90),
        "readinessProbe": _probe(port, path, period=5, failures=3),
        "livenessProbe": _probe(port, path, period=10, failures=6),
        "securityContext": _security_context(w.uid),
        "volumeMounts": mounts,
    }
    return spec


def _volumes(w: Workload) -> list[Json]:
    volumes = [
        {"name": _volume_name(s), "persistentVolumeClaim": {"claimName": s}}
        for s in (*w.writes, *w.reads)
    ]
    volumes += [
        {"name": f"claim-{c.claim}", "persistentVolumeClaim": {"claimName": c.claim}}
        for c in w.claims
    ]
    for c in w.config:
        if c.config_map:
            volumes.append({"name": c.volume, "configMap": {"name": c.config_map}})
        else:
            volumes.append(
                {"name": c.volume, "secret": {"secretName": c.secret, "defaultMode": 0o440}}
            )
    volumes += [
        {"name": _scratch_name(i), "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}
        for i, _ in enumerate(w.scratch)
    ]
    return volumes


def pod_spec(w: Workload) -> Json:
    """The pod: no service-account token, no service links, fsGroup = the user."""
    security: Json = {
        "runAsNonRoot": True,
        "fsGroup": w.uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if w.sysctls:
        security["sysctls"] = list(w.sysctls)
    spec: Json = {
        # No part talks to the Kubernetes API.
        "automountServiceAccountToken": False,
        # The ECSTATIC_* contract is the only configuration; no *_SERVICE_HOST noise.
        "enableServiceLinks": False,
        "securityContext": security,
        "terminationGracePeriodSeconds": 45,  # the intake drains its buffer on SIGTERM
        "containers": [container(w)],
        "volumes": _volumes(w),
    }
    if w.service_account:
        spec["serviceAccountName"] = w.service_account
        spec["automountServiceAccountToken"] = True
    if w.writes or w.reads:
        # local-path claims are bound to one node; pods that share claims must meet there.
        spec["nodeSelector"] = dict(STATE_NODE)
    return spec


def deployment_spec(w: Workload) -> Json:
    """A Deployment of the workload."""
    template_meta: Json = {"labels": labels(w.name)}
    if w.annotations:
        template_meta["annotations"] = dict(w.annotations)
    return {
        "replicas": w.replicas,
        "selector": {"matchLabels": {LABEL: w.name}},
        "strategy": _strategy(w),
        "template": {"metadata": template_meta, "spec": pod_spec(w)},
    }


def _strategy(w: Workload) -> Json:
    if w.name in HANDS_OVER:
        # The new pod is ready before the old one gets SIGTERM and drains its senders.
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    # Any other part that writes state never overlaps with its successor on the volume.
    return {"type": "Recreate"} if w.writes else {"type": "RollingUpdate"}


def service_specs(w: Workload) -> dict[str, Json]:
    """Service name -> spec: ``<name>`` (ClusterIP) and ``<name>-public`` (LoadBalancer).

    Public ports get a Service of their own so that k3s's ServiceLB never binds an
    internal port (metrics, health) on the node's address.
    """
    selector = {LABEL: w.name}

    def ports(public: bool) -> list[Json]:
        return [
            {"name": p.name, "port": p.port, "targetPort": p.port, "protocol": "TCP"}
            for p in w.ports
            if p.public == public
        ]

    specs: dict[str, Json] = {}
    if ports(False):
        specs[w.name] = {"type": "ClusterIP", "selector": selector, "ports": ports(False)}
    if ports(True):
        public: Json = {
            "type": "LoadBalancer",
            "selector": selector,
            "ports": ports(True),
            # Local: the client's address survives (Caddy logs it; the analytics need it).
            "externalTrafficPolicy": "Local",
        }
        if w.source_ranges:
            public["loadBalancerSourceRanges"] = list(w.source_ranges)
        specs[f"{w.name}-public"] = public
    return specs


def pvc_spec(size_gi: int, storage_class: str | None) -> Json:
    """A ReadWriteOnce claim (k3s local-path: one node, shared by pods on that node)."""
    spec: Json = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": f"{size_gi}Gi"}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return spec
