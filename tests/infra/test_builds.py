"""The Platform's build objects under Pulumi mocks: namespace, accounts, RBAC, policy, exchange.

Also: the Job the git room would submit (``services.build.kube_job``) validates strictly
against the pinned k3s's schema and meets the builds namespace's Pod Security level.
"""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from components import cloud_init
from components.cloud_init import BUILD_EXCHANGE_DIR
from components.k8s_builds import EXCHANGE_MOUNT

from services.build.kube_job import BUILD_UID, JobSettings, job_manifest
from services.build.limits import BuildLimits
from services.core.config import Config
from tests.infra.platform_mocks import declare, kube_objects, platform_args
from tests.infra.test_cloud_init import files_of, server_user_data
from tests.infra.test_platform_schema import K8S_SCHEMA_VERSION

NS, BUILDS = "ecstatic", "ecstatic-builds"
IMAGE = "ghcr.io/example/ecstatic-builder:1.2.3"


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return kube_objects(declare(platform_args(builder_image=IMAGE)))


def find(objects, kind: str, name: str, namespace: str | None = BUILDS) -> dict:
    (found,) = [
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"]["name"] == name
        and o["metadata"].get("namespace") == namespace
    ]
    return found


def git_pod(objects) -> dict:
    return find(objects, "Deployment", "git", NS)["spec"]["template"]["spec"]


def test_builds_namespace_enforces_restricted_pod_security(objects):
    labels = find(objects, "Namespace", BUILDS, None)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_builder_account_has_no_token_and_no_binding(objects):
    account = find(objects, "ServiceAccount", "builder")
    assert account["automountServiceAccountToken"] is False
    bound = [s for o in objects if o["kind"] == "RoleBinding" for s in o["subjects"]]
    assert not [s for s in bound if s["name"] == "builder"]


def test_every_build_pod_is_denied_all_traffic(objects):
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    in_builds = [p for p in policies if p["metadata"]["namespace"] == BUILDS]
    # The only policy there: every pod (not only the labels git writes), both directions,
    # no rule at all, so nothing is allowed, not even DNS.
    assert [p["spec"] for p in in_builds] == [
        {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    ]


def test_only_git_may_run_jobs_and_read_their_pods_and_logs(objects):
    role = find(objects, "Role", "build-runner")
    rules = {(r["apiGroups"][0], r["resources"][0]): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        ("batch", "jobs"): {"create", "get", "delete"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "pods/log"): {"get"},
    }
    bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert len(bindings) == 1
    (binding,) = bindings
    assert binding["metadata"]["namespace"] == BUILDS
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "build-runner",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "git", "namespace": NS}]
    assert not [o for o in objects if o["kind"] == "ClusterRole"]


def test_git_alone_runs_with_its_service_account_token(objects):
    pod = git_pod(objects)
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("git", True)
    find(objects, "ServiceAccount", "git", NS)
    others = [
        o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] != "git"
    ]
    assert others and all(p["automountServiceAccountToken"] is False for p in others)
    assert all("serviceAccountName" not in p for p in others)


def test_git_gets_the_builder_settings_and_they_parse(objects):
    (container,) = git_pod(objects)["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names))  # overridden, not duplicated
    config = Config.from_env(env)
    assert config.deploy.builder == "kubernetes"
    assert config.deploy.builder_namespace == BUILDS
    assert config.deploy.builder_image == IMAGE
    assert config.deploy.builder_exchange == EXCHANGE_MOUNT
    assert config.deploy.generator_versions() == {"hugo": "0.111.3", "mkdocs": "1.4.2"}
    # Nobody else builds: their env keeps the default sandbox builder.
    for o in objects:
        if o["kind"] == "Deployment" and o["metadata"]["name"] in ("api", "query"):
            (c,) = o["spec"]["template"]["spec"]["containers"]
            assert {"name": "ECSTATIC_BUILDER", "value": "sandbox"} in c["env"]


def test_git_and_the_jobs_see_one_exchange_directory(objects):
    pod = git_pod(objects)
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == EXCHANGE_MOUNT]
    assert volumes[mount["name"]]["persistentVolumeClaim"] == {"claimName": "build-exchange"}
    for namespace in (NS, BUILDS):
        claim = find(objects, "PersistentVolumeClaim", "build-exchange", namespace)
        volume = find(objects, "PersistentVolume", claim["spec"]["volumeName"], None)
        assert volume["spec"]["claimRef"] == {"namespace": namespace, "name": "build-exchange"}
        assert volume["spec"]["hostPath"] == {"path": BUILD_EXCHANGE_DIR, "type": "Directory"}
        assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        assert claim["spec"]["storageClassName"] == volume["spec"]["storageClassName"] == ""
        term = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]
        assert term["matchExpressions"] == [
            {"key": "ecstatic/state-volume", "operator": "In", "values": ["true"]}
        ]


def test_git_may_reach_the_api_server_and_nothing_new_besides(objects):
    allow = find(objects, "NetworkPolicy", "allow-git", NS)["spec"]
    outside = [r for r in allow["egress"] if "ipBlock" in r["to"][0]]
    assert [r["ports"] for r in outside] == [[{"port": 6443, "protocol": "TCP"}]]
    assert "10.43.0.0/16" in outside[0]["to"][0]["ipBlock"]["except"]


def test_cloud_init_makes_the_exchange_directory_before_k3s_starts():
    user_data = server_user_data()
    script = files_of(user_data)[cloud_init.BOOTSTRAP_SCRIPT]["content"].splitlines()
    made = script.index(f"install -d -m 1733 {BUILD_EXCHANGE_DIR}")
    assert made < script.index("systemctl enable --now k3s.service")


def manifest(**limits) -> dict:
    settings = JobSettings(BUILDS, IMAGE, "builder", "build-exchange", 10001)
    return job_manifest(
        "build-0123456789abcdef",
        "hugo --minify",
        "public",
        {"HUGO_ENV": "production"},
        BuildLimits(**limits),
        settings,
    )


def test_the_build_job_validates_strictly():
    job = json.loads(json.dumps(manifest(timeout_seconds=600)))
    try:
        kubernetes_validate.validate(job, K8S_SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{err.message} at {'.'.join(map(str, err.path))}")
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (0, 600)


def test_the_build_pod_meets_restricted_pod_security():
    pod = manifest()["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {k for v in pod["volumes"] for k in v} <= {"name", "emptyDir", "persistentVolumeClaim"}
    for c in [*pod["initContainers"], *pod["containers"]]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["runAsUser"] > 0 and sc["readOnlyRootFilesystem"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    (build,) = pod["initContainers"]
    assert build["securityContext"]["runAsUser"] == BUILD_UID
    # The user's command never sees a writable exchange path: only its checkout, read-only.
    exchange = [m for m in build["volumeMounts"] if m["name"] == "exchange"]
    assert exchange == [
        {
            "name": "exchange",
            "mountPath": "/source",
            "subPath": "build-0123456789abcdef/src",
            "readOnly": True,
        }
    ]
    assert set(build["resources"]["limits"]) == {"cpu", "memory", "ephemeral-storage"}
