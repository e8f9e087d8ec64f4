"""testinfra against a live production box, after `pulumi up` (never run without one).

    pytest -m host tests/host --hosts=ssh://root@SERVER_IP

Checks on the server what the Pulumi program declares: the state volume is mounted where
k3s keeps everything, k3s runs with Traefik off, unattended security upgrades are on, SSH
takes keys only, and every Ecstatic pod is ready, non-root, on a read-only root.
"""

from __future__ import annotations

import json

import pytest

from components.cloud_init import AUTO_UPGRADES_PATH, K3S_DATA_DIR, STATE_MOUNT
from services.targets import processes

pytestmark = pytest.mark.host

NAMESPACE = "ecstatic"


def test_state_lives_on_the_mounted_volume(host):
    mount = host.mount_point(STATE_MOUNT)
    assert mount.exists
    assert mount.device.startswith("/dev/")
    assert host.file(K3S_DATA_DIR).is_directory


def test_k3s_runs_without_traefik(host):
    assert host.service("k3s").is_running
    assert host.service("k3s").is_enabled
    pods = host.check_output("k3s kubectl get pods -n kube-system -o name")
    assert "traefik" not in pods


def test_security_upgrades_install_themselves(host):
    assert host.package("unattended-upgrades").is_installed
    assert 'APT::Periodic::Unattended-Upgrade "1"' in host.file(AUTO_UPGRADES_PATH).content_string


def test_ssh_takes_keys_only(host):
    settings = host.check_output("sshd -T")
    assert "passwordauthentication no" in settings


def test_every_ecstatic_pod_is_ready_non_root_and_read_only(host):
    pods = json.loads(host.check_output(f"k3s kubectl get pods -n {NAMESPACE} -o json"))["items"]
    names = {pod["metadata"]["labels"].get("app.kubernetes.io/name") for pod in pods}
    assert {p.name for p in processes(embedded=False)} <= names
    for pod in pods:
        spec = pod["spec"]
        assert spec.get("automountServiceAccountToken") is False, pod["metadata"]["name"]
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context.get("runAsNonRoot") or context.get("runAsUser", 0) != 0
        ready = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        assert ready.get("Ready") == "True", pod["metadata"]["name"]
