"""The Platform's own Kubernetes manifests, run here with ``podman kube play``.

The Deployments, Services and ConfigMaps the Pulumi program declares for the Ecstatic
targets, Caddy and Prometheus are taken from the Pulumi mocks (exactly the inputs a
``pulumi up`` would send), written out as YAML and played by podman. Then a user is
created, a site is pushed with the real git client through Caddy, fetched through Caddy,
and its pageview read back through the query API; testinfra checks every container runs
as a non-root user on a read-only root filesystem.

Adaptations, made for this machine only (each is in ``adapt`` / ``embedded_process``):

1. Images: the locally built ones (``tests.container.images.ensure_images``): no registry
   is reachable here. Alertmanager and ClickHouse are not played: no image for either.
2. ``hostNetwork: true``, every port of the map remapped to a free 127.0.0.1 port through
   the same ``ECSTATIC_*_PORT`` contract, ``ECSTATIC_BIND_HOST=127.0.0.1`` (and the
   intake's syslog host), and ``ECSTATIC_API_URL`` on loopback: no cluster DNS here, and
   pods must never be reached on a bridge network's address. ``containerPort``s are
   dropped (podman refuses port mappings on the host network) and so is Caddy's
   ``net.ipv4.ip_unprivileged_port_start`` sysctl (a network sysctl cannot be set on
   the host's network namespace; the remapped ports are unprivileged anyway).
3. PersistentVolumeClaims become hostPath directories, one per claim, owned by the
   user the pods run as (local-path's own directories are world-writable).
4. ClickHouse: no server image can be had here, so intake and query run in ONE pod
   (``processes(embedded=True)``'s group) with the embedded engine
   (``ECSTATIC_CLICKHOUSE_URL=chdb:///var/lib/ecstatic/clickhouse`` on its own hostPath)
   instead of the two Deployments and the Secret reference.
5. Caddy gets ``services.platform.caddy.local()`` (plain HTTP on a loopback port, the
   local stack's Caddyfile, values from the ``ECSTATIC_*`` env) instead of production's
   Let's Encrypt Caddyfile: there is no ACME here. Its env gets the contract the local
   Caddyfile reads. ``ECSTATIC_SITE_SCHEME=http`` for the same reason.
6. Prometheus's config is rendered by the same ``services.platform.prometheus`` functions
   with loopback addresses and without Alertmanager.
7. Object names get a per-run suffix so runs on this shared machine never collide.

Probes are kept as declared but podman 4.3 runs none of them here (its health checks need
systemd): the test polls each pod's health URL itself.
"""

from __future__ import annotations

import copy
import os
import secrets
import time
from pathlib import Path

import pytest
import requests
import testinfra
import yaml

from services.core.config import PORT_DEFAULTS
from services.platform import caddy, prometheus
from services.targets import PLATFORM, STATE, Process, processes
from tests.container.images import ensure_images
from tests.container.podman import free_ports, podman
from tests.infra.platform_mocks import declare, of_kind, platform_args

from .stackdriver import BROWSER_UA, git, make_repo, with_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

HOME = "/var/lib/ecstatic"
PLAYED = processes(embedded=True)  # api, git, intake-query
# The platform's programs with an image built here (no Alertmanager or ClickHouse image).
PLAYED_PLATFORM = ("caddy", "prometheus")
SITE_FILES = {
    "index.html": b"<!doctype html><h1>Kube play</h1>",
    "about/index.html": b"<!doctype html><h1>About</h1>",
}


# -- from the program's objects to this machine's manifests --


