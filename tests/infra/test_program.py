"""The whole program (__main__.py) under mocks, with Pulumi.example.yaml as its only config."""

from __future__ import annotations

import runpy
import secrets
import socket

import pulumi
import pytest
import yaml
from components.kubeconfig import KubeconfigRequest

from tests.infra.infra_mocks import MOCK_IPV4, PULUMI_DIR, is_secret, plain_strings, unwrap

PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
PASSWORD = "random:index/randomPassword:RandomPassword"


class FakeKubeconfigSource:
    """Stands in for the SSH fetcher: remembers the request, answers a made-up kubeconfig."""

    def __init__(self) -> None:
        self.requests: list[KubeconfigRequest] = []
        self.client_key_data = secrets.token_hex(16)
        self.kubeconfig = yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "default", "cluster": {"server": "https://127.0.0.1:16443"}}],
            "users": [{"name": "default", "user": {"client-key-data": self.client_key_data}}],
        })

    async def __call__(self, request: KubeconfigRequest) -> str:
        self.requests.append(request)
        return self.kubeconfig


@pytest.fixture
def no_network(monkeypatch) -> list:
    """Every outgoing connection attempt fails the test (the mocks need none)."""
    attempts: list = []

    def refuse(sock, address):
        attempts.append(address)
        raise AssertionError(f"the program tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture
def program(pulumi_mocks, no_network):
    """Run __main__.main with a fake source; return (mocks, source, exports)."""
    source = FakeKubeconfigSource()
    main = runpy.run_path(str(PULUMI_DIR / "__main__.py"), run_name="ecstatic_program")["main"]
    exports: dict[str, tuple[object, bool]] = {}

    @pulumi.runtime.test
    def run():
        main(source)
        outputs = dict(pulumi.runtime.settings.get_root_resource().outputs)

        async def collect():
            for name, value in outputs.items():
                output = pulumi.Output.from_input(value)
                exports[name] = (await output.future(), await output.is_secret())

        return collect()

    run()
    assert no_network == []
    return pulumi_mocks, source, exports


def test_the_kubeconfig_comes_from_the_seam_with_the_boxs_pinned_identity(program):
    mocks, source, _ = program
    (request,) = source.requests
    host_key = mocks.one("tls:index/privateKey:PrivateKey", "ecstatic-host-key")
    deploy_key = mocks.one("tls:index/privateKey:PrivateKey", "ecstatic-deploy-key")
    assert request.host == MOCK_IPV4
    assert request.host_public_key == host_key.outputs["publicKeyOpenssh"].strip()
    assert request.client_private_key == deploy_key.outputs["privateKeyOpenssh"]
    assert request.tunnel_port == 16443 and request.timeout == 900


def test_the_k8s_provider_gets_the_kubeconfig_as_a_secret_and_every_k8s_object_uses_it(program):
    mocks, source, _ = program
    (provider,) = mocks.of_type("pulumi:providers:kubernetes")
    assert is_secret(provider.inputs["kubeconfig"])
    assert unwrap(provider.inputs["kubeconfig"]) == source.kubeconfig
    k8s_objects = [r for r in mocks.resources if r.typ.startswith("kubernetes:")]
    assert k8s_objects
    for resource in k8s_objects:
        assert resource.provider and f"::{provider.name}::" in resource.provider, resource.name


def test_exports_are_the_addresses_urls_and_a_secret_kubeconfig(program):
    _, source, exports = program
    assert exports["kubeconfig"] == (source.kubeconfig, True)
    assert exports["serverIpv4"] == (MOCK_IPV4, False)
    assert exports["serverIpv6"][1] is False and exports["serverIpv6"][0]
    assert exports["apiUrl"] == ("https://api.example.com", False)
    assert exports["sshCommand"] == (f"ssh root@{MOCK_IPV4}", False)
    tunnel = f"ssh -N -L 16443:127.0.0.1:6443 root@{MOCK_IPV4}"
    assert exports["kubeTunnelCommand"] == (tunnel, False)
    host, key_type, _key = exports["knownHosts"][0].split()
    assert (host, key_type) == (MOCK_IPV4, "ssh-ed25519")


def test_no_secret_reaches_a_plain_input_or_export(program):
    mocks, source, exports = program
    keys = [k.outputs["privateKeyOpenssh"] for k in mocks.of_type(PRIVATE_KEY)]
    passwords = [p.outputs["result"] for p in mocks.of_type(PASSWORD)]
    assert {p.name for p in mocks.of_type(PASSWORD)} == {
        "ecstatic-cluster-token", "ecstatic-clickhouse-password"
    }
    hidden = [*keys, *passwords, source.client_key_data]
    for resource in mocks.resources:
        for text in plain_strings(resource.inputs):
            assert not any(h in text for h in hidden), (resource.typ, resource.name)
    for name, (value, secret) in exports.items():
        if not secret:
            assert not any(h in str(value) for h in hidden), name


def test_example_config_reaches_the_box_and_the_platform(program):
    mocks, _, _ = program
    server = mocks.one("hcloud:index/server:Server", "ecstatic-server")
    assert (server.inputs["serverType"], server.inputs["image"], server.inputs["location"]) == (
        "cx33", "debian-12", "fsn1"
    )
    assert server.inputs["name"] == "ecstatic-example"
    assert mocks.one("hcloud:index/volume:Volume", "ecstatic-state").inputs["size"] == 100
    assert not [r for r in mocks.of_type("hcloud:index/server:Server") if "agent" in r.name]
    (firewall,) = mocks.of_type("hcloud:index/firewall:Firewall")
    assert sorted(r["port"] for r in firewall.inputs["rules"]) == ["22", "443", "80"]
    namespaces = mocks.of_type("kubernetes:core/v1:Namespace")
    assert [n.inputs["metadata"]["name"] for n in namespaces] == ["ecstatic", "ecstatic-builds"]


def test_the_network_guard_does_catch_the_real_fetcher(no_network):
    # Negative control for `no_network`: the real asyncssh source trips it at once.
    import asyncio

    import asyncssh
    from components.kubeconfig import SshKubeconfigSource

    key = asyncssh.generate_private_key("ssh-ed25519")
    request = KubeconfigRequest(
        host="127.0.0.1", client_private_key=key.export_private_key("openssh").decode(),
        host_public_key=key.export_public_key("openssh").decode(), tunnel_port=1, timeout=5,
    )
    with pytest.raises(AssertionError, match="tried to connect"):
        asyncio.run(SshKubeconfigSource()(request))
    assert no_network
