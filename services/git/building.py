"""The build step's builder on one box: ``services.build`` under bubblewrap.

Picks the generator (the site's ``ecstatic.toml``, else detection), runs its command in
the sandbox with the build's output streamed line by line into the deploy's log, and
hands back the directory to publish. Each concurrent build gets its own slot (its own
uid), so the process-count limit of one build never counts another's processes.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path

from services.build import (
    BuildConfig,
    BuildLimits,
    ConfigError,
    Sandbox,
    check_pin,
    detect,
    generator_version,
    run,
)
from services.core.metrics import GitMetrics

from .pipeline import DeployJob, StepFailed

__all__ = ["SandboxBuilder"]

log = logging.getLogger(__name__)

_REASONS = {"timeout": "build_timeout", "output_too_large": "too_large"}


class SandboxBuilder:
    """Runs builds in bubblewrap, at most ``slots`` at once."""

    def __init__(self, sandbox: Sandbox, limits: BuildLimits, metrics: GitMetrics, slots: int = 2):
        """Wire the sandbox settings, the limits and the metrics."""
        self._sandbox = sandbox
        self._limits = limits
        self._metrics = metrics
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(slots):
            self._slots.put(slot)

    def build(self, job: DeployJob) -> Path:
        """Build ``job.workdir/src``; return what to publish (see ``steps.Builder``)."""
        assert job.workdir is not None
        source = job.workdir / "src"
        config: BuildConfig = job.config or BuildConfig()
        plan = detect(source, config)
        version = (
            generator_version(plan.generator, self._sandbox.path()) if plan.generator else None
        )
        try:
            check_pin(config, plan.generator, version)
        except ConfigError as exc:
            raise StepFailed("rejected", exc.message) from exc
        job.generator = " ".join(p for p in (plan.generator, version) if p) or None
        if plan.command is None:
            return _plain_files(source, plan.publish)
        job.log.write(f"building with {job.generator or 'your command'}: {plan.command}")
        slot = self._slots.get()
        try:
            result = run(
                plan.command,
                source,
                job.workdir / "build",
                on_line=job.log.write,
                publish=plan.publish,
                environment=config.environment,
                limits=self._limits,
                sandbox=self._sandbox,
                slot=slot,
            )
        except ConfigError as exc:
            raise StepFailed("rejected", exc.message) from exc
        finally:
            self._slots.put(slot)
        self._metrics.build_duration.observe(result.seconds)
        if not result.ok:
            reason = _REASONS.get(result.reason, "build_failed")
            message = result.message or f"the build ended with {result.reason}"
            # The lines were streamed as they came; repeat the tail only if the cap hid it.
            tail = result.tail if result.reason == "output_too_large" else []
            raise StepFailed(reason, message, tail)
        job.log.write(f"built in {result.seconds:.1f}s")
        return result.publish_dir


def _plain_files(source: Path, publish: str) -> Path:
    target = source.joinpath(*[p for p in publish.split("/") if p])
    if not target.is_dir() or target.is_symlink():
        raise StepFailed("rejected", f"publish directory {publish!r} does not exist")
    return target
