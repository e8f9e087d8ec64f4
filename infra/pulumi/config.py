"""The stack's configuration: the only module that reads ``pulumi.Config``.

Everything is read once, in :func:`load`, into frozen dataclasses; components get those
values through their args and never look at the stack config themselves. Keys are
camelCase (``pulumi config set serverType cx33``); ``Pulumi.example.yaml`` lists every one
with its default.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi

from services.targets import STATE, processes

# Hetzner locations and the network zone their private networks live in.
NETWORK_ZONES: dict[str, str] = {
    "fsn1": "eu-central",
    "nbg1": "eu-central",
    "hel1": "eu-central",
    "ash": "us-east",
    "hil": "us-west",
    "sin": "ap-southeast",
}

# The defaults of every optional knob (Pulumi.example.yaml repeats them; a test compares).
DEFAULTS: dict[str, object] = {
    "serverType": "cx33",
    "serverImage": "debian-12",
    "location": "fsn1",
    "nodeCount": 0,
    "volumeSizeGb": 100,
    "protectVolume": True,
    "cdnEdgeCidrs": [],
    "k3sVersion": "v1.36.5+k3s1",
    # SHA-256 of that release's amd64 `k3s` binary (its sha256sum-amd64.txt); bump both together.
    "k3sSha256": "d73847bcd3c5fccef0115b372e2f9a91f3032dc84bbf71518a4617565294d313",
    "kubeTunnelPort": 16443,
    "kubeconfigTimeoutSeconds": 900,
    "namespace": "ecstatic",
    "acmeCa": None,
    "image": "localhost/ecstatic:0.1.0",
    "clickhouseImage": "clickhouse/clickhouse-server:25.8.29.51",
    "caddyImage": "caddy:2.10.2",
    "prometheusImage": "prom/prometheus:v3.5.0",
    "alertmanagerImage": "prom/alertmanager:v0.28.1",
    "builderImage": "localhost/ecstatic-builder:0.1.0",  # infra/images/builder
    "storageClass": None,
    "volumeSizes": {},
    "replicas": {},
}
# No default is safe for these: who may SSH in, whose key, and the public names.
REQUIRED: tuple[str, ...] = ("adminCidrs", "sshPublicKey", "apiHost", "sitesDomain", "acmeEmail")
SECRETS: tuple[str, ...] = ("clickhouseUrl", "clickhousePassword")

_K3S_VERSION = re.compile(r"^v\d+\.\d+\.\d+\+k3s\d+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SSH_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?$"
)


class ConfigError(ValueError):
    """A stack config value is missing or wrong; the message names the key, never a secret."""


@dataclass(frozen=True)
class HetznerConfig:
    """The machines: type, image and place of the k3s server and its agents."""

    server_type: str
    server_image: str
    location: str
    network_zone: str
    node_count: int  # extra k3s agents next to the server
    volume_size_gb: int
    protect_volume: bool  # Pulumi refuses to delete the state volume while this is on


@dataclass(frozen=True)
class AccessConfig:
    """Who reaches the box, and how the program itself talks to it."""

    admin_cidrs: tuple[str, ...]
    cdn_edge_cidrs: tuple[str, ...]
    ssh_public_key: str
    kube_tunnel_port: int
    kubeconfig_timeout_seconds: int


@dataclass(frozen=True)
class K3sConfig:
    """The pinned k3s release."""

    version: str
    sha256: str


@dataclass(frozen=True)
class PlatformConfig:
    """What the Kubernetes part needs (see ``components.platform.PlatformArgs``)."""

    namespace: str
    image: str
    api_host: str
    sites_domain: str
    acme_email: str
    acme_ca: str | None
    clickhouse_url: pulumi.Output[str] | None  # secret; None: the in-cluster StatefulSet
    clickhouse_password: pulumi.Output[str] | None  # secret; None: the program generates one
    clickhouse_image: str
    caddy_image: str
    prometheus_image: str
    alertmanager_image: str
    storage_class: str | None
    volume_sizes: Mapping[str, int] = field(default_factory=dict)
    replicas: Mapping[str, int] = field(default_factory=dict)
    builder_image: str = str(DEFAULTS["builderImage"])


@dataclass(frozen=True)
class StackConfig:
    """The whole stack config, typed."""

    hetzner: HetznerConfig
    access: AccessConfig
    k3s: K3sConfig
    platform: PlatformConfig


def load(config: pulumi.Config | None = None) -> StackConfig:
    """Read and check every key of the stack config.

    Raises:
        ConfigError: for a missing required key or a value out of range.
    """
    cfg = config or pulumi.Config()
    location = _get(cfg, "location")
    if location not in NETWORK_ZONES:
        raise ConfigError(f"location {location!r} is not one of {', '.join(NETWORK_ZONES)}")
    clickhouse_url = cfg.get_secret("clickhouseUrl")
    clickhouse_password = cfg.get_secret("clickhousePassword")
    if clickhouse_url is not None and clickhouse_password is None:
        # A generated password only works for the in-cluster server the program creates.
        raise ConfigError("clickhouseUrl is set, so clickhousePassword must be set too (--secret)")
    hetzner = HetznerConfig(
        server_type=_get(cfg, "serverType"),
        server_image=_get(cfg, "serverImage"),
        location=location,
        network_zone=NETWORK_ZONES[location],
        node_count=_int_in(cfg, "nodeCount", 0, 50),
        volume_size_gb=_int_in(cfg, "volumeSizeGb", 10, 10240),
        protect_volume=_get_bool(cfg, "protectVolume"),
    )
    access = AccessConfig(
        admin_cidrs=_admin_cidrs(cfg),
        cdn_edge_cidrs=_cidrs("cdnEdgeCidrs", _get_object(cfg, "cdnEdgeCidrs")),
        ssh_public_key=_ssh_public_key(cfg),
        kube_tunnel_port=_int_in(cfg, "kubeTunnelPort", 1024, 65535),
        kubeconfig_timeout_seconds=_int_in(cfg, "kubeconfigTimeoutSeconds", 60, 7200),
    )
    return StackConfig(
        hetzner=hetzner,
        access=access,
        k3s=_k3s(cfg),
        platform=PlatformConfig(
            namespace=_get(cfg, "namespace"),
            image=_get(cfg, "image"),
            api_host=cfg.require("apiHost"),
            sites_domain=cfg.require("sitesDomain"),
            acme_email=cfg.require("acmeEmail"),
            acme_ca=cfg.get("acmeCa") or None,
            clickhouse_url=clickhouse_url,
            clickhouse_password=clickhouse_password,
            clickhouse_image=_get(cfg, "clickhouseImage"),
            caddy_image=_get(cfg, "caddyImage"),
            prometheus_image=_get(cfg, "prometheusImage"),
            alertmanager_image=_get(cfg, "alertmanagerImage"),
            storage_class=cfg.get("storageClass") or None,
            volume_sizes=_counts(cfg, "volumeSizes", set(STATE), minimum=1),
            replicas=_counts(cfg, "replicas", {p.name for p in processes(False)}, minimum=1),
            builder_image=_get(cfg, "builderImage"),
        ),
    )


def _get(cfg: pulumi.Config, key: str) -> str:
    return cfg.get(key) or str(DEFAULTS[key])


def _get_bool(cfg: pulumi.Config, key: str) -> bool:
    value = cfg.get_bool(key)
    return bool(DEFAULTS[key]) if value is None else value


def _get_object(cfg: pulumi.Config, key: str, *, required: bool = False) -> object:
    try:
        value = cfg.require_object(key) if required else cfg.get_object(key)
    except pulumi.ConfigTypeError:
        raise ConfigError(
            f"{key} must be JSON (a list or an object): pulumi config set --path '{key}[0]' VALUE"
        ) from None
    return DEFAULTS[key] if value is None else value


def _int_in(cfg: pulumi.Config, key: str, low: int, high: int) -> int:
    value = cfg.get_int(key)
    value = int(DEFAULTS[key]) if value is None else value  # type: ignore[call-overload]
    if not low <= value <= high:
        raise ConfigError(f"{key} must be between {low} and {high}, not {value}")
    return value


def _cidrs(key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(f'{key} must be a list of CIDRs, e.g. ["198.51.100.0/24"]')
    try:
        return tuple(str(ipaddress.ip_network(str(item), strict=True)) for item in value)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None


def _admin_cidrs(cfg: pulumi.Config) -> tuple[str, ...]:
    cidrs = _cidrs("adminCidrs", _get_object(cfg, "adminCidrs", required=True))
    if not cidrs:
        raise ConfigError("adminCidrs is empty: list where SSH (and this program) come from")
    if any(ipaddress.ip_network(c).prefixlen == 0 for c in cidrs):
        raise ConfigError("adminCidrs must not open SSH to the whole internet (no /0)")
    return cidrs


def _ssh_public_key(cfg: pulumi.Config) -> str:
    key = cfg.require("sshPublicKey").strip()
    if not _SSH_KEY.match(key):
        raise ConfigError("sshPublicKey must be one OpenSSH public key line (ssh-ed25519 AAAA...)")
    return key


def _k3s(cfg: pulumi.Config) -> K3sConfig:
    version, sha256 = _get(cfg, "k3sVersion"), _get(cfg, "k3sSha256").lower()
    if not _K3S_VERSION.match(version):
        raise ConfigError(f"k3sVersion must look like v1.36.5+k3s1, not {version!r}")
    if not _SHA256.match(sha256):
        raise ConfigError("k3sSha256 must be the 64 hex digits of the k3s binary's SHA-256")
    if cfg.get("k3sVersion") and not cfg.get("k3sSha256"):
        # A new version with the old checksum can only fail on the box: say it here.
        raise ConfigError("k3sVersion is set, so set k3sSha256 to that release's checksum too")
    return K3sConfig(version=version, sha256=sha256)


def _counts(cfg: pulumi.Config, key: str, known: set[str], minimum: int) -> dict[str, int]:
    value = _get_object(cfg, key)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be an object of name: number")
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"{key}: unknown names {unknown}; known: {sorted(known)}")
    counts = {str(name): value[name] for name in value}
    if any(not isinstance(n, int) or isinstance(n, bool) or n < minimum for n in counts.values()):
        raise ConfigError(f"{key} values must be whole numbers of at least {minimum}")
    return counts
