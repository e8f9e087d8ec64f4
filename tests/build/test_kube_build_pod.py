"""The build Job's pod, exactly as ``kube_job.job_manifest`` makes it, played by podman.

The builder image (infra/images/builder) builds a real Hugo site and a real MkDocs
Material site with no network at all; the published files land in a host directory
through the ``collect`` container, as they would on the exchange volume.

Adaptations for podman 4.3 (``adapt``), nothing else changes:

1. The exchange claim becomes one hostPath volume per ``subPath`` mount, at the very
   directory the kubelet would mount (podman ignores ``subPath`` on hostPath volumes).
2. emptyDir volumes get a per-run name (podman turns them into named volumes, shared by
   name across pods) and are removed afterwards.
3. ``--network none`` instead of the deny-all NetworkPolicy: no interface but loopback.
4. podman's init-container type ``always`` (a pod annotation), so the finished ``build``
   container stays to be inspected (podman removes a "once" init container when it ends).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import time
from pathlib import Path

import pytest
import yaml

from services.build.kube_job import (
    BUILD_CONTAINER,
    COLLECT_CONTAINER,
    OUT_DIR,
    SOURCE_DIR,
    JobSettings,
    job_manifest,
)
from services.build.limits import BuildLimits
from services.core.deploy_config import DeployConfig
from tests.container.images import build_seconds, ensure_one
from tests.container.podman import podman

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

GIT_UID = 10001  # the collect container runs as git's uid (the Ecstatic image's user)
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Proves from inside: no token, nothing of Ecstatic's in the environment, no network.
PROBES = (
    f"test ! -e {TOKEN_DIR} && echo no-token; "
    "env | grep -c ECSTATIC_ || echo no-ecstatic-env; "
    'test "$(ls /sys/class/net)" = lo && echo loopback-only; '
)
SITES = {
    "hugo": (
        "hugo --minify",
        "public",
        {
            "hugo.toml": 'baseURL = "https://example.org/"\ntitle = "Kube Build"\n',
            "layouts/index.html": "<h1>{{ .Site.Title }}</h1>{{ range .Site.RegularPages }}"
            '<a href="{{ .RelPermalink }}">{{ .Title }}</a>{{ end }}',
            "layouts/_default/single.html": "<h2>{{ .Title }}</h2>{{ .Content }}",
            "content/hello.md": '---\ntitle: "Hello"\n---\nHello from a Job.\n',
        },
        ["index.html", "hello/index.html"],
    ),
    "mkdocs": (
        "mkdocs build",
        "site",
        {
            "mkdocs.yml": "site_name: Kube Docs\ntheme:\n  name: material\n",
            "docs/index.md": "# Kube Docs\n\nBuilt by a Job.\n",
        },
        ["index.html", "404.html"],
    ),
}


@pytest.fixture(scope="module")
def image() -> str:
    started = time.monotonic()
    ref = ensure_one("builder")
    print(
        f"builder image {ref}: built in {build_seconds.get(ref.split(':')[0], 0):.0f} s "
        f"(ensure took {time.monotonic() - started:.0f} s)"
    )
    return ref


def adapt(manifest: dict, exchange: Path, suffix: str) -> dict:
    """The Job's pod template as a Pod podman can play (see the module docstring)."""
    spec = copy.deepcopy(manifest["spec"]["template"]["spec"])
    volumes = [v for v in spec["volumes"] if "persistentVolumeClaim" not in v]
    for v in volumes:
        if "emptyDir" in v:
            old = v["name"]
            v["name"] = f"{old}-{suffix}"
            for c in [*spec["initContainers"], *spec["containers"]]:
                for m in c["volumeMounts"]:
                    if m["name"] == old:
                        m["name"] = v["name"]
    for c in [*spec["initContainers"], *spec["containers"]]:
        for i, m in enumerate(c["volumeMounts"]):
            if "subPath" in m:
                name = f"exchange-{c['name']}-{i}"
                path = str(exchange / m.pop("subPath"))
                volumes.append({"name": name, "hostPath": {"path": path, "type": "Directory"}})
                m["name"] = name
    spec["volumes"] = volumes
    name = f"{manifest['metadata']['name']}-{suffix}"
    meta = {"name": name, "annotations": {"io.podman.annotations.init.container.type": "always"}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def exited(container: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(podman("inspect", "--format", "{{json .State}}", container).stdout)
        if state["Status"] == "exited":
            return state
        time.sleep(0.5)
    raise AssertionError(f"{container} still running after {timeout} s")


@pytest.mark.parametrize("generator", list(SITES))
def test_the_job_pod_builds_a_real_site_with_no_token_and_no_network(image, tmp_path, generator):
    command, publish, files, expected = SITES[generator]
    job = f"build-{secrets.token_hex(6)}"
    exchange = tmp_path / "exchange"
    for rel, text in files.items():
        (exchange / job / SOURCE_DIR / rel).parent.mkdir(parents=True, exist_ok=True)
        (exchange / job / SOURCE_DIR / rel).write_text(text)
    (exchange / job / OUT_DIR).mkdir()
    os.chown(exchange / job / OUT_DIR, GIT_UID, GIT_UID)  # git made it; collect is git
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o005 if path.is_dir() else 0o644)
    settings = JobSettings("ecstatic-builds", image, "builder", "build-exchange", GIT_UID)
    manifest = job_manifest(
        job,
        f"{PROBES}{command}",
        publish,
        {"SITE_KIND": generator},
        BuildLimits(timeout_seconds=300),
        settings,
    )
    suffix = secrets.token_hex(3)
    pod = adapt(manifest, exchange, suffix)
    played = tmp_path / "pod.yaml"
    played.write_text(yaml.safe_dump(pod))
    name = pod["metadata"]["name"]
    try:
        podman("kube", "play", "--network", "none", str(played), timeout=300, check=False)
        build = exited(f"{name}-{BUILD_CONTAINER}")
        log = podman("logs", f"{name}-{BUILD_CONTAINER}", check=False)
        output = log.stdout + log.stderr
        assert build["ExitCode"] == 0, output
        collect = exited(f"{name}-{COLLECT_CONTAINER}")
        assert collect["ExitCode"] == 0
        for container in (BUILD_CONTAINER, COLLECT_CONTAINER):
            mounts = json.loads(
                podman("inspect", "--format", "{{json .Mounts}}", f"{name}-{container}").stdout
            )
            assert not [m for m in mounts if m["Destination"].startswith("/var/run/secrets")]
        for probe in ("no-token", "no-ecstatic-env", "loopback-only"):
            assert probe in output.splitlines(), output
    finally:
        podman("kube", "down", str(played), check=False)
        for v in pod["spec"]["volumes"]:
            if "emptyDir" in v:
                podman("volume", "rm", "--force", v["name"], check=False)
    site = exchange / job / OUT_DIR / "site"
    for rel in expected:
        assert (site / rel).is_file(), sorted(str(p) for p in site.rglob("*"))
        assert (site / rel).stat().st_uid == GIT_UID  # git can read and delete it
    if generator == "hugo":
        assert "<h1>Kube Build</h1>" in (site / "index.html").read_text()
    else:
        assert "material" in (site / "index.html").read_text().lower()
    # The checkout is never written: the build worked on its own copy.
    assert sorted(p.name for p in (exchange / job / SOURCE_DIR).iterdir()) == sorted(
        {rel.split("/")[0] for rel in files}
    )


def test_declared_generator_versions_are_the_images(image):
    found = {}
    for name, argv in {"hugo": ["hugo", "version"], "mkdocs": ["mkdocs", "--version"]}.items():
        out = podman("run", "--rm", "--network", "none", image, *argv).stdout
        found[name] = out
    for name, version in DeployConfig().generator_versions().items():
        assert version in found[name], (name, found[name])
