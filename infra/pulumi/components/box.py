"""The Hetzner side: one k3s server with its state volume, optional agents, the firewall.

Every byte of state (the k3s datastore, certificates, local-path volumes) lives on a
Hetzner volume mounted at a fixed path, and the public addresses are primary IPs that
outlive the server, so the server itself can be replaced (a new k3s version, a new image)
without losing data or changing its addresses or its SSH host key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
import pulumi_random as random
import pulumi_tls as tls

from components.cloud_init import K3sRelease, NodeIdentity, render_agent, render_server
from services.targets import listeners

ANYWHERE = ("0.0.0.0/0", "::/0")
PUBLIC_WEB_PORTS = (80, 443)  # Caddy's Service: HTTP (ACME, redirects) and HTTPS
NETWORK_RANGE = "10.0.0.0/16"
SUBNET_RANGE = "10.0.1.0/24"
SERVER_PRIVATE_IP = "10.0.1.10"
K3S_API_PORT = 6443  # reached over the private network (agents) or an SSH tunnel, never public


@dataclass(frozen=True)
class BoxArgs:
    """What the box is made of (``config.HetznerConfig`` and friends, flattened)."""

    hostname: str  # also the k3s node name: it must survive a replaced server
    server_type: str
    image: str
    location: str
    network_zone: str
    node_count: int
    volume_size_gb: int
    protect_volume: bool
    admin_ssh_public_key: str
    admin_cidrs: Sequence[str]
    cdn_edge_cidrs: Sequence[str]
    k3s_version: str
    k3s_sha256: str


def hostname_for(stack: str) -> str:
    """A valid, stable hostname for a stack's server (stack names may hold ``_`` and ``.``)."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-")
    return f"ecstatic-{cleaned}"[:63].rstrip("-")


def intake_syslog_port() -> int:
    """The intake's public syslog port, from the layout map (``services.targets``)."""
    found = [lis for lis in listeners().values() if lis.protocol == "syslog" and lis.public]
    if len(found) != 1:
        raise ValueError(f"expected one public syslog listener in services.targets, got {found}")
    return found[0].default


def firewall_rules(
    admin_cidrs: Sequence[str], cdn_edge_cidrs: Sequence[str]
) -> list[hcloud.FirewallRuleArgs]:
    """Inbound rules: SSH from the admins, the web from anywhere, syslog from the CDN only.

    Hetzner firewalls drop every inbound packet no rule allows, and they filter public
    interfaces only: k3s's own traffic between nodes (6443, flannel, kubelet) stays on the
    private network and needs no rule here.
    """

    def tcp(port: int, sources: Sequence[str], why: str) -> hcloud.FirewallRuleArgs:
        return hcloud.FirewallRuleArgs(
            direction="in",
            protocol="tcp",
            port=str(port),
            source_ips=list(sources),
            description=why,
        )

    rules = [tcp(22, admin_cidrs, "ssh from the admins (and the program's tunnel)")]
    rules += [tcp(port, ANYWHERE, "caddy") for port in PUBLIC_WEB_PORTS]
    if cdn_edge_cidrs:  # no edge ranges yet: the syslog port stays closed
        rules.append(tcp(intake_syslog_port(), cdn_edge_cidrs, "cdn access logs to the intake"))
    return rules


def _server_arch(server_type: str) -> str:
    # Hetzner's CAX types are Ampere (arm64); every other type is x86.
    return "arm64" if server_type.lower().startswith("cax") else "amd64"


def _agent_private_ip(index: int) -> str:
    return f"10.0.1.{11 + index}"


