"""Run the Platform component under Pulumi mocks and keep what it declared.

``declare(args)`` builds ``Platform`` inside ``@pulumi.runtime.test`` (which waits for
every registration), then returns each resource's type, name, inputs (secrets still
wrapped, so tests can tell plain values from secret ones), the outputs the mock gave
back (camelCase, as a provider would) and the provider reference it was created with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from components.platform import Platform, PlatformArgs
from pulumi.runtime import rpc

SECRET_SIG = rpc._special_sig_key
SECRET_VALUE = rpc._special_secret_sig

PASSWORD = "pw-Hunter2/ä@:x"  # characters a URL must escape
EXTERNAL_URL = "https://ecstatic:s3cret-Ext@abc123.eu-central-1.aws.clickhouse.cloud:8443"


@dataclass
class Declared:
    """One resource the program registered."""

    typ: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    provider: str | None


class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that echo inputs back as outputs (camelCase) and remember every resource."""

    def __init__(self) -> None:
        self.declared: list[Declared] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if (
            args.typ == "kubernetes:core/v1:Service"
            and outputs["spec"].get("type") == "LoadBalancer"
        ):
            # What ServiceLB reports once it has bound the ports on the node.
            outputs["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
        self.declared.append(Declared(args.typ, args.name, args.inputs, outputs, args.provider))
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def platform_args(**overrides: Any) -> PlatformArgs:
    """Arguments as ``__main__`` would pass them, with secrets as Pulumi secrets."""
    args = PlatformArgs(
        namespace="ecstatic",
        image="ghcr.io/example/ecstatic:1.2.3",
        api_host="api.example.net",
        sites_domain="sites.example.net",
        acme_email="ops@example.net",
        acme_ca=None,
        clickhouse_url=None,
        clickhouse_password=pulumi.Output.secret(PASSWORD),
        clickhouse_image="clickhouse/clickhouse-server:25.8.2.29",
        caddy_image="caddy:2.10.2",
        prometheus_image="prom/prometheus:v3.5.0",
        alertmanager_image="prom/alertmanager:v0.28.1",
        cdn_source_ranges=["198.51.100.0/24", "203.0.113.0/24"],
        storage_class="local-path",
        volume_sizes={},
        replicas={},
    )
    return replace(args, **overrides)


def declare(args: PlatformArgs, name: str = "ecstatic") -> list[Declared]:
    """Every resource ``Platform(name, args)`` registers, with a k3s provider."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="ecstatic", stack="test", preview=False)

    @pulumi.runtime.test
    def build():
        provider = k8s.Provider("k3s", kubeconfig="apiVersion: v1\nkind: Config\n")
        platform = Platform(name, args, pulumi.ResourceOptions(provider=provider))
        return platform.urn

    build()
    return mocks.declared


def unwrap(value: Any) -> Any:
    """The value with secret wrappers removed and integral floats back to ints."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            return unwrap(value["value"])
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)  # protobuf numbers are doubles
    return value


def plain_strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, string) of every string NOT under a secret wrapper."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            return []
        return [s for k, v in value.items() for s in plain_strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in plain_strings(v, f"{path}[{i}]")]
    return [(path, value)] if isinstance(value, str) else []


def kube_objects(declared: list[Declared]) -> list[dict[str, Any]]:
    """The Kubernetes objects as manifests (apiVersion, kind, metadata, ...), unwrapped."""
    found = []
    for d in declared:
        if d.typ.startswith("kubernetes:") and d.typ != "pulumi:providers:kubernetes":
            found.append(unwrap(d.inputs))
    return found


def of_kind(declared: list[Declared], kind: str) -> dict[str, dict[str, Any]]:
    """metadata.name -> manifest of every object of ``kind``."""
    return {o["metadata"]["name"]: o for o in kube_objects(declared) if o["kind"] == kind}
