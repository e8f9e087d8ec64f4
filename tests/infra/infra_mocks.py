"""Pulumi mocks for the infra tests: record every resource, fabricate provider outputs."""

from __future__ import annotations

import itertools
import json
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pulumi
import yaml
from pulumi.runtime import rpc

PROJECT = "ecstatic"
PULUMI_DIR = Path(__file__).resolve().parents[2] / "infra" / "pulumi"
EXAMPLE_STACK = PULUMI_DIR / "Pulumi.example.yaml"
MOCK_IPV4 = "203.0.113.10"
MOCK_IPV6_NETWORK = "2001:db8:10::/64"
MOCK_SERVER_IPV6 = "2001:db8:10::1"


@dataclass
class Recorded:
    """One resource the program registered: its inputs (secrets still wrapped) and outputs."""

    typ: str
    name: str
    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    provider: str | None


class InfraMocks(pulumi.runtime.Mocks):
    """Numeric ids (hcloud ids are integers), real ED25519 keys, camelCase outputs.

    Provider outputs come back *plain*, never marked secret: the program must do its own
    wrapping, and the tests check that it does.
    """

    def __init__(self) -> None:
        self.resources: list[Recorded] = []
        self._ids = itertools.count(4001)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        resource_id = str(next(self._ids))
        outputs = dict(args.inputs)
        if args.typ == "tls:index/privateKey:PrivateKey":
            key = asyncssh.generate_private_key("ssh-ed25519")
            outputs["privateKeyOpenssh"] = key.export_private_key("openssh").decode()
            # The tls provider ends the public key with a newline.
            outputs["publicKeyOpenssh"] = key.export_public_key("openssh").decode()
        elif args.typ == "random:index/randomPassword:RandomPassword":
            alphabet = string.ascii_letters + string.digits
            length = int(args.inputs["length"])
            outputs["result"] = "".join(secrets.choice(alphabet) for _ in range(length))
        elif args.typ == "hcloud:index/primaryIp:PrimaryIp":
            outputs["ipAddress"] = MOCK_IPV4 if args.inputs["type"] == "ipv4" else MOCK_IPV6_NETWORK
        elif args.typ == "hcloud:index/server:Server":
            outputs.update(ipv4Address=MOCK_IPV4, ipv6Address=MOCK_SERVER_IPV6, status="running")
        elif args.typ == "hcloud:index/volume:Volume":
            outputs["linuxDevice"] = f"/dev/disk/by-id/scsi-0HC_Volume_{resource_id}"
        self.resources.append(
            Recorded(args.typ, args.name, resource_id, args.inputs, outputs, args.provider)
        )
        return [resource_id, outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}

    def of_type(self, typ: str) -> list[Recorded]:
        """Every recorded resource of one type token."""
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name: str) -> Recorded:
        """The recorded resource with that type and name."""
        found = [r for r in self.of_type(typ) if r.name == name]
        assert len(found) == 1, f"{typ} {name}: {[r.name for r in self.of_type(typ)]}"
        return found[0]


def is_secret(value: Any) -> bool:
    """True for an input the SDK sent as a secret."""
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def unwrap(value: Any) -> Any:
    """The plain value of a (possibly secret) input."""
    return value["value"] if is_secret(value) else value


def plain_strings(value: Any):
    """Every string in ``value`` that is NOT inside a secret."""
    if is_secret(value):
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from plain_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from plain_strings(item)


def example_config() -> dict[str, str]:
    """Pulumi.example.yaml as the CLI hands it to a program: strings, JSON for objects."""
    document = yaml.safe_load(EXAMPLE_STACK.read_text())
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in document["config"].items()
    }


def set_config(values: dict[str, str], secret_keys: list[str] | None = None) -> None:
    """Make ``values`` the whole stack config."""
    pulumi.runtime.set_all_config(values, secret_keys or [])
