"""Builds as Kubernetes Jobs: their namespace, identities, network and shared directory.

git (the only part that builds) submits one Job per build (``services/build/kube_job.py``)
into a namespace of its own that holds nothing else: no Secret, no Service, no claim but
the exchange. There

* Pod Security Admission enforces ``restricted`` (non-root, no capabilities, no host
  paths, seccomp), so even git cannot start a privileged pod;
* one NetworkPolicy selects every pod (``podSelector: {}``, not the build labels git
  writes itself) and allows nothing in or out;
* build pods run as the ``builder`` ServiceAccount, which has no Role and no token;
* git's own ServiceAccount may create, read and delete Jobs and read pods and their logs
  there, and nothing anywhere else (a Role, not a ClusterRole).

Source and output go through the **exchange**: one host directory on the state node
(``cloud_init.BUILD_EXCHANGE_DIR``, made by cloud-init) seen through two hostPath
PersistentVolumes, each pre-bound to one claim: ``build-exchange`` in the platform
namespace (git mounts it whole) and in the builds namespace (each Job mounts its own
``<job>/src`` read-only and ``<job>/out`` by subPath). A claim cannot be used across
namespaces, and the git state claim is not used so that no build pod ever mounts the
repositories' volume; Kubernetes binds each claim to its volume through ``claimRef`` and
schedules both pods on the node the volumes name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pulumi
import pulumi_kubernetes as k8s

from services.core.deploy_config import DEFAULT_BUILDER_VERSIONS, DeployConfig

from .cloud_init import BUILD_EXCHANGE_DIR, STATE_NODE_LABEL
from .k8s_workloads import HOME, PART_OF, ClaimMount, Json, Workload

__all__ = [
    "EXCHANGE_CLAIM",
    "EXCHANGE_MOUNT",
    "Builds",
    "BuildsLayout",
    "with_builds",
]

EXCHANGE_CLAIM = DeployConfig.builder_claim
EXCHANGE_MOUNT = f"{HOME}/builds"  # where git sees the exchange directory
GIT_ACCOUNT = "git"
_EXCHANGE_SIZE = "10Gi"  # hostPath ignores it; a claim must ask for something


@dataclass(frozen=True)
class BuildsLayout:
    """Names and specs of the build objects for a platform in ``namespace``."""

    namespace: str  # the platform's
    builds_namespace: str
    builder_image: str
    git: str = "git"  # the process (Deployment) that builds

    @property
    def builder_account(self) -> str:
        """The no-permission ServiceAccount build pods run as."""
        return DeployConfig.builder_service_account

    def namespace_meta(self) -> Json:
        """The builds namespace: Pod Security ``restricted``, enforced."""
        security = {
            f"pod-security.kubernetes.io/{mode}": "restricted"
            for mode in ("enforce", "audit", "warn")
        }
        return {"name": self.builds_namespace, "labels": {**PART_OF, **security}}

    def deny_all(self) -> Json:
        """Every pod of the builds namespace: nothing in, nothing out (not even DNS)."""
        return {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    def role_rules(self) -> list[Json]:
        """What git may do in the builds namespace: exactly the runner's calls."""
        return [
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "delete"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ]

    def role_subjects(self) -> list[Json]:
        """git's ServiceAccount, in the platform namespace."""
        return [{"kind": "ServiceAccount", "name": GIT_ACCOUNT, "namespace": self.namespace}]

    def volume_spec(self, claim_namespace: str) -> Json:
        """One hostPath view of the exchange, pre-bound to the claim in ``claim_namespace``."""
        key, _, value = STATE_NODE_LABEL.partition("=")
        return {
            "capacity": {"storage": _EXCHANGE_SIZE},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            # "Directory": fail visibly when cloud-init did not make it (never root-owned).
            "hostPath": {"path": BUILD_EXCHANGE_DIR, "type": "Directory"},
            "claimRef": {"namespace": claim_namespace, "name": EXCHANGE_CLAIM},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": key, "operator": "In", "values": [value]}]}
                    ]
                }
            },
        }

    def volume_name(self, claim_namespace: str) -> str:
        """The PersistentVolume (cluster-wide) behind the claim in ``claim_namespace``."""
        return f"{self.namespace}-build-exchange-{claim_namespace}"

    def claim_spec(self, claim_namespace: str) -> Json:
        """The claim, bound to its own volume by name (no provisioner involved)."""
        return {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": self.volume_name(claim_namespace),
            "resources": {"requests": {"storage": _EXCHANGE_SIZE}},
        }

    def git_env(self) -> dict[str, str]:
        """The ``ECSTATIC_BUILDER*`` settings git runs with (the rest keep their values)."""
        config = replace(
            DeployConfig(),
            builder="kubernetes",
            builder_namespace=self.builds_namespace,
            builder_image=self.builder_image,
            builder_exchange=EXCHANGE_MOUNT,
            builder_versions=DEFAULT_BUILDER_VERSIONS,
        )
        return {k: v for k, v in config.environ().items() if k.startswith("ECSTATIC_BUILDER")}


