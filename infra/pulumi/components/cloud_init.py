"""The #cloud-config user data of the k3s server and its agents: pure functions of plain values.

What the box does on first boot, in order: install packages (unattended-upgrades on),
write the host key and root's authorized keys, then run the bootstrap script: keep pods away
from the metadata service, mount the state volume (server only), install the pinned k3s
binary after checking its SHA-256, and start k3s. There is no get.k3s.io install script: it
would be a second, unverified download, so the systemd unit it would write is written here.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

STATE_MOUNT = "/var/lib/ecstatic"  # the Hetzner volume: every byte of state lives under it
K3S_DATA_DIR = f"{STATE_MOUNT}/k3s"  # datastore, CA, tokens, encryption config, images
LOCAL_STORAGE_DIR = f"{STATE_MOUNT}/storage"  # local-path PersistentVolumes
# Build Jobs' source and output, shared by git and the builds namespace (k8s_builds.py):
# anyone may add an entry (git's uid and the collect step), none may list or remove others'.
BUILD_EXCHANGE_DIR = f"{STATE_MOUNT}/build-exchange"
NODE_PASSWORD_DIR = f"{STATE_MOUNT}/rancher-node"  # /etc/rancher/node, see _server_runcmd
K3S_CONFIG_PATH = "/etc/rancher/k3s/config.yaml"
MOUNT_SCRIPT = "/usr/local/sbin/ecstatic-mount-state"
INSTALL_SCRIPT = "/usr/local/sbin/ecstatic-install-k3s"
BOOTSTRAP_SCRIPT = "/usr/local/sbin/ecstatic-bootstrap"
STATE_NODE_LABEL = "ecstatic/state-volume=true"  # the node whose local-path lands on the volume

_MOUNT_SH = """#!/bin/sh
# ecstatic-mount-state DEVICE MOUNTPOINT FSTAB: mount the state volume, formatting it only if blank.
set -eu
device=$1 mountpoint=$2 fstab=$3
# The volume is attached right after the server is created: wait for it to show up.
waited=0
while [ ! -b "$device" ]; do
  if [ "$waited" -ge 600 ]; then echo "volume $device did not appear in 600s" >&2; exit 1; fi
  sleep 2
  waited=$((waited + 2))
done
# blkid -p exits 2 only when it finds no signature at all; anything else is not "blank".
status=0
blkid -p "$device" >/dev/null 2>&1 || status=$?
if [ "$status" -eq 2 ]; then
  mkfs.ext4 -q -L ecstatic-state "$device"
elif [ "$status" -ne 0 ]; then
  echo "blkid could not probe $device (exit $status): not formatting it" >&2
  exit 1
fi
mkdir -p "$mountpoint"
line="$device $mountpoint ext4 defaults,nofail,discard 0 2"
grep -q "^$device " "$fstab" || echo "$line" >>"$fstab"
mountpoint -q "$mountpoint" || mount "$mountpoint"
"""

_INSTALL_SH = """#!/bin/sh
# ecstatic-install-k3s URL SHA256 BINDIR: install the k3s binary only if its checksum matches.
set -eu
url=$1 expected=$2 bindir=$3
download=$(mktemp)
trap 'rm -f "$download"' EXIT
curl -fsSL --retry 10 --retry-delay 5 --retry-all-errors -o "$download" "$url"
if ! echo "$expected  $download" | sha256sum -c --status; then
  echo "k3s from $url does not have the pinned SHA-256 $expected: not installing it" >&2
  exit 1
fi
install -m 0755 "$download" "$bindir/k3s"
for tool in kubectl crictl ctr; do ln -sf k3s "$bindir/$tool"; done
"""

_UNIT = """[Unit]
Description=k3s {role} (Ecstatic)
Documentation=https://docs.k3s.io
Wants=network-online.target
After=network-online.target ecstatic-metadata-guard.service
{requires}
[Service]
Type=notify
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/k3s {role}
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s

[Install]
WantedBy=multi-user.target
"""

# Hetzner's metadata service hands out this box's user data (host key, cluster token) to
# anything on the box that asks: forwarded traffic (every pod) must not reach it.
_METADATA_GUARD_NFT = """table inet ecstatic_metadata_guard
delete table inet ecstatic_metadata_guard
table inet ecstatic_metadata_guard {
  chain forward {
    type filter hook forward priority -10; policy accept;
    ip daddr 169.254.169.254 drop
  }
}
"""

_METADATA_GUARD_UNIT = """[Unit]
Description=Keep pods away from the Hetzner metadata service
Before=k3s.service k3s-agent.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f /etc/ecstatic/metadata-guard.nft

