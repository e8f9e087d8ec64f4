"""config.py: defaults, checks, secrets, and Pulumi.example.yaml documenting every knob."""

from __future__ import annotations

import json
import re

import config
import pulumi
import pytest
import yaml

from tests.infra.infra_mocks import EXAMPLE_STACK, PROJECT, example_config, set_config


def load(values: dict[str, object], secret_keys: tuple[str, ...] = ()) -> config.StackConfig:
    """Load the config from ``values`` (unprefixed keys), as the CLI would pass them."""
    set_config(
        {f"{PROJECT}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()},
        [f"{PROJECT}:{k}" for k in secret_keys],
    )
    return config.load()


def required(**overrides: object) -> dict[str, object]:
    values = {key.split(":", 1)[1]: yaml.safe_load(raw) for key, raw in example_config().items()
              if key.split(":", 1)[1] in config.REQUIRED}
    values.update(overrides)
    return values


def resolve(output: pulumi.Output) -> tuple[object, bool]:
    """(value, is it secret) of an Output, awaited the way the program's loop would."""
    result = {}

    async def both():
        result["value"], result["secret"] = await output.future(), await output.is_secret()

    pulumi.runtime.test(lambda: both())()
    return result["value"], result["secret"]


@pytest.fixture(autouse=True)
def _mocks(pulumi_mocks):
    return pulumi_mocks


def test_only_the_required_keys_gives_every_default():
    cfg = load(required())
    assert cfg.hetzner.server_type == config.DEFAULTS["serverType"]
    assert cfg.hetzner.server_image == "debian-12"
    assert cfg.hetzner.network_zone == "eu-central"
    assert cfg.hetzner.node_count == 0
    assert cfg.access.cdn_edge_cidrs == ()
    assert cfg.access.kube_tunnel_port == config.DEFAULTS["kubeTunnelPort"]
    assert cfg.k3s.version == config.DEFAULTS["k3sVersion"]
    assert cfg.k3s.sha256 == config.DEFAULTS["k3sSha256"]
    assert cfg.platform.acme_ca is None and cfg.platform.storage_class is None
    assert cfg.platform.clickhouse_url is None and cfg.platform.clickhouse_password is None
    assert cfg.platform.image == config.DEFAULTS["image"]


def test_the_example_stack_file_documents_every_knob_with_its_default():
    text = EXAMPLE_STACK.read_text()
    values = yaml.safe_load(text)["config"]
    keys = {key.split(":", 1)[1] for key in values}
    for key, default in config.DEFAULTS.items():
        if default is None:  # optional, no default: shown commented out
            assert re.search(rf"^\s*# {PROJECT}:{key}: \S", text, re.MULTILINE), key
        else:
            assert values[f"{PROJECT}:{key}"] == default, key
    assert set(config.REQUIRED) <= keys
    assert keys == {k for k, v in config.DEFAULTS.items() if v is not None} | set(config.REQUIRED)


def test_the_example_stack_file_holds_no_secret_and_says_how_to_set_them():
    text = EXAMPLE_STACK.read_text()
    keys = {key.split(":", 1)[1] for key in yaml.safe_load(text)["config"]}
    assert not keys & set(config.SECRETS)
    for key in (*config.SECRETS, "hcloud:token"):
        assert f"pulumi config set {key} --secret" in text
    assert "BEGIN OPENSSH PRIVATE KEY" not in text


def test_clickhouse_secrets_stay_secret():
    cfg = load(
        required(clickhouseUrl="https://default@ch.example.net:8443", clickhousePassword="pw"),
        secret_keys=("clickhouseUrl", "clickhousePassword"),
    )
    assert resolve(cfg.platform.clickhouse_password) == ("pw", True)
    assert resolve(cfg.platform.clickhouse_url) == ("https://default@ch.example.net:8443", True)


def test_overrides_are_read_typed():
    cfg = load(required(
        nodeCount=2, cdnEdgeCidrs=["192.0.2.0/24", "2001:db8::/32"], volumeSizes={"releases": 50},
        replicas={"query": 2}, protectVolume=False, location="hel1", acmeCa="https://ca.test/dir",
    ))
    assert cfg.hetzner.node_count == 2 and cfg.hetzner.protect_volume is False
    assert cfg.access.cdn_edge_cidrs == ("192.0.2.0/24", "2001:db8::/32")
    assert cfg.platform.volume_sizes == {"releases": 50}
    assert cfg.platform.replicas == {"query": 2}
    assert cfg.platform.acme_ca == "https://ca.test/dir"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"adminCidrs": []}, "adminCidrs is empty"),
        ({"adminCidrs": ["0.0.0.0/0"]}, "no /0"),
        ({"adminCidrs": ["::/0"]}, "no /0"),
        ({"adminCidrs": ["198.51.100.7/24"]}, "adminCidrs"),  # host bits set
        ({"cdnEdgeCidrs": "192.0.2.0/24"}, "must be JSON"),
        ({"cdnEdgeCidrs": {"a": 1}}, "list of CIDRs"),
        ({"sshPublicKey": "not a key"}, "sshPublicKey"),
        ({"k3sSha256": "abc"}, "k3sSha256"),
        ({"k3sVersion": "v1.37.0+k3s1"}, "set k3sSha256"),
        ({"k3sVersion": "latest", "k3sSha256": "a" * 64}, "k3sVersion"),
        ({"location": "mars1"}, "location"),
        ({"nodeCount": 51}, "nodeCount"),
        ({"volumeSizeGb": 5}, "volumeSizeGb"),
        ({"volumeSizes": {"nope": 3}}, "unknown names"),
        ({"replicas": {"api": 0}}, "at least 1"),
        ({"clickhouseUrl": "https://ch.example.net"}, "clickhousePassword must be set"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(overrides, message):
    secret = tuple(k for k in overrides if k in config.SECRETS)
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        load(required(**overrides), secret_keys=secret)


@pytest.mark.parametrize("key", config.REQUIRED)
def test_required_keys_are_required(key):
    values = required()
    del values[key]
    with pytest.raises(pulumi.ConfigMissingError):
        load(values)