def embedded_process(process: Process, deployments: dict[str, dict]) -> dict:
    """One Deployment running every room of ``process`` (adaptation 4).

    Built from the program's Deployments of its rooms: the first room's pod, the union of
    their env, mounts and volumes, and ``ecstatic serve <rooms>``.
    """
    rooms = [deployments[room] for room in process.rooms]
    merged = copy.deepcopy(rooms[0])
    merged["metadata"]["name"] = process.name
    pod = merged["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["name"] = process.name
    container["command"] = ["ecstatic", "serve", process.spec]
    for other in rooms[1:]:
        other_pod = other["spec"]["template"]["spec"]
        (other_container,) = other_pod["containers"]
        for key, items, source in (
            ("name", container["env"], other_container["env"]),
            ("name", container["volumeMounts"], other_container["volumeMounts"]),
            ("name", pod["volumes"], other_pod["volumes"]),
        ):
            known = {item[key] for item in items}
            items.extend(copy.deepcopy(i) for i in source if i[key] not in known)
    for state in process.writes:  # the embedded engine's own state ("clickhouse")
        if not any(
            v.get("persistentVolumeClaim", {}).get("claimName") == state for v in pod["volumes"]
        ):
            pod["volumes"].append(
                {"name": f"state-{state}", "persistentVolumeClaim": {"claimName": state}}
            )
            container["volumeMounts"].append(
                {"name": f"state-{state}", "mountPath": f"{HOME}/{STATE[state].path}"}
            )
    return merged


def local_env(env: list[dict], ports: dict[str, int]) -> list[dict]:
    """The contract with loopback ports and addresses and the embedded engine (2, 4, 5)."""
    values = {e["name"]: e for e in env}
    overrides = {f"ECSTATIC_{name.upper()}_PORT": str(port) for name, port in ports.items()}
    overrides |= {
        "ECSTATIC_BIND_HOST": "127.0.0.1",
        "ECSTATIC_INTAKE_SYSLOG_HOST": "127.0.0.1",
        "ECSTATIC_API_URL": f"http://127.0.0.1:{ports['api']}",
        "ECSTATIC_SITE_SCHEME": "http",
    }
    if "ECSTATIC_CLICKHOUSE_URL" in values:
        overrides["ECSTATIC_CLICKHOUSE_URL"] = f"chdb://{HOME}/{STATE['clickhouse'].path}"
    for name, value in overrides.items():
        values[name] = {"name": name, "value": value}
    return list(values.values())


def adapt(
    deployment: dict,
    image: str,
    health: tuple[int, str],
    env: list[dict] | None,
    state_root: Path,
    suffix: str,
) -> dict:
    """One program Deployment made playable here (adaptations 1, 2, 3, 7)."""
    d = copy.deepcopy(deployment)
    d["metadata"]["name"] = f"{d['metadata']['name']}-{suffix}"
    pod = d["spec"]["template"]["spec"]
    pod["hostNetwork"] = True
    pod.get("securityContext", {}).pop("sysctls", None)
    pod.pop("nodeSelector", None)  # one machine, no node labels
    for volume in pod["volumes"]:
        claim = volume.pop("persistentVolumeClaim", None)
        if claim:
            volume["hostPath"] = {"path": str(state_root / claim["claimName"]), "type": "Directory"}
        if "configMap" in volume:
            volume["configMap"]["name"] += f"-{suffix}"
    for container in pod["containers"]:
        container["image"] = image
        container.pop("ports", None)
        if env is not None:
            container["env"] = env
        port, path = health
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            container[probe]["httpGet"] = {"path": path, "port": port}
    return d


def manifests(
    declared, images: dict[str, str], ports: dict[str, int], state_root: Path, suffix: str
) -> list[dict]:
    """Every object to play, in order: ConfigMaps, Services, Deployments."""
    deployments = of_kind(declared, "Deployment")
    config_maps = of_kind(declared, "ConfigMap")
    objects: list[dict] = []
    base_env = deployments["api"]["spec"]["template"]["spec"]["containers"][0]["env"]
    contract = local_env(base_env, ports)
    for process in PLAYED:
        source = (
            embedded_process(process, deployments)
            if process.embedded
            else deployments[process.name]
        )
        env = local_env(source["spec"]["template"]["spec"]["containers"][0]["env"], ports)
        health = (ports[process.http.name], "/healthz")
        objects.append(adapt(source, images["ecstatic"], health, env, state_root, suffix))

    caddy_env = [
        *deployments["caddy"]["spec"]["template"]["spec"]["containers"][0]["env"],
        *contract,
    ]
    listener, path = PLATFORM["caddy"].health
    objects.append(
        adapt(
            deployments["caddy"],
            images["caddy"],
            (ports[listener], path),
            caddy_env,
            state_root,
            suffix,
        )
    )
    listener, path = PLATFORM["prometheus"].health
    played = adapt(
        deployments["prometheus"],
        images["prometheus"],
        (ports[listener], path),
        None,
        state_root,
        suffix,
    )
    command = played["spec"]["template"]["spec"]["containers"][0]["command"]
    command[:] = [
        f"--web.listen-address=127.0.0.1:{ports[listener]}"
        if arg.startswith("--web.listen-address=")
        else arg
        for arg in command
    ]
    objects.append(played)

    data = {
        "caddy": {"Caddyfile": caddy.local()},
        "prometheus": {
            "prometheus.yml": prometheus.scrape_config(
                prometheus.jobs(PLAYED, lambda _job, lis: f"127.0.0.1:{ports[lis.name]}")
            )
        },
        "prometheus-rules": config_maps["prometheus-rules"].get("data", {}),
    }
    maps = []
    for name, files in data.items():
        cm = copy.deepcopy(config_maps[name])
        cm["metadata"]["name"] = f"{name}-{suffix}"
        cm["data"] = files
        maps.append(cm)
    services = [
        copy.deepcopy(s)
        for s in of_kind(declared, "Service").values()
        if s["spec"]["selector"]["app.kubernetes.io/name"] in {*deployments} - {"alertmanager"}
    ]
    for service in services:
        service["metadata"]["name"] += f"-{suffix}"
    return [*maps, *services, *objects]


def state_dirs(objects: list[dict], root: Path) -> None:
    """One directory per hostPath, owned by the user of the pods that mount it."""
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        uid = pod["containers"][0]["securityContext"]["runAsUser"]
        for volume in pod["volumes"]:
            if "hostPath" in volume:
                path = Path(volume["hostPath"]["path"])
                path.mkdir(parents=True, exist_ok=True)
                os.chown(path, uid, uid)
                path.chmod(0o750)


# -- talking to the played pods --


def wait_healthy(urls: dict[str, str], containers: list[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(urls)
    while pending and time.monotonic() < deadline:
        for name, url in list(pending.items()):
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    del pending[name]
            except requests.RequestException:
                pass
        for container in containers:
            state = podman("inspect", "--format", "{{.State.Status}}", container, check=False)
            if state.stdout.strip() not in ("running", "created", "configured"):
                pytest.fail(f"{container} is {state.stdout.strip()}:\n{logs(container)}")
        time.sleep(0.5)
    if pending:
        pytest.fail(
            f"not healthy after {timeout:.0f}s: {pending}\n"
            + "\n".join(logs(c) for c in containers)
        )


def logs(container: str) -> str:
    out = podman("logs", "--tail", "40", container, check=False)
    return f"--- {container}\n{out.stdout[-4000:]}{out.stderr[-4000:]}"


def test_the_platforms_manifests_serve_a_pushed_site(tmp_path):
    started = time.monotonic()
    images = ensure_images()  # also exports CONTAINERS_CONF (runc, cgroupfs, no ulimits)
    built = time.monotonic()
    declared = declare(platform_args(sites_domain="localhost"))
    ports = dict(zip(PORT_DEFAULTS, free_ports(len(PORT_DEFAULTS)), strict=True))
    suffix = secrets.token_hex(3)
    objects = manifests(declared, images, ports, tmp_path / "state", suffix)
    state_dirs(objects, tmp_path / "state")
    manifest = tmp_path / "platform.yaml"
    manifest.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    deployments = [o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"]
    assert len(deployments) == len(PLAYED) + 2  # the Ecstatic processes, Caddy, Prometheus
    containers = [f"{d}-pod-0-{d.rsplit('-', 1)[0]}" for d in deployments]

    played = podman("kube", "play", "--network", "host", str(manifest), check=False, timeout=300)
    try:
        assert played.returncode == 0, played.stderr
        health = {p.name: f"http://127.0.0.1:{ports[p.http.name]}/healthz" for p in PLAYED}
        for name in PLAYED_PLATFORM:
            listener, path = PLATFORM[name].health
            health[name] = f"http://127.0.0.1:{ports[listener]}{path}"
        wait_healthy(health, containers)
        healthy = time.monotonic()

        api_container = next(c for c in containers if c.startswith("api-"))
        created_user = podman("exec", api_container, "ecstatic", "admin", "create-user", "kim")
        token = created_user.stdout.strip().splitlines()[-1]
        caddy_url = f"http://127.0.0.1:{ports['http']}"
        auth = {"Authorization": f"Bearer {token}"}
        site = requests.post(
            f"{caddy_url}/v1/sites", json={"name": "kube-blog"}, headers=auth, timeout=10
        )
        assert site.status_code == 201, site.text
        site = site.json()

        # The API's git URL names the production host: the same path on Caddy's port here.
        path = "/" + site["git_url"].split("://", 1)[1].split("/", 1)[1]
        source = make_repo(tmp_path / "source", SITE_FILES)
        pushed = git(source, "push", with_token(caddy_url + path, token), "main")
        assert "remote:" in pushed.stderr, pushed.stderr

        page = requests.get(
            f"{caddy_url}/about/",
            headers={"Host": "kube-blog.localhost", "User-Agent": BROWSER_UA},
            timeout=10,
        )
        assert page.status_code == 200 and page.content == SITE_FILES["about/index.html"]

        deadline, body = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            answer = requests.get(
                f"{caddy_url}/v1/sites/{site['id']}/stats/breakdown?dimension=path&period=24h",
                headers=auth,
                timeout=10,
            )
            body = answer.json() if answer.status_code == 200 else {"status": answer.status_code}
            views = {r["value"]: r["pageviews"] for r in body.get("results", []) if r["pageviews"]}
            if views == {"/about/": 1}:
                break
            time.sleep(1)
        else:
            pytest.fail(
                f"no pageview within 30s: {body}\n" + "\n".join(logs(c) for c in containers)
            )
        counted = time.monotonic()

        # Prometheus scrapes every played part through the config the program's code renders.
        deadline = time.monotonic() + 60
        while True:
            targets = requests.get(
                f"http://127.0.0.1:{ports['prometheus']}/api/v1/targets", timeout=5
            )
            active = targets.json()["data"]["activeTargets"]
            if {t["labels"]["job"] for t in active if t["health"] == "up"} >= {
                p.name for p in PLAYED
            } | set(PLAYED_PLATFORM):
                break
            assert time.monotonic() < deadline, active
            time.sleep(1)

        # Inside every container: a non-root user, and / mounted read-only.
        for container in containers:
            host = testinfra.get_host(f"podman://{container}")
            assert host.user().uid != 0, container
            assert host.run("id -u").stdout.strip() != "0", container
            root = [line.split() for line in host.file("/proc/mounts").content_string.splitlines()]
            (options,) = [fields[3] for fields in root if fields[1] == "/"]
            assert "ro" in options.split(","), (container, options)
            probe = host.run("touch /kube-play-probe")
            assert probe.rc != 0 and "Read-only file system" in probe.stderr, (
                container,
                probe.stderr,
            )
        total = time.monotonic() - started
        print(
            f"\nkube play: images {built - started:.0f}s, healthy {healthy - built:.0f}s, "
            f"pageview counted {counted - healthy:.0f}s after healthy, total {total:.0f}s"
        )
    finally:
        # Always: nothing of this run stays on the shared machine.
        down = podman("kube", "down", str(manifest), check=False, timeout=180)
        assert down.returncode == 0, down.stderr