def with_builds(workload: Workload, layout: BuildsLayout) -> Workload:
    """git's workload, able to build: its ServiceAccount's token, the exchange, the env."""
    overrides = layout.git_env()
    env = [e for e in workload.env if e["name"] not in overrides]
    env += [{"name": k, "value": v} for k, v in sorted(overrides.items())]
    return replace(
        workload,
        env=tuple(env),
        service_account=GIT_ACCOUNT,
        claims=(*workload.claims, ClaimMount(EXCHANGE_CLAIM, EXCHANGE_MOUNT)),
    )


class Builds(pulumi.ComponentResource):
    """The builds namespace and what lets git, and only git, run build Jobs there."""

    def __init__(self, name: str, layout: BuildsLayout, opts: pulumi.ResourceOptions):
        """Declare the objects; ``opts`` must wait for the platform's namespace."""
        super().__init__("ecstatic:platform:Builds", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        builds = layout.builds_namespace
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace", metadata=layout.namespace_meta(), opts=child
        )
        inside = pulumi.ResourceOptions(parent=self, depends_on=[namespace])

        def meta(object_name: str, where: str = builds) -> Json:
            return {"name": object_name, "namespace": where, "labels": dict(PART_OF)}

        k8s.core.v1.ServiceAccount(
            f"{name}-builder-account",
            metadata=meta(layout.builder_account),
            automount_service_account_token=False,
            opts=inside,
        )
        k8s.core.v1.ServiceAccount(
            f"{name}-git-account", metadata=meta(GIT_ACCOUNT, layout.namespace), opts=child
        )
        role = k8s.rbac.v1.Role(
            f"{name}-runner-role",
            metadata=meta("build-runner"),
            rules=layout.role_rules(),
            opts=inside,
        )
        k8s.rbac.v1.RoleBinding(
            f"{name}-runner-binding",
            metadata=meta("build-runner"),
            role_ref={
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "build-runner",
            },
            subjects=layout.role_subjects(),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, role]),
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-deny-all", metadata=meta("deny-all"), spec=layout.deny_all(), opts=inside
        )
        for where in (layout.namespace, builds):
            volume = k8s.core.v1.PersistentVolume(
                f"{name}-exchange-volume-{'git' if where == layout.namespace else 'builds'}",
                metadata={"name": layout.volume_name(where), "labels": dict(PART_OF)},
                spec=layout.volume_spec(where),
                opts=child,
            )
            k8s.core.v1.PersistentVolumeClaim(
                f"{name}-exchange-claim-{'git' if where == layout.namespace else 'builds'}",
                metadata=meta(EXCHANGE_CLAIM, where),
                spec=layout.claim_spec(where),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, volume]),
            )
        self.namespace = namespace
        self.register_outputs({"namespace": builds})
