"""The Platform component under Pulumi mocks: hardening, the map, secrets, policies."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from urllib.parse import quote, urlsplit

import pulumi
import pytest
import yaml
from components import k8s_layout
from components.k8s_layout import rule_files
from components.platform import PlatformArgs

from services.core import config as core_config
from services.core.config import Config
from services.targets import MODULES, PLATFORM, STATE, Listener, processes
from tests.infra.platform_mocks import (
    EXTERNAL_URL,
    PASSWORD,
    declare,
    kube_objects,
    of_kind,
    plain_strings,
    platform_args,
    unwrap,
)

NS = "ecstatic"
HOME = "/var/lib/ecstatic"
PROCESSES = {p.name: p for p in processes(embedded=False)}


@pytest.fixture(scope="module")
def declared():
    return declare(platform_args())


@pytest.fixture(scope="module")
def external():
    return declare(platform_args(clickhouse_url=pulumi.Output.secret(EXTERNAL_URL)))


def pods(declared) -> dict[str, dict]:
    """Workload name -> pod spec, for every Deployment and StatefulSet."""
    found = {}
    for kind in ("Deployment", "StatefulSet"):
        for name, obj in of_kind(declared, kind).items():
            found[name] = obj["spec"]["template"]["spec"]
    return found


def host(service: str) -> str:
    return f"{service}.{NS}.svc.cluster.local"


def http_port(room: str) -> int:
    return MODULES[room].listeners[0].default


# -- every container --


def test_every_container_is_non_root_read_only_limited_and_probed(declared):
    found = pods(declared)
    assert set(found) == {*PROCESSES, "caddy", "prometheus", "alertmanager", "clickhouse"}
    for name, pod in found.items():
        # Only git talks to the Kubernetes API (its build Jobs: tests/infra/test_builds.py).
        assert pod["automountServiceAccountToken"] is (name == "git"), name
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert "add" not in sc["capabilities"] and not sc.get("privileged"), name
            for bound in ("requests", "limits"):
                assert set(c["resources"][bound]) == {"cpu", "memory"}, (name, bound)
            for probe in ("readinessProbe", "livenessProbe"):
                assert c[probe]["httpGet"]["port"] in {p["containerPort"] for p in c["ports"]}
            assert all("hostPort" not in p for p in c["ports"]), name
            # A writable /tmp on the read-only root, and nothing else writable but volumes.
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_ecstatic_processes_run_the_map(declared):
    deployments = of_kind(declared, "Deployment")
    for name, process in PROCESSES.items():
        pod = deployments[name]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["image"] == "ghcr.io/example/ecstatic:1.2.3"
        assert c["command"] == ["ecstatic", "serve", process.spec]
        assert [p["containerPort"] for p in c["ports"]] == [
            lis.default for lis in process.listeners
        ]
        assert c["securityContext"]["runAsUser"] == 10001
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/healthz", "port": process.http.default}
        volumes = {v["name"]: v for v in pod["volumes"]}
        claims = {}
        for m in c["volumeMounts"]:
            claim = volumes[m["name"]].get("persistentVolumeClaim")
            if claim:
                claims[claim["claimName"]] = (m["mountPath"], m.get("readOnly", False))
        expected = {s: (f"{HOME}/{STATE[s].path}", False) for s in process.writes}
        expected |= {s: (f"{HOME}/{STATE[s].path}", True) for s in process.reads}
        if name == "git":  # its build Jobs' exchange (tests/infra/test_builds.py)
            expected["build-exchange"] = (f"{HOME}/builds", False)
        assert claims == expected, name
        # Claims are bound to the state volume's node: pods that mount one go there.
        if process.writes or process.reads:
            assert pod["nodeSelector"] == {"ecstatic/state-volume": "true"}, name
        # One writer per volume: a new pod never overlaps the old one on its state
        # (except the intake, which hands over: tests/infra/test_intake_rollout.py).
        strategy = deployments[name]["spec"]["strategy"]["type"]
        recreate = process.writes and name != "intake"
        assert strategy == ("Recreate" if recreate else "RollingUpdate"), name


def test_platform_programs_mount_what_the_map_says(declared):
    deployments = of_kind(declared, "Deployment")
    for name, platform in PLATFORM.items():
        pod = deployments[name]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {}
        for m in pod["containers"][0]["volumeMounts"]:
            claim = volumes[m["name"]].get("persistentVolumeClaim")
            if claim:
                mounts[claim["claimName"]] = m.get("readOnly", False)
        assert mounts == {
            **{s: False for s in platform.writes},
            **{s: True for s in platform.reads},
        }
    claims = of_kind(declared, "PersistentVolumeClaim")
    claims.pop("build-exchange")  # not STATE: the build Jobs' exchange (test_builds.py)
    users = {s for p in [*PROCESSES.values(), *PLATFORM.values()] for s in (*p.writes, *p.reads)}
    assert set(claims) == users
    for state, claim in claims.items():
        assert claim["spec"]["resources"]["requests"]["storage"] == f"{STATE[state].size_gi}Gi"
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert claim["spec"]["storageClassName"] == "local-path"


# -- the environment contract --


def _env(container: dict) -> tuple[dict[str, str], dict[str, dict]]:
    plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    refs = {e["name"]: e["valueFrom"] for e in container["env"] if "valueFrom" in e}
    return plain, refs


def test_each_process_gets_the_local_stacks_env_contract(declared):
    deployments = of_kind(declared, "Deployment")
    url = unwrap(of_kind(declared, "Secret")["clickhouse-url"]["stringData"])["url"]
    for name, process in PROCESSES.items():
        plain, refs = _env(deployments[name]["spec"]["template"]["spec"]["containers"][0])
        assert "ECSTATIC_CLICKHOUSE_URL" not in plain
        if process.storage:
            ref = {"secretKeyRef": {"name": "clickhouse-url", "key": "url"}}
            assert refs == {"ECSTATIC_CLICKHOUSE_URL": ref}, name
        else:
            assert refs == {}, name  # the api and git never open ClickHouse
        config = Config.from_env({**plain, "ECSTATIC_CLICKHOUSE_URL": url})
        expected = dict(config.environ())
        expected.pop("ECSTATIC_CLICKHOUSE_URL")
        # The CDN reaches the syslog port from outside the pod: it binds with the rooms.
        assert config.intake.syslog_host == "0.0.0.0"
        assert plain == expected, name
        assert config.home.as_posix() == HOME and config.bind_host == "0.0.0.0"
        assert config.api_url == f"http://{host('api')}:{http_port('api')}"
        assert config.public_url == "https://api.example.net"
        assert config.site_url("blog") == "https://blog.sites.example.net/"
        assert config.git_url("s1") == "https://api.example.net/git/s1.git"


def test_in_cluster_clickhouse_url_and_user(declared):
    secrets = of_kind(declared, "Secret")
    url = urlsplit(unwrap(secrets["clickhouse-url"]["stringData"])["url"])
    assert (url.scheme, url.hostname, url.port) == ("http", host("clickhouse"), 8123)
    assert url.password == quote(PASSWORD, safe="") and url.username == "ecstatic"
    users = unwrap(secrets["clickhouse-users"]["stringData"])["ecstatic.xml"]
    assert hashlib.sha256(PASSWORD.encode()).hexdigest() in users and PASSWORD not in users
    (sts,) = of_kind(declared, "StatefulSet").values()
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "clickhouse/clickhouse-server:25.8.2.29"
    )
    (template,) = sts["spec"]["volumeClaimTemplates"]
    assert template["spec"]["resources"]["requests"]["storage"] == (
        f"{STATE['clickhouse'].size_gi}Gi"
    )
    assert of_kind(declared, "Service")["clickhouse"]["spec"]["ports"][0]["port"] == 8123


def test_no_secret_value_is_ever_plain(declared, external):
    password_forms = {
        PASSWORD,
        quote(PASSWORD, safe=""),
        hashlib.sha256(PASSWORD.encode()).hexdigest(),
    }
    ext = urlsplit(EXTERNAL_URL)
    for resources, secrets in (
        (declared, password_forms),
        (external, {EXTERNAL_URL, ext.password, *password_forms}),
    ):
        for d in resources:
            for where, value in (("inputs", d.inputs), ("outputs", d.outputs)):
                for path, text in plain_strings(value):
                    leaked = [s for s in secrets if s in text]
                    assert not leaked, f"{d.typ} {d.name} {where}{path} holds a secret"
        # ... and the secrets are there, wrapped: the test above looked at real values.
        wrapped = [d for d in resources if d.typ == "kubernetes:core/v1:Secret"]
        assert wrapped and all(not plain_strings(d.inputs["stringData"]) for d in wrapped)


def test_external_clickhouse_means_no_statefulset(external):
    assert of_kind(external, "StatefulSet") == {}
    assert "clickhouse" not in of_kind(external, "Service")
    assert set(of_kind(external, "Secret")) == {"clickhouse-url"}
    assert unwrap(of_kind(external, "Secret")["clickhouse-url"]["stringData"]) == {
        "url": EXTERNAL_URL
    }
    assert "allow-clickhouse" not in of_kind(external, "NetworkPolicy")


# -- Services --


def test_only_caddy_and_the_intake_syslog_port_are_public(declared):
    services = of_kind(declared, "Service")
    syslog = next(lis for lis in MODULES["intake"].listeners if lis.protocol == "syslog")
    public = {
        name: sorted(p["port"] for p in s["spec"]["ports"])
        for name, s in services.items()
        if s["spec"].get("type") not in (None, "ClusterIP")
    }
    assert public == {"caddy-public": [80, 443], "intake-public": [syslog.default]}
    for name in public:
        spec = services[name]["spec"]
        assert spec["type"] == "LoadBalancer" and spec["externalTrafficPolicy"] == "Local"
    assert services["intake-public"]["spec"]["loadBalancerSourceRanges"] == [
        "198.51.100.0/24",
        "203.0.113.0/24",
    ]
    assert "loadBalancerSourceRanges" not in services["caddy-public"]["spec"]
    # Every Service selects pods of a workload that has each target port.
    pod_ports = {
        n: {p["containerPort"] for p in pod["containers"][0]["ports"]}
        for n, pod in pods(declared).items()
    }
    for name, service in services.items():
        target = service["spec"]["selector"]["app.kubernetes.io/name"]
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= pod_ports[target], name
    # Every internal listener of every process has a ClusterIP Service port.
    for name, process in PROCESSES.items():
        internal = {lis.default for lis in process.listeners if not lis.public}
        assert {p["port"] for p in services[name]["spec"]["ports"]} == internal


# -- NetworkPolicies --


def _selected(selector: dict) -> str:
    return selector["matchLabels"]["app.kubernetes.io/name"]


def _paths(policies: dict) -> tuple[set, set, dict, dict]:
    """(ingress edges, egress edges, public ports per pod, internet ports per pod)."""
    ingress, egress, public, internet = set(), set(), {}, {}
    for name, policy in policies.items():
        spec = policy["spec"]
        if not name.startswith("allow-") or name == "allow-dns":
            continue
        me = _selected(spec["podSelector"])
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        for rule in spec.get("ingress", []):
            ports = {p["port"] for p in rule["ports"]}
            if "from" not in rule:
                public.setdefault(me, set()).update(ports)
                continue
            for peer in rule["from"]:
                ingress |= {(_selected(peer["podSelector"]), me, port) for port in ports}
        for rule in spec.get("egress", []):
            ports = {p["port"] for p in rule["ports"]}
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    assert "10.42.0.0/16" in peer["ipBlock"]["except"]
                    internet.setdefault(me, set()).update(ports)
                else:
                    egress |= {(me, _selected(peer["podSelector"]), port) for port in ports}
    return ingress, egress, public, internet


def _expected_edges(declared, in_cluster: bool) -> set:
    """The map's paths: talks_to peers, Prometheus's jobs and its Alertmanager."""
    owner = {room: p.name for p in PROCESSES.values() for room in p.rooms}
    edges = set()
    for p in PROCESSES.values():
        for peer in p.talks_to:
            if peer != "clickhouse":
                edges.add((p.name, owner[peer], http_port(peer)))
            elif in_cluster:
                edges.add((p.name, "clickhouse", 8123))
    edges |= {("caddy", owner[peer], http_port(peer)) for peer in PLATFORM["caddy"].talks_to}
    config = yaml.safe_load(of_kind(declared, "ConfigMap")["prometheus"]["data"]["prometheus.yml"])
    for job in config["scrape_configs"]:
        (target,) = job["static_configs"][0]["targets"]
        name, port = target.split(".", 1)[0], int(target.rsplit(":", 1)[1])
        assert target == f"{host(name)}:{port}"
        edges.add(("prometheus", name, port))
    (am,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    edges.add(("prometheus", am.split(".", 1)[0], int(am.rsplit(":", 1)[1])))
    return edges


@pytest.mark.parametrize("variant", ["declared", "external"])
def test_network_policies_allow_exactly_the_maps_paths(variant, request):
    resources = request.getfixturevalue(variant)
    policies = of_kind(resources, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = policies["allow-dns"]["spec"]
    assert dns["podSelector"] == {} and dns["policyTypes"] == ["Egress"]
    (rule,) = dns["egress"]
    assert rule["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {("UDP", 53), ("TCP", 53)}

    ingress, egress, public, internet = _paths(policies)
    assert ingress == egress  # both ends of every path agree
    in_cluster = variant == "declared"
    assert ingress == _expected_edges(resources, in_cluster)
    # Each talks_to of the map is allowed (Prometheus's: through its scrape jobs).
    owner = {room: p.name for p in PROCESSES.values() for room in p.rooms}
    pairs = {(source, target) for source, target, _ in ingress}
    for source, part in [*((p.name, p) for p in PROCESSES.values()), *PLATFORM.items()]:
        for peer in part.talks_to:
            if peer != "clickhouse" or in_cluster:
                assert (source, owner.get(peer, peer)) in pairs, (source, peer)
    syslog = next(lis for lis in MODULES["intake"].listeners if lis.public)
    assert public == {"caddy": {80, 443}, "intake": {syslog.default}}
    storage = {p.name: {8123, 8443} for p in PROCESSES.values() if p.storage}
    kube_api = {"git": {6443}}  # its build Jobs (tests/infra/test_builds.py)
    assert internet == {"caddy": {80, 443}, **kube_api, **({} if in_cluster else storage)}
    # Every pod is covered by its own policy.
    assert {f"allow-{name}" for name in pods(resources)} <= set(policies)


# -- generated config --


def test_caddyfile_points_at_the_services_and_volumes(declared):
    caddyfile = of_kind(declared, "ConfigMap")["caddy"]["data"]["Caddyfile"]
    assert "api.example.net {" in caddyfile and "email ops@example.net" in caddyfile
    assert f"ask http://{host('api')}:{http_port('api')}/internal/hostnames/check" in caddyfile
    assert "on_demand" in caddyfile
    for room, module in MODULES.items():
        if module.route:
            assert f"reverse_proxy {host(room)}:{http_port(room)}" in caddyfile
    assert f"output file {HOME}/{STATE['access-logs'].path}/access.log" in caddyfile
    assert f"root * {HOME}/{STATE['releases'].path}/live/{{host}}" in caddyfile
    internal = next(
        lis for lis in PLATFORM["caddy"].listeners if lis.name == PLATFORM["caddy"].metrics[0]
    )
    assert f":{internal.default} {{" in caddyfile
    (c,) = of_kind(declared, "Deployment")["caddy"]["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"] == {
        "path": PLATFORM["caddy"].health[1],
        "port": internal.default,
    }
    staging = declare(
        platform_args(acme_ca="https://acme-staging-v02.api.letsencrypt.org/directory")
    )
    assert (
        "acme_ca https://acme-staging"
        in of_kind(staging, "ConfigMap")["caddy"]["data"]["Caddyfile"]
    )


def test_prometheus_scrapes_every_part_and_loads_ops_rules(declared, tmp_path):
    maps = of_kind(declared, "ConfigMap")
    config = yaml.safe_load(maps["prometheus"]["data"]["prometheus.yml"])
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {*PROCESSES, *(n for n, p in PLATFORM.items() if p.metrics)}
    services = of_kind(declared, "Service")
    for job in jobs.values():
        (target,) = job["static_configs"][0]["targets"]
        service, port = target.split(".", 1)[0], int(target.rsplit(":", 1)[1])
        assert port in {p["port"] for p in services[service]["spec"]["ports"]}, target
    # The rule files of ops/ (none yet) are the ConfigMap's and the config's.
    assert maps["prometheus-rules"].get("data", {}) == rule_files()
    assert config.get("rule_files", []) == [
        f"/etc/ecstatic-prometheus/rules/{k}" for k in sorted(rule_files())
    ]
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "api.yml").write_text("groups: []\n")
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "intake.rules.yml").write_text("groups: [x]\n")
    (tmp_path / "runbooks" / "notes.yml").write_text("not rules\n")
    assert rule_files(tmp_path) == {
        "rules__api.yml": "groups: []\n",
        "runbooks__intake.rules.yml": "groups: [x]\n",
    }
    yml = k8s_layout.Layout(NS, "a.example", "s.example", "e@x", None, True).prometheus_yml(
        rule_files(tmp_path)
    )
    assert yaml.safe_load(yml)["rule_files"] == [
        "/etc/ecstatic-prometheus/rules/rules__api.yml",
        "/etc/ecstatic-prometheus/rules/runbooks__intake.rules.yml",
    ]


# -- arguments --


def test_replicas_and_sizes_follow_the_args():
    declared = declare(platform_args(replicas={"query": 3}, volume_sizes={"releases": 50}))
    assert of_kind(declared, "Deployment")["query"]["spec"]["replicas"] == 3
    assert of_kind(declared, "Deployment")["api"]["spec"]["replicas"] == 1
    claims = of_kind(declared, "PersistentVolumeClaim")
    assert claims["releases"]["spec"]["resources"]["requests"]["storage"] == "50Gi"


@pytest.mark.parametrize(
    "overrides",
    [
        {"replicas": {"api": 2}},
        {"replicas": {"git": 2}},
        {"replicas": {"intake": 2}},
        {"replicas": {"nope": 1}},
        {"volume_sizes": {"nope": 1}},
    ],
)
def test_impossible_args_are_refused(overrides):
    with pytest.raises(ValueError):
        declare(platform_args(**overrides))


def test_every_kubernetes_child_uses_the_given_provider_and_the_components_name(declared):
    children = [d for d in declared if d.typ.startswith("kubernetes:")]
    assert len(children) == len(kube_objects(declared)) > 30
    for d in children:
        assert d.provider and "::k3s::" in d.provider, d.name
        assert d.name.startswith("ecstatic-"), d.name
    (component,) = [d for d in declared if d.typ == "ecstatic:platform:Platform"]
    assert component.name == "ecstatic"
    # Plus the build Jobs' namespace and their exchange volumes (cluster-wide objects).
    assert {
        o["metadata"].get("namespace") for o in kube_objects(declared) if o["kind"] != "Namespace"
    } == {NS, "ecstatic-builds", None}


def test_the_program_follows_the_map_when_it_changes(monkeypatch):
    """Move a port and a volume in the map: everything that names them moves too."""
    monkeypatch.setitem(
        MODULES, "query", replace(MODULES["query"], listeners=(Listener("query", 18203),))
    )
    monkeypatch.setitem(core_config.PORT_DEFAULTS, "query", 18203)
    monkeypatch.setitem(STATE, "releases", replace(STATE["releases"], path="cdn-v2"))
    declared = declare(platform_args())
    (c,) = of_kind(declared, "Deployment")["query"]["spec"]["template"]["spec"]["containers"]
    assert [p["containerPort"] for p in c["ports"]] == [18203]
    assert c["livenessProbe"]["httpGet"]["port"] == 18203
    assert of_kind(declared, "Service")["query"]["spec"]["ports"][0]["port"] == 18203
    caddyfile = of_kind(declared, "ConfigMap")["caddy"]["data"]["Caddyfile"]
    assert f"reverse_proxy {host('query')}:18203" in caddyfile
    assert f"{HOME}/cdn-v2/live" in caddyfile
    ingress, _, _, _ = _paths(of_kind(declared, "NetworkPolicy"))
    assert ("caddy", "query", 18203) in ingress and ("prometheus", "query", 18203) in ingress
    mounts = {
        m["mountPath"]
        for pod in pods(declared).values()
        for m in pod["containers"][0]["volumeMounts"]
    }
    assert f"{HOME}/cdn-v2" in mounts and f"{HOME}/cdn" not in mounts


def test_platform_args_is_the_contract():
    fields = list(PlatformArgs.__dataclass_fields__)
    assert fields == [
        "namespace",
        "image",
        "api_host",
        "sites_domain",
        "acme_email",
        "acme_ca",
        "clickhouse_url",
        "clickhouse_password",
        "clickhouse_image",
        "caddy_image",
        "prometheus_image",
        "alertmanager_image",
        "cdn_source_ranges",
        "storage_class",
        "volume_sizes",
        "replicas",
        "builder_image",
        "builds_namespace",
    ]
