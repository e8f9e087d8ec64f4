"""The rendered user data: cloud-init's own schema, and the boot steps that guard the data."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import asyncssh
import pytest
import yaml
from components import cloud_init
from components.cloud_init import K3sRelease, NodeIdentity, render_agent, render_server

VERSION = "v1.36.5+k3s1"


def identity() -> NodeIdentity:
    host = asyncssh.generate_private_key("ssh-ed25519")
    admin = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    return NodeIdentity(
        host_private_key=host.export_private_key("openssh").decode(),
        host_public_key=host.export_public_key("openssh").decode().strip(),
        authorized_keys=[admin],
    )


def server_user_data(release: K3sRelease | None = None, **overrides) -> str:
    args = dict(
        release=release or K3sRelease(VERSION, "a" * 64),
        identity=identity(),
        cluster_token="t0ken",
        private_ip="10.0.1.10",
        volume_id=424242,
        node_name="ecstatic-prod",
    )
    args.update(overrides)
    return render_server(**args)


def agent_user_data() -> str:
    return render_agent(
        release=K3sRelease(VERSION, "b" * 64), identity=identity(), cluster_token="t0ken",
        private_ip="10.0.1.11", server_url="https://10.0.1.10:6443",
    )


def files_of(user_data: str) -> dict[str, dict]:
    return {f["path"]: f for f in yaml.safe_load(user_data)["write_files"]}


def cloud_init_schema(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "user-data.yaml"
    path.write_text(text)
    return subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("render", [server_user_data, agent_user_data], ids=["server", "agent"])
def test_user_data_is_valid_for_cloud_inits_own_schema(tmp_path, render):
    text = render()
    assert text.startswith("#cloud-config\n")
    result = cloud_init_schema(tmp_path, text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_the_schema_check_does_reject_a_broken_document(tmp_path):
    # Negative control: the same document with one wrong type must fail.
    document = yaml.safe_load(server_user_data())
    document["ssh_pwauth"] = {"not": "a boolean"}
    result = cloud_init_schema(tmp_path, "#cloud-config\n" + yaml.safe_dump(document))
    assert result.returncode != 0
    assert "ssh_pwauth" in result.stdout + result.stderr


def test_k3s_server_config_disables_traefik_encrypts_secrets_and_keeps_state_on_the_volume():
    config = yaml.safe_load(files_of(server_user_data())[cloud_init.K3S_CONFIG_PATH]["content"])
    assert config["disable"] == ["traefik"]
    assert config["secrets-encryption"] is True
    assert config["write-kubeconfig-mode"] == "0600"
    assert config["data-dir"].startswith(cloud_init.STATE_MOUNT + "/")
    assert config["default-local-storage-path"].startswith(cloud_init.STATE_MOUNT + "/")
    assert config["node-name"] == "ecstatic-prod"
    assert config["token"] == "t0ken"
    assert files_of(server_user_data())[cloud_init.K3S_CONFIG_PATH]["permissions"] == "0600"


def test_k3s_never_starts_without_the_volume_mounted():
    unit = files_of(server_user_data())["/etc/systemd/system/k3s.service"]["content"]
    assert f"RequiresMountsFor={cloud_init.STATE_MOUNT}" in unit
    assert f"AssertPathIsMountPoint={cloud_init.STATE_MOUNT}" in unit
    assert "ExecStart=/usr/local/bin/k3s server" in unit


def test_bootstrap_mounts_the_volume_then_installs_the_checked_binary_then_starts_k3s():
    release = K3sRelease(VERSION, "c" * 64)
    user_data = server_user_data(release=release)
    assert yaml.safe_load(user_data)["runcmd"] == [[cloud_init.BOOTSTRAP_SCRIPT]]
    script = files_of(user_data)[cloud_init.BOOTSTRAP_SCRIPT]["content"].splitlines()
    assert script[:2] == ["#!/bin/sh", "set -eu"]  # a failed step stops everything after it
    mount = next(i for i, line in enumerate(script) if line.startswith(cloud_init.MOUNT_SCRIPT))
    install = next(i for i, line in enumerate(script) if line.startswith(cloud_init.INSTALL_SCRIPT))
    start = script.index("systemctl enable --now k3s.service")
    assert mount < install < start
    assert script[mount].split() == [
        cloud_init.MOUNT_SCRIPT, "/dev/disk/by-id/scsi-0HC_Volume_424242",
        cloud_init.STATE_MOUNT, "/etc/fstab",
    ]
    assert script[install].split() == [
        cloud_init.INSTALL_SCRIPT,
        "https://github.com/k3s-io/k3s/releases/download/v1.36.5%2Bk3s1/k3s",
        "c" * 64, "/usr/local/bin",
    ]


def test_arm64_release_downloads_the_arm64_binary():
    assert K3sRelease(VERSION, "d" * 64, "arm64").url.endswith("/v1.36.5%2Bk3s1/k3s-arm64")


def test_unattended_security_upgrades_are_on():
    user_data = server_user_data()
    assert "unattended-upgrades" in yaml.safe_load(user_data)["packages"]
    periodic = files_of(user_data)[cloud_init.AUTO_UPGRADES_PATH]["content"]
    assert 'APT::Periodic::Update-Package-Lists "1";' in periodic
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic


def test_host_key_and_root_keys_are_installed_and_passwords_are_off():
    node = identity()
    document = yaml.safe_load(server_user_data(identity=node))
    assert document["ssh_keys"] == {
        "ed25519_private": node.host_private_key, "ed25519_public": node.host_public_key,
    }
    assert document["ssh_deletekeys"] is True
    assert document["ssh_pwauth"] is False
    (root,) = document["users"]
    assert root == {"name": "root", "ssh_authorized_keys": list(node.authorized_keys)}


def test_agent_joins_the_server_over_the_private_network_without_the_volume():
    user_data = agent_user_data()
    config = yaml.safe_load(files_of(user_data)[cloud_init.K3S_CONFIG_PATH]["content"])
    assert config["server"] == "https://10.0.1.10:6443"
    assert config["node-ip"] == "10.0.1.11"
    assert cloud_init.MOUNT_SCRIPT not in files_of(user_data)
    unit = files_of(user_data)["/etc/systemd/system/k3s-agent.service"]["content"]
    assert "ExecStart=/usr/local/bin/k3s agent" in unit


def test_pods_are_kept_from_the_metadata_service():
    rules = files_of(server_user_data())["/etc/ecstatic/metadata-guard.nft"]["content"]
    assert "hook forward" in rules and "ip daddr 169.254.169.254 drop" in rules


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_every_script_parses(tmp_path, shell):
    for path, entry in files_of(server_user_data()).items():
        if entry["content"].startswith("#!/bin/sh"):
            script = tmp_path / Path(path).name
            script.write_text(entry["content"])
            result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
            assert result.returncode == 0, f"{path}: {result.stderr}"


# -- the scripts themselves, run with stand-ins for curl, blkid, mkfs and mount ----------------


def write_script(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def script_of(path: str, tmp_path: Path) -> Path:
    return write_script(tmp_path, Path(path).name, files_of(server_user_data())[path]["content"])


@pytest.fixture
def stubs(tmp_path) -> Path:
    bin_dir = tmp_path / "stubs"
    bin_dir.mkdir()
    return bin_dir


def run(script: Path, *args: str, stubs: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", **env}
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=environ,
                          timeout=60)


@pytest.mark.parametrize("matches", [True, False], ids=["pinned-checksum", "other-checksum"])
def test_install_script_enforces_the_checksum(tmp_path, stubs, matches):
    release_binary = tmp_path / "k3s-from-github"
    release_binary.write_bytes(b"#!/bin/sh\necho k3s\n")
    # curl stand-in: writes the "downloaded" file where -o says.
    fake_curl = f'#!/bin/sh\nwhile [ "$1" != -o ]; do shift; done\ncp {release_binary} "$2"\n'
    write_script(stubs, "curl", fake_curl)
    digest = hashlib.sha256(release_binary.read_bytes()).hexdigest() if matches else "0" * 64
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = script_of(cloud_init.INSTALL_SCRIPT, tmp_path)
    result = run(script, "https://example.invalid/k3s", digest, str(bindir), stubs=stubs)
    if matches:
        assert result.returncode == 0, result.stderr
        assert (bindir / "k3s").read_bytes() == release_binary.read_bytes()
        assert os.readlink(bindir / "kubectl") == "k3s"
    else:
        assert result.returncode != 0
        assert "does not have the pinned SHA-256" in result.stderr
        assert not (bindir / "k3s").exists()


@pytest.fixture
def volume(tmp_path) -> Path:
    # A block special file (no disk behind it): enough for the script's `-b` check.
    device = tmp_path / "scsi-0HC_Volume_1"
    os.mknod(device, 0o600 | stat.S_IFBLK, os.makedev(7, 254))
    return device


@pytest.fixture
def disk_tools(stubs, tmp_path) -> Path:
    calls = tmp_path / "calls"
    for tool in ("mkfs.ext4", "mount"):
        write_script(stubs, tool, f'#!/bin/sh\necho "{tool} $*" >>{calls}\n')
    write_script(stubs, "blkid", '#!/bin/sh\nexit "$BLKID_STATUS"\n')
    write_script(stubs, "mountpoint", "#!/bin/sh\nexit 1\n")  # not mounted yet
    return calls


@pytest.mark.parametrize(
    ("blkid_status", "formats"), [("2", True), ("0", False)], ids=["blank", "has-filesystem"]
)
def test_mount_script_formats_only_a_blank_volume(tmp_path, stubs, volume, disk_tools,
                                                  blkid_status, formats):
    fstab, mountpoint = tmp_path / "fstab", tmp_path / "state"
    fstab.write_text("# fstab\n")
    script = script_of(cloud_init.MOUNT_SCRIPT, tmp_path)
    for _ in range(2):  # a second boot must not add a second line
        result = run(script, str(volume), str(mountpoint), str(fstab), stubs=stubs,
                     BLKID_STATUS=blkid_status)
        assert result.returncode == 0, result.stderr
    calls = disk_tools.read_text().splitlines()
    assert (f"mkfs.ext4 -q -L ecstatic-state {volume}" in calls) is formats
    assert f"mount {mountpoint}" in calls
    assert fstab.read_text().count(f"{volume} {mountpoint} ext4") == 1


def test_mount_script_refuses_to_format_when_it_cannot_tell(tmp_path, stubs, volume, disk_tools):
    fstab = tmp_path / "fstab"
    fstab.write_text("")
    script = script_of(cloud_init.MOUNT_SCRIPT, tmp_path)
    result = run(script, str(volume), str(tmp_path / "state"), str(fstab), stubs=stubs,
                 BLKID_STATUS="8")
    assert result.returncode != 0
    assert "not formatting it" in result.stderr
    assert not disk_tools.exists()  # neither mkfs nor mount ran
