"""The Box component under Pulumi mocks: firewall, volume, keys, agents, secrets."""

from __future__ import annotations

from dataclasses import replace

import asyncssh
import pulumi
import pytest
import yaml
from components import cloud_init
from components.box import ANYWHERE, SERVER_PRIVATE_IP, Box, BoxArgs, hostname_for

from services.targets import listeners
from tests.infra.infra_mocks import MOCK_IPV4, is_secret, plain_strings, unwrap

ADMIN_CIDRS = ("198.51.100.7/32", "2001:db8:aa::/48")
CDN_CIDRS = ("192.0.2.0/24", "2001:db8:cd::/48")
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFRLbtO+YJH0jKzuDwq0IUiRaXCNMGtao2kGWIm7Ngca a@b"
ARGS = BoxArgs(
    hostname="ecstatic-test", server_type="cx33", image="debian-12", location="nbg1",
    network_zone="eu-central", node_count=0, volume_size_gb=120, protect_volume=True,
    admin_ssh_public_key=ADMIN_KEY,
    admin_cidrs=ADMIN_CIDRS, cdn_edge_cidrs=CDN_CIDRS,
    k3s_version="v1.36.5+k3s1", k3s_sha256="e" * 64,
)
SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"
OUTPUTS = ("ipv4_address", "host_public_key", "known_hosts", "deploy_private_key",
           "cluster_token", "ready", "volume_id")


def build(mocks, args: BoxArgs = ARGS) -> dict[str, tuple[object, bool]]:
    """Build a Box; return each output as (value, is it secret)."""
    resolved: dict[str, tuple[object, bool]] = {}

    @pulumi.runtime.test
    def program():
        box = Box("ecstatic", args)

        async def collect():
            for name in OUTPUTS:
                output = getattr(box, name)
                resolved[name] = (await output.future(), await output.is_secret())

        return collect()

    program()
    return resolved


def syslog_port() -> int:
    (port,) = [lis.default for lis in listeners().values() if lis.protocol == "syslog"]
    return port


def test_firewall_allows_ssh_from_admins_web_from_anywhere_syslog_from_cdn_only(pulumi_mocks):
    build(pulumi_mocks)
    (firewall,) = pulumi_mocks.of_type(FIREWALL)
    rules = firewall.inputs["rules"]
    assert {r["direction"] for r in rules} == {"in"}
    assert {r["protocol"] for r in rules} == {"tcp"}
    assert sorted((r["port"], tuple(r["sourceIps"])) for r in rules) == sorted([
        ("22", ADMIN_CIDRS),
        ("80", ANYWHERE),
        ("443", ANYWHERE),
        (str(syslog_port()), CDN_CIDRS),
    ])
    assert "6443" not in {r["port"] for r in rules}
    ssh = next(r for r in rules if r["port"] == "22")
    assert not {"0.0.0.0/0", "::/0"} & set(ssh["sourceIps"])


def test_syslog_port_stays_closed_without_cdn_ranges(pulumi_mocks):
    build(pulumi_mocks, replace(ARGS, cdn_edge_cidrs=()))
    (firewall,) = pulumi_mocks.of_type(FIREWALL)
    assert sorted(r["port"] for r in firewall.inputs["rules"]) == ["22", "443", "80"]


def test_firewall_is_on_the_server_from_its_creation(pulumi_mocks):
    build(pulumi_mocks)
    (firewall,) = pulumi_mocks.of_type(FIREWALL)
    server = pulumi_mocks.one(SERVER, "ecstatic-server")
    assert server.inputs["firewallIds"] == [int(firewall.id)]


def test_server_uses_the_configured_type_image_location_and_a_stable_name(pulumi_mocks):
    build(pulumi_mocks)
    server = pulumi_mocks.one(SERVER, "ecstatic-server")
    assert server.inputs["serverType"] == "cx33"
    assert server.inputs["image"] == "debian-12"
    assert server.inputs["location"] == "nbg1"
    assert server.inputs["name"] == "ecstatic-test"
    ssh_key = pulumi_mocks.one("hcloud:index/sshKey:SshKey", "ecstatic-admin-key")
    assert server.inputs["sshKeys"] == [ssh_key.id]
    assert ssh_key.inputs["publicKey"] == ARGS.admin_ssh_public_key


def test_state_volume_is_attached_and_mounted_by_its_id(pulumi_mocks):
    outputs = build(pulumi_mocks)
    volume = pulumi_mocks.one("hcloud:index/volume:Volume", "ecstatic-state")
    server = pulumi_mocks.one(SERVER, "ecstatic-server")
    attachment = pulumi_mocks.one(
        "hcloud:index/volumeAttachment:VolumeAttachment", "ecstatic-state-attachment"
    )
    assert volume.inputs["size"] == 120 and volume.inputs["location"] == "nbg1"
    assert attachment.inputs["serverId"] == int(server.id)
    assert attachment.inputs["volumeId"] == int(volume.id)
    assert attachment.inputs["automount"] is False
    assert outputs["ready"] == (attachment.id, False)
    user_data = unwrap(server.inputs["userData"])
    bootstrap = next(f for f in yaml.safe_load(user_data)["write_files"]
                     if f["path"] == cloud_init.BOOTSTRAP_SCRIPT)["content"]
    assert f"{cloud_init.MOUNT_SCRIPT} {cloud_init.volume_device(volume.id)} " in bootstrap


