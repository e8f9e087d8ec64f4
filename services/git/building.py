"""The build step's builders: bubblewrap on this box, or a Kubernetes Job per build.

Both pick the generator (the site's ``ecstatic.toml``, else detection), run its command
with the build's output streamed line by line into the deploy's log, and hand back the
directory to publish; ``builder_for`` picks one from ``ECSTATIC_BUILDER``.

* ``SandboxBuilder``: ``services.build.sandbox``. Each concurrent build gets its own slot
  (its own uid), so the process-count limit of one build never counts another's.
* ``KubernetesBuilder``: ``services.build.kube_run``, a Job in the builds namespace. The
  generators live in the builder image, so their versions come from config
  (``ECSTATIC_BUILDER_VERSIONS``) rather than from running them here.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from services.build import (
    BuildConfig,
    BuildLimits,
    BuildPlan,
    BuildResult,
    ConfigError,
    Sandbox,
    check_pin,
    detect,
    generator_version,
    run,
)
from services.core.config import Config
from services.core.metrics import GitMetrics

from .pipeline import DeployJob, StepFailed

if TYPE_CHECKING:
    from services.build.kube_run import KubeRunner

__all__ = ["KubernetesBuilder", "SandboxBuilder", "builder_for", "limits_for"]

log = logging.getLogger(__name__)

_REASONS = {"timeout": "build_timeout", "output_too_large": "too_large"}


class _Builder:
    """What both builders share: plan, pin check, plain files, outcome mapping."""

    def __init__(self, limits: BuildLimits, metrics: GitMetrics):
        self._limits = limits
        self._metrics = metrics

    def _version(self, generator: str) -> str | None:
        raise NotImplementedError

    def _run(self, plan: BuildPlan, config: BuildConfig, job: DeployJob) -> BuildResult:
        raise NotImplementedError

    def build(self, job: DeployJob) -> Path:
        """Build ``job.workdir/src``; return what to publish (see ``steps.Builder``)."""
        assert job.workdir is not None
        source = job.workdir / "src"
        config: BuildConfig = job.config or BuildConfig()
        plan = detect(source, config)
        version = self._version(plan.generator) if plan.generator else None
        try:
            check_pin(config, plan.generator, version)
        except ConfigError as exc:
            raise StepFailed("rejected", exc.message) from exc
        job.generator = " ".join(p for p in (plan.generator, version) if p) or None
        if plan.command is None:
            return _plain_files(source, plan.publish)
        job.log.write(f"building with {job.generator or 'your command'}: {plan.command}")
        try:
            result = self._run(plan, config, job)
        except ConfigError as exc:
            raise StepFailed("rejected", exc.message) from exc
        self._metrics.build_duration.observe(result.seconds)
        if not result.ok:
            reason = _REASONS.get(result.reason, "build_failed")
            message = result.message or f"the build ended with {result.reason}"
            # The lines were streamed as they came; repeat the tail only if the cap hid it.
            tail = result.tail if result.reason == "output_too_large" else []
            raise StepFailed(reason, message, tail)
        job.log.write(f"built in {result.seconds:.1f}s")
        return result.publish_dir


class SandboxBuilder(_Builder):
    """Runs builds in bubblewrap, at most ``slots`` at once."""

    def __init__(self, sandbox: Sandbox, limits: BuildLimits, metrics: GitMetrics, slots: int = 2):
        """Wire the sandbox settings, the limits and the metrics."""
        super().__init__(limits, metrics)
        self._sandbox = sandbox
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(slots):
            self._slots.put(slot)

    def _version(self, generator: str) -> str | None:
        return generator_version(generator, self._sandbox.path())

    def _run(self, plan: BuildPlan, config: BuildConfig, job: DeployJob) -> BuildResult:
        assert job.workdir is not None and plan.command is not None
        slot = self._slots.get()
        try:
            return run(
                plan.command,
                job.workdir / "src",
                job.workdir / "build",
                on_line=job.log.write,
                publish=plan.publish,
                environment=config.environment,
                limits=self._limits,
                sandbox=self._sandbox,
                slot=slot,
            )
        finally:
            self._slots.put(slot)


class KubernetesBuilder(_Builder):
    """Runs each build as a Job through ``KubeRunner`` (the deploy queue bounds how many)."""

    def __init__(
        self,
        runner: KubeRunner,
        versions: Mapping[str, str],
        limits: BuildLimits,
        metrics: GitMetrics,
    ):
        """Wire the runner, the builder image's generator versions, limits and metrics."""
        super().__init__(limits, metrics)
        self._runner = runner
        self._versions = dict(versions)

    def _version(self, generator: str) -> str | None:
        return self._versions.get(generator)

    def _run(self, plan: BuildPlan, config: BuildConfig, job: DeployJob) -> BuildResult:
        assert job.workdir is not None and plan.command is not None
        return self._runner.run(
            plan.command,
            job.workdir / "src",
            job.workdir / "build",
            on_line=job.log.write,
            publish=plan.publish,
            environment=config.environment,
            limits=self._limits,
        )


def limits_for(config: Config) -> BuildLimits:
    """The build limits from the process config (both builders use the same)."""
    d = config.deploy
    return BuildLimits(
        timeout_seconds=d.build_timeout_seconds,
        memory_bytes=d.build_memory_mb * 2**20,
        max_processes=d.build_processes,
        max_output_bytes=d.build_output_mb * 2**20,
        max_publish_bytes=config.max_deploy_bytes,
        max_publish_files=config.max_deploy_files,
    )


def builder_for(config: Config, metrics: GitMetrics) -> _Builder:
    """The builder ``ECSTATIC_BUILDER`` names, wired from the process config."""
    d = config.deploy
    limits = limits_for(config)
    if d.builder == "sandbox":
        return SandboxBuilder(
            # The venv's tools (mkdocs) are visible to builds; the data directory never is.
            Sandbox(toolchains=(Path(sys.prefix),), hidden=(config.home,)),
            limits,
            metrics,
            slots=d.workers,
        )
    from kubernetes import client
    from kubernetes import config as kube_config

    from services.build.kube_job import JobSettings
    from services.build.kube_run import KubeRunner

    try:
        kube_config.load_incluster_config()  # the git pod's own ServiceAccount token
    except kube_config.ConfigException as exc:
        # git still boots: pushes are checked and plain sites deploy; each build then
        # fails with the API's error as its reason instead of the room never starting.
        log.error("no Kubernetes API for builds", extra={"error": str(exc)[:200]})
    settings = JobSettings(
        namespace=d.builder_namespace,
        image=d.builder_image,
        service_account=d.builder_service_account,
        claim=d.builder_claim,
        collect_uid=os.getuid(),  # what collect writes must be ours to remove
    )
    runner = KubeRunner(client.ApiClient(), settings, Path(d.builder_exchange))
    return KubernetesBuilder(runner, d.generator_versions(), limits, metrics)


def _plain_files(source: Path, publish: str) -> Path:
    target = source.joinpath(*[p for p in publish.split("/") if p])
    if not target.is_dir() or target.is_symlink():
        raise StepFailed("rejected", f"publish directory {publish!r} does not exist")
    return target
