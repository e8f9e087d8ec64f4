"""``builder_for``: the configured builder, and a git room that boots without its API."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.core.config import Config
from services.core.metrics import GitMetrics
from services.git.building import KubernetesBuilder, SandboxBuilder, builder_for


def config(tmp_path, **env) -> Config:
    return Config.from_env({"ECSTATIC_HOME": str(tmp_path), **env})


def test_the_sandbox_is_the_default(tmp_path):
    builder = builder_for(config(tmp_path), GitMetrics(CollectorRegistry()))
    assert isinstance(builder, SandboxBuilder)


def test_kubernetes_outside_a_cluster_still_builds_a_builder(tmp_path, monkeypatch):
    # Not in a pod (no KUBERNETES_SERVICE_HOST): git must still boot; builds then fail
    # with the API's error (tests/build/test_kube_run.py covers an unreachable API).
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = config(
        tmp_path,
        ECSTATIC_BUILDER="kubernetes",
        ECSTATIC_BUILDER_EXCHANGE=str(tmp_path / "exchange"),
    )
    builder = builder_for(settings, GitMetrics(CollectorRegistry()))
    assert isinstance(builder, KubernetesBuilder)