class Box(pulumi.ComponentResource):
    """The k3s server (with its volume), ``node_count`` agents, firewall, keys and network.

    Outputs: ``ipv4_address``, ``ipv6_address``, ``host_public_key``, ``known_hosts``,
    ``deploy_private_key`` and ``cluster_token`` (secrets), ``volume_id`` and ``ready`` (the
    volume attachment: resolves once the server has its state disk).
    """

    def __init__(self, name: str, args: BoxArgs, opts: pulumi.ResourceOptions | None = None):
        """Create the box; see the class docstring for its outputs."""
        super().__init__("ecstatic:infra:Box", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        release = K3sRelease(args.k3s_version, args.k3s_sha256, _server_arch(args.server_type))

        admin_key = hcloud.SshKey(
            f"{name}-admin-key", public_key=args.admin_ssh_public_key, opts=child
        )
        deploy_key = tls.PrivateKey(f"{name}-deploy-key", algorithm="ED25519", opts=child)
        token = random.RandomPassword(f"{name}-cluster-token", length=48, special=False, opts=child)
        self.deploy_private_key = pulumi.Output.secret(deploy_key.private_key_openssh)
        self.cluster_token = pulumi.Output.secret(token.result)
        authorized = pulumi.Output.all(args.admin_ssh_public_key, deploy_key.public_key_openssh)

        network = hcloud.Network(f"{name}-network", ip_range=NETWORK_RANGE, opts=child)
        subnet = hcloud.NetworkSubnet(
            f"{name}-subnet",
            network_id=network.id.apply(int),
            type="cloud",
            network_zone=args.network_zone,
            ip_range=SUBNET_RANGE,
            opts=child,
        )
        firewall = hcloud.Firewall(
            f"{name}-firewall",
            rules=firewall_rules(args.admin_cidrs, args.cdn_edge_cidrs),
            opts=child,
        )
        # Kept (auto_delete off) when the server goes: DNS records stay right across a replace.
        ipv4, ipv6 = (
            hcloud.PrimaryIp(
                f"{name}-{family}",
                type=family,
                location=args.location,
                assignee_type="server",
                auto_delete=False,
                opts=child,
            )
            for family in ("ipv4", "ipv6")
        )
        volume = hcloud.Volume(
            f"{name}-state",
            size=args.volume_size_gb,
            location=args.location,
            format="ext4",
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect_volume),
        )
        host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=child)
        user_data = pulumi.Output.all(
            host_key.private_key_openssh,
            host_key.public_key_openssh,
            authorized,
            token.result,
            volume.id,
        ).apply(
            lambda v: render_server(
                release=release,
                identity=NodeIdentity(v[0], v[1].strip(), v[2]),
                cluster_token=v[3],
                private_ip=SERVER_PRIVATE_IP,
                volume_id=v[4],
                node_name=args.hostname,
            )
        )
        firewall_ids = [firewall.id.apply(int)]
        # The old server goes first: the volume, the primary IPs and the private IP can
        # belong to one server at a time.
        replace_in_place = pulumi.ResourceOptions(
            parent=self, depends_on=[subnet], delete_before_replace=True
        )
        server = hcloud.Server(
            f"{name}-server",
            name=args.hostname,
            server_type=args.server_type,
            image=args.image,
            location=args.location,
            ssh_keys=[admin_key.id],
            firewall_ids=firewall_ids,
            public_nets=[
                hcloud.ServerPublicNetArgs(
                    ipv4_enabled=True,
                    ipv4=ipv4.id.apply(int),
                    ipv6_enabled=True,
                    ipv6=ipv6.id.apply(int),
                )
            ],
            networks=[
                hcloud.ServerNetworkArgs(network_id=network.id.apply(int), ip=SERVER_PRIVATE_IP)
            ],
            user_data=pulumi.Output.secret(user_data),
            shutdown_before_deletion=True,  # k3s stops and ext4 flushes before the volume goes
            opts=replace_in_place,
        )
        attachment = hcloud.VolumeAttachment(
            f"{name}-state-attachment",
            server_id=server.id.apply(int),
            volume_id=volume.id.apply(int),
            automount=False,  # cloud-init mounts it
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        for index in range(args.node_count):
            self._agent(
                name,
                index,
                args,
                release,
                authorized,
                token,
                network,
                firewall_ids,
                admin_key,
                pulumi.ResourceOptions.merge(
                    replace_in_place, pulumi.ResourceOptions(depends_on=[server])
                ),
            )

        self.server_id = server.id
        self.volume_id = volume.id
        self.ready = attachment.id
        self.ipv4_address = ipv4.ip_address
        self.ipv6_address = server.ipv6_address
        self.host_public_key = host_key.public_key_openssh.apply(str.strip)
        self.known_hosts = pulumi.Output.concat(self.ipv4_address, " ", self.host_public_key)
        self.register_outputs(
            {
                "ipv4Address": self.ipv4_address,
                "ipv6Address": self.ipv6_address,
                "hostPublicKey": self.host_public_key,
                "knownHosts": self.known_hosts,
                "deployPrivateKey": self.deploy_private_key,
                "clusterToken": self.cluster_token,
                "serverId": self.server_id,
                "volumeId": self.volume_id,
                "ready": self.ready,
            }
        )

    def _agent(
        self,
        name: str,
        index: int,
        args: BoxArgs,
        release: K3sRelease,
        authorized: pulumi.Output[list[str]],
        token: random.RandomPassword,
        network: hcloud.Network,
        firewall_ids: list[pulumi.Output[int]],
        admin_key: hcloud.SshKey,
        opts: pulumi.ResourceOptions,
    ) -> hcloud.Server:
        """One k3s agent: its own host key, the same firewall, joins over the private network."""
        host_key = tls.PrivateKey(
            f"{name}-agent-{index}-host-key",
            algorithm="ED25519",
            opts=pulumi.ResourceOptions(parent=self),
        )
        private_ip = _agent_private_ip(index)
        user_data = pulumi.Output.all(
            host_key.private_key_openssh, host_key.public_key_openssh, authorized, token.result
        ).apply(
            lambda v: render_agent(
                release=release,
                identity=NodeIdentity(v[0], v[1].strip(), v[2]),
                cluster_token=v[3],
                private_ip=private_ip,
                server_url=f"https://{SERVER_PRIVATE_IP}:{K3S_API_PORT}",
            )
        )
        return hcloud.Server(
            f"{name}-agent-{index}",
            name=f"{args.hostname}-agent-{index}",
            server_type=args.server_type,
            image=args.image,
            location=args.location,
            ssh_keys=[admin_key.id],
            firewall_ids=firewall_ids,
            networks=[hcloud.ServerNetworkArgs(network_id=network.id.apply(int), ip=private_ip)],
            user_data=pulumi.Output.secret(user_data),
            shutdown_before_deletion=True,
            opts=opts,
        )
