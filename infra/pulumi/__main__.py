"""Ecstatic on one Hetzner box: config -> Box -> kubeconfig (SSH) -> k3s Provider -> Platform."""

from __future__ import annotations

import config
import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from components.box import Box, BoxArgs, hostname_for
from components.kubeconfig import KubeconfigSource, SshKubeconfigSource, kubeconfig_output
from components.platform import Platform, PlatformArgs


def main(source: KubeconfigSource) -> None:
    """Declare the stack; ``source`` fetches the kubeconfig (tests pass a fake)."""
    cfg = config.load()
    hz, access, plat = cfg.hetzner, cfg.access, cfg.platform
    box = Box(
        "ecstatic",
        BoxArgs(
            hostname=hostname_for(pulumi.get_stack()),
            server_type=hz.server_type,
            image=hz.server_image,
            location=hz.location,
            network_zone=hz.network_zone,
            node_count=hz.node_count,
            volume_size_gb=hz.volume_size_gb,
            protect_volume=hz.protect_volume,
            admin_ssh_public_key=access.ssh_public_key,
            admin_cidrs=access.admin_cidrs,
            cdn_edge_cidrs=access.cdn_edge_cidrs,
            k3s_version=cfg.k3s.version,
            k3s_sha256=cfg.k3s.sha256,
        ),
    )
    kubeconfig = kubeconfig_output(
        source,
        host=box.ipv4_address,
        client_private_key=box.deploy_private_key,
        host_public_key=box.host_public_key,
        ready=box.ready,
        tunnel_port=access.kube_tunnel_port,
        timeout=access.kubeconfig_timeout_seconds,
    )
    provider = k8s.Provider("ecstatic-k3s", kubeconfig=kubeconfig)
    # No password configured: the in-cluster ClickHouse gets one made here, kept in state.
    clickhouse_password = plat.clickhouse_password or pulumi.Output.secret(
        random.RandomPassword("ecstatic-clickhouse-password", length=32, special=False).result
    )
    platform = Platform(
        "ecstatic",
        PlatformArgs(
            namespace=plat.namespace,
            image=plat.image,
            api_host=plat.api_host,
            sites_domain=plat.sites_domain,
            acme_email=plat.acme_email,
            acme_ca=plat.acme_ca,
            clickhouse_url=plat.clickhouse_url,
            clickhouse_password=clickhouse_password,
            clickhouse_image=plat.clickhouse_image,
            caddy_image=plat.caddy_image,
            prometheus_image=plat.prometheus_image,
            alertmanager_image=plat.alertmanager_image,
            cdn_source_ranges=list(access.cdn_edge_cidrs),
            storage_class=plat.storage_class,
            volume_sizes=dict(plat.volume_sizes),
            replicas=dict(plat.replicas),
            builder_image=plat.builder_image,
        ),
        opts=pulumi.ResourceOptions(provider=provider),
    )

    pulumi.export("serverIpv4", box.ipv4_address)
    pulumi.export("serverIpv6", box.ipv6_address)
    pulumi.export("apiUrl", platform.api_url)
    pulumi.export("kubeconfig", kubeconfig)
    pulumi.export("knownHosts", box.known_hosts)
    pulumi.export("sshCommand", pulumi.Output.concat("ssh root@", box.ipv4_address))
    pulumi.export(
        "kubeTunnelCommand",
        pulumi.Output.concat(
            f"ssh -N -L {access.kube_tunnel_port}:127.0.0.1:6443 root@", box.ipv4_address
        ),
    )


if __name__ == "__main__":
    main(SshKubeconfigSource())
