"""Every Kubernetes object the Platform declares is valid for the pinned k3s's Kubernetes."""

from __future__ import annotations

import json

import config as stack_config
import kubernetes_validate
import pulumi
import pytest
from kubernetes_validate.utils import all_versions

from tests.infra.platform_mocks import EXTERNAL_URL, declare, kube_objects, platform_args

# The Kubernetes minor of the k3s release the stack pins (config.DEFAULTS["k3sVersion"]),
# in the form kubernetes-validate names its schemas.
K8S_SCHEMA_VERSION = "1.36.0"


def test_schema_version_is_the_pinned_k3s_and_is_shipped():
    k3s = str(stack_config.DEFAULTS["k3sVersion"])  # e.g. v1.36.5+k3s1
    major, minor = k3s.lstrip("v").split(".")[:2]
    assert K8S_SCHEMA_VERSION == f"{major}.{minor}.0"
    assert K8S_SCHEMA_VERSION in all_versions()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"clickhouse_url": pulumi.Output.secret(EXTERNAL_URL), "storage_class": None},
        {
            "acme_ca": "https://acme-staging-v02.api.letsencrypt.org/directory",
            "replicas": {"query": 2},
            "volume_sizes": {"releases": 40, "clickhouse": 100},
        },
    ],
    ids=["in-cluster-clickhouse", "external-clickhouse", "staging-acme"],
)
def test_every_object_validates_strictly(overrides):
    objects = kube_objects(declare(platform_args(**overrides)))
    kinds = {o["kind"] for o in objects}
    assert {
        "Namespace",
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
        "NetworkPolicy",
    } <= kinds
    for obj in objects:
        # Round-trip through JSON: only what a manifest can hold reaches the validator.
        manifest = json.loads(json.dumps(obj))
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, K8S_SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name}: {err.message} at {'.'.join(map(str, err.path))}")


def test_the_validator_rejects_what_the_api_server_would():
    """The check above can fail: an unknown field and a wrong type are refused."""
    (deployment,) = [
        o
        for o in kube_objects(declare(platform_args()))
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "api"
    ]
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRoot"] = True
    wrong = json.loads(json.dumps(deployment))
    wrong["spec"]["replicas"] = "one"
    for bad in (typo, wrong):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_SCHEMA_VERSION, strict=True)
