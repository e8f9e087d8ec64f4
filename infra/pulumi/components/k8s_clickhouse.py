"""The in-cluster ClickHouse server: a StatefulSet of the official image, and its user.

Used when no external server is configured (``PlatformArgs.clickhouse_url`` is None).
The official image's entrypoint would write the user's file into the (read-only) root
filesystem, so user setup is skipped there and the user comes from a Secret instead:
``ecstatic`` with a SHA-256 of the password, and the password-less ``default`` user
reachable from inside the pod only.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import pulumi

from services.targets import STATE

from .k8s_layout import CLICKHOUSE_PORT, RESOURCES, Layout
from .k8s_workloads import STATE_NODE, Json, labels

__all__ = [
    "NAME",
    "USER",
    "USERS_KEY",
    "USERS_SECRET",
    "server_url",
    "statefulset_spec",
    "service_spec",
    "users_xml",
]

NAME = "clickhouse"
USER = "ecstatic"
USERS_SECRET = "clickhouse-users"
USERS_KEY = "ecstatic.xml"
UID = 101  # the clickhouse user of the official image


def users_xml(password: str) -> str:
    """users.d file: the ``ecstatic`` user; ``default`` limited to the pod itself."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return f"""\
<clickhouse>
    <users>
        <default>
            <networks replace="replace"><ip>::1</ip><ip>127.0.0.1</ip></networks>
        </default>
        <{USER}>
            <password_sha256_hex>{digest}</password_sha256_hex>
            <networks><ip>::/0</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </{USER}>
    </users>
</clickhouse>
"""


def server_url(layout: Layout, password: pulumi.Input[str]) -> pulumi.Output[str]:
    """The Ecstatic URL of the in-cluster server, as a secret (it carries the password)."""
    url = pulumi.Output.from_input(password).apply(
        lambda pw: f"http://{USER}:{quote(pw, safe='')}@{layout.host(NAME)}:{CLICKHOUSE_PORT}"
    )
    return pulumi.Output.secret(url)


def service_spec() -> Json:
    """The StatefulSet's governing (headless) Service: ClickHouse's HTTP port only."""
    return {
        "clusterIP": "None",
        "selector": {"app.kubernetes.io/name": NAME},
        "ports": [{"name": "http", "port": CLICKHOUSE_PORT, "targetPort": CLICKHOUSE_PORT}],
    }


def statefulset_spec(image: str, size_gi: int, storage_class: str | None) -> Json:
    """One ClickHouse server with its data on a volumeClaimTemplate."""
    probe = {"httpGet": {"path": "/ping", "port": CLICKHOUSE_PORT}, "timeoutSeconds": 3}
    claim: Json = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": f"{size_gi}Gi"}},
    }
    if storage_class:
        claim["storageClassName"] = storage_class
    container = {
        "name": NAME,
        "image": image,
        "ports": [{"name": "http", "containerPort": CLICKHOUSE_PORT, "protocol": "TCP"}],
        # The user comes from the Secret below; the entrypoint must not write one.
        "env": [{"name": "CLICKHOUSE_SKIP_USER_SETUP", "value": "1"}],
        "resources": RESOURCES[NAME],
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 150},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/clickhouse"},
            {"name": "logs", "mountPath": "/var/log/clickhouse-server"},
            {"name": "tmp", "mountPath": "/tmp"},
            {
                "name": "users",
                "mountPath": f"/etc/clickhouse-server/users.d/{USERS_KEY}",
                "subPath": USERS_KEY,
                "readOnly": True,
            },
        ],
    }
    return {
        "serviceName": NAME,
        "replicas": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
        "template": {
            "metadata": {"labels": labels(NAME)},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "nodeSelector": dict(STATE_NODE),  # its claim lives on the state volume
                "securityContext": {"runAsNonRoot": True, "fsGroup": UID},
                "containers": [container],
                "volumes": [
                    {"name": "logs", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "users", "secret": {"secretName": USERS_SECRET, "defaultMode": 0o440}},
                ],
            },
        },
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim}],
    }


def default_size() -> int:
    """GiB of the server's volume unless overridden: the "clickhouse" state's size."""
    return STATE[NAME].size_gi