def test_addresses_are_primary_ips_that_outlive_the_server(pulumi_mocks):
    outputs = build(pulumi_mocks)
    ipv4 = pulumi_mocks.one("hcloud:index/primaryIp:PrimaryIp", "ecstatic-ipv4")
    ipv6 = pulumi_mocks.one("hcloud:index/primaryIp:PrimaryIp", "ecstatic-ipv6")
    assert ipv4.inputs["autoDelete"] is False and ipv6.inputs["autoDelete"] is False
    (public_net,) = pulumi_mocks.one(SERVER, "ecstatic-server").inputs["publicNets"]
    assert public_net["ipv4"] == int(ipv4.id) and public_net["ipv6"] == int(ipv6.id)
    assert outputs["ipv4_address"] == (MOCK_IPV4, False)


def test_user_data_carries_the_generated_host_key_the_program_pins(pulumi_mocks):
    outputs = build(pulumi_mocks)
    host_key = pulumi_mocks.one("tls:index/privateKey:PrivateKey", "ecstatic-host-key")
    assert host_key.inputs["algorithm"] == "ED25519"
    server = pulumi_mocks.one(SERVER, "ecstatic-server")
    assert is_secret(server.inputs["userData"])
    ssh_keys = yaml.safe_load(unwrap(server.inputs["userData"]))["ssh_keys"]
    pinned, _ = outputs["host_public_key"]
    assert ssh_keys["ed25519_public"] == pinned
    derived = asyncssh.import_private_key(ssh_keys["ed25519_private"]).export_public_key()
    assert derived.decode().split()[:2] == pinned.split()[:2]
    assert outputs["known_hosts"] == (f"{MOCK_IPV4} {pinned}", False)


def test_deploy_key_is_authorized_for_root_and_stays_secret(pulumi_mocks):
    outputs = build(pulumi_mocks)
    deploy = pulumi_mocks.one("tls:index/privateKey:PrivateKey", "ecstatic-deploy-key")
    assert deploy.inputs["algorithm"] == "ED25519"
    assert outputs["deploy_private_key"] == (deploy.outputs["privateKeyOpenssh"], True)
    server = pulumi_mocks.one(SERVER, "ecstatic-server")
    user_data = yaml.safe_load(unwrap(server.inputs["userData"]))
    (root,) = user_data["users"]
    assert root["name"] == "root"
    assert root["ssh_authorized_keys"] == [
        ARGS.admin_ssh_public_key, deploy.outputs["publicKeyOpenssh"]
    ]


def test_no_secret_travels_in_plain_inputs(pulumi_mocks):
    outputs = build(pulumi_mocks, replace(ARGS, node_count=1))
    token, token_secret = outputs["cluster_token"]
    assert token_secret
    keys = [k.outputs["privateKeyOpenssh"]
            for k in pulumi_mocks.of_type("tls:index/privateKey:PrivateKey")]
    secrets_ = [token, *keys]
    for resource in pulumi_mocks.resources:
        for text in plain_strings(resource.inputs):
            assert not any(s in text for s in secrets_), (resource.typ, resource.name)


def test_agents_join_over_the_private_network_behind_the_same_firewall(pulumi_mocks):
    outputs = build(pulumi_mocks, replace(ARGS, node_count=2))
    (firewall,) = pulumi_mocks.of_type(FIREWALL)
    network = pulumi_mocks.one("hcloud:index/network:Network", "ecstatic-network")
    agents = [pulumi_mocks.one(SERVER, f"ecstatic-agent-{i}") for i in range(2)]
    token, _ = outputs["cluster_token"]
    host_keys = set()
    for index, agent in enumerate(agents):
        assert agent.inputs["firewallIds"] == [int(firewall.id)]
        (net,) = agent.inputs["networks"]
        assert net["networkId"] == int(network.id) and net["ip"] == f"10.0.1.{11 + index}"
        document = yaml.safe_load(unwrap(agent.inputs["userData"]))
        k3s = yaml.safe_load(next(f["content"] for f in document["write_files"]
                                  if f["path"] == cloud_init.K3S_CONFIG_PATH))
        assert k3s["server"] == f"https://{SERVER_PRIVATE_IP}:6443"
        assert k3s["token"] == token
        host_keys.add(document["ssh_keys"]["ed25519_public"])
    assert len(host_keys) == 2  # each node its own host key
    (server_net,) = pulumi_mocks.one(SERVER, "ecstatic-server").inputs["networks"]
    assert server_net["ip"] == SERVER_PRIVATE_IP
    subnet = pulumi_mocks.one("hcloud:index/networkSubnet:NetworkSubnet", "ecstatic-subnet")
    assert subnet.inputs["networkZone"] == "eu-central"


def test_children_are_parented_to_the_box_and_named_after_it(pulumi_mocks):
    build(pulumi_mocks)
    names = {r.name for r in pulumi_mocks.resources}
    assert names == {
        "ecstatic", "ecstatic-admin-key", "ecstatic-deploy-key", "ecstatic-cluster-token",
        "ecstatic-network", "ecstatic-subnet", "ecstatic-firewall", "ecstatic-ipv4",
        "ecstatic-ipv6", "ecstatic-state", "ecstatic-host-key", "ecstatic-server",
        "ecstatic-state-attachment",
    }
    urns = pulumi.runtime.settings.get_monitor().get_registered_resources()
    children = [urn for urn in urns if not urn.endswith("::ecstatic")]
    assert children and all("ecstatic:infra:Box$" in urn for urn in children)


@pytest.mark.parametrize(
    ("stack", "hostname"),
    [
        ("prod", "ecstatic-prod"),
        ("My_Stack.eu", "ecstatic-my-stack-eu"),
        ("x" * 80, "ecstatic-" + "x" * 54),
    ],
)
def test_hostname_is_valid_for_any_stack_name(stack, hostname):
    assert hostname_for(stack) == hostname