[Install]
WantedBy=multi-user.target
"""

# apt reads apt.conf.d in order: 52 overrides the package's own 20auto-upgrades.
_AUTO_UPGRADES = """APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
APT::Periodic::AutocleanInterval "7";
"""
AUTO_UPGRADES_PATH = "/etc/apt/apt.conf.d/52ecstatic-auto-upgrades"


@dataclass(frozen=True)
class K3sRelease:
    """A pinned k3s release: the binary for ``arch`` must have SHA-256 ``sha256``."""

    version: str
    sha256: str
    arch: str = "amd64"

    @property
    def url(self) -> str:
        """The GitHub release download of the binary (``+`` escaped as in release URLs)."""
        name = "k3s" if self.arch == "amd64" else f"k3s-{self.arch}"
        tag = self.version.replace("+", "%2B")
        return f"https://github.com/k3s-io/k3s/releases/download/{tag}/{name}"


@dataclass(frozen=True)
class NodeIdentity:
    """The SSH side of a node: its host key pair and the keys that may log in as root."""

    host_private_key: str  # OpenSSH ED25519 private key
    host_public_key: str  # "ssh-ed25519 AAAA..."
    authorized_keys: Sequence[str]


def volume_device(volume_id: int | str) -> str:
    """The stable device path of a Hetzner volume."""
    return f"/dev/disk/by-id/scsi-0HC_Volume_{volume_id}"


def render_server(
    *,
    release: K3sRelease,
    identity: NodeIdentity,
    cluster_token: str,
    private_ip: str,
    volume_id: int | str,
    node_name: str,
) -> str:
    """User data of the k3s server: the one node that mounts the state volume.

    ``node_name`` must stay the same across replaced servers: local-path volumes are bound
    to the node they were made on.
    """
    k3s_config = {
        "node-name": node_name,
        "data-dir": K3S_DATA_DIR,
        "default-local-storage-path": LOCAL_STORAGE_DIR,
        "disable": ["traefik"],  # Caddy takes 80 and 443
        "secrets-encryption": True,
        "write-kubeconfig-mode": "0600",
        "token": cluster_token,
        "node-ip": private_ip,  # agents and flannel use the private network
        "advertise-address": private_ip,
        "node-label": [STATE_NODE_LABEL],
    }
    # systemd refuses to start k3s without the volume, rather than on an empty root disk.
    unit = _UNIT.format(
        role="server",
        requires=f"RequiresMountsFor={STATE_MOUNT}\nAssertPathIsMountPoint={STATE_MOUNT}\n",
    )
    runcmd = [
        [MOUNT_SCRIPT, volume_device(volume_id), STATE_MOUNT, "/etc/fstab"],
        ["mkdir", "-p", K3S_DATA_DIR, LOCAL_STORAGE_DIR, NODE_PASSWORD_DIR, "/etc/rancher"],
        ["install", "-d", "-m", "1733", BUILD_EXCHANGE_DIR],
        # k3s refuses a node whose password file changed: keep it with the data, so a
        # replaced server comes back as the same node.
        ["ln", "-sfn", NODE_PASSWORD_DIR, "/etc/rancher/node"],
    ]
    return _render(release, identity, k3s_config, "k3s", unit, runcmd, server=True)


def render_agent(
    *,
    release: K3sRelease,
    identity: NodeIdentity,
    cluster_token: str,
    private_ip: str,
    server_url: str,
) -> str:
    """User data of a k3s agent that joins ``server_url`` over the private network."""
    k3s_config = {
        "server": server_url,
        "token": cluster_token,
        "node-ip": private_ip,
        # A replaced agent registers as a new node instead of clashing with the old password.
        "with-node-id": True,
    }
    unit = _UNIT.format(role="agent", requires="")
    return _render(release, identity, k3s_config, "k3s-agent", unit, [], server=False)


def _render(
    release: K3sRelease,
    identity: NodeIdentity,
    k3s_config: dict,
    service: str,
    unit: str,
    prepare: list[list[str]],
    *,
    server: bool,
) -> str:
    steps = [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "ecstatic-metadata-guard.service"],
        *prepare,
        [INSTALL_SCRIPT, release.url, release.sha256, "/usr/local/bin"],
        ["systemctl", "enable", "--now", f"{service}.service"],
    ]
    # One script under `set -e`, not one runcmd line per step: cloud-init's runcmd goes on
    # after a failed line, and k3s must never start after a failed mount or checksum.
    bootstrap = "#!/bin/sh\nset -eu\n" + "".join(shlex.join(step) + "\n" for step in steps)
    files = [
        _file(K3S_CONFIG_PATH, yaml.safe_dump(k3s_config, sort_keys=False), "0600"),
        _file(f"/etc/systemd/system/{service}.service", unit, "0644"),
        _file(INSTALL_SCRIPT, _INSTALL_SH, "0755"),
        _file("/etc/ecstatic/metadata-guard.nft", _METADATA_GUARD_NFT, "0644"),
        _file("/etc/systemd/system/ecstatic-metadata-guard.service", _METADATA_GUARD_UNIT, "0644"),
        _file(AUTO_UPGRADES_PATH, _AUTO_UPGRADES, "0644"),
        _file(BOOTSTRAP_SCRIPT, bootstrap, "0700"),
    ]
    if server:
        files.append(_file(MOUNT_SCRIPT, _MOUNT_SH, "0755"))
    document = {
        "package_update": True,
        "package_upgrade": True,
        "packages": ["unattended-upgrades", "curl", "ca-certificates", "nftables"],
        "ssh_pwauth": False,
        "disable_root": False,  # the program and the admin log in as root, with keys only
        "users": [{"name": "root", "ssh_authorized_keys": list(identity.authorized_keys)}],
        # The program pins this host key: the first connection is verified, not trusted.
        "ssh_deletekeys": True,
        "ssh_genkeytypes": ["ed25519"],  # already written above, so nothing is generated
        "ssh_keys": {
            "ed25519_private": identity.host_private_key,
            "ed25519_public": identity.host_public_key,
        },
        "write_files": files,
        "runcmd": [[BOOTSTRAP_SCRIPT]],
    }
    return "#cloud-config\n" + yaml.dump(document, Dumper=_BlockDumper, sort_keys=False)


def _file(path: str, content: str, permissions: str) -> dict:
    return {"path": path, "content": content, "owner": "root:root", "permissions": permissions}


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (scripts, keys) as literal blocks, readable on the box."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)
