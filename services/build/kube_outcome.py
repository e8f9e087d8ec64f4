"""What a finished build Job leaves: its outcome, read from the API's objects, and its output.

Works on the ``kubernetes`` client's models by attribute only (``pod.status...``,
``job.status.conditions``), so it needs no import of the client. The mapping follows
``sandbox.run``'s reasons: a deadline is ``timeout``, an OOM kill ``memory``, an eviction
(the ephemeral-storage limit) ``output_too_large``, a non-zero exit ``failed``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from services.build.kube_job import BUILD_CONTAINER, OUT_DIR, SITE_DIR
from services.build.limits import BuildLimits
from services.build.workspace import PublishProblem, check_publish

__all__ = [
    "STUCK",
    "build_state",
    "collect",
    "condition",
    "failed_reason",
    "failure",
    "readable",
    "timed_out",
]

# Waiting reasons after which a container will not start by itself.
STUCK = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


def timed_out(limits: BuildLimits) -> tuple[str, None, str]:
    """The outcome of a build that ran out of wall clock."""
    return "timeout", None, f"the build timed out after {limits.timeout_seconds:g} s"


def failure(reason: str, pod, limits: BuildLimits) -> tuple[str, int | None, str]:
    """The outcome of a Job whose Failed condition says ``reason`` (pod: its last state)."""
    if reason == "DeadlineExceeded":
        return timed_out(limits)
    if pod is not None and (pod.status.reason or "") == "Evicted":
        return "output_too_large", None, "the build wrote more than its disk limit"
    state = build_state(pod) if pod is not None else None
    ended = state.terminated if state is not None else None
    if ended is None:
        return "sandbox_error", None, f"the build job failed before the build ran ({reason})"
    if ended.reason == "OOMKilled":
        return (
            "memory",
            ended.exit_code,
            f"the build ran out of memory (limit {limits.memory_bytes} B)",
        )
    if ended.exit_code != 0:
        return (
            "failed",
            ended.exit_code,
            f"the build command exited with status {ended.exit_code}",
        )
    return "failed", None, "copying the built site out of the build failed"


def build_state(pod):
    """The ``build`` container's state (a client model), or None before it has one."""
    for status in pod.status.init_container_statuses or ():
        if status.name == BUILD_CONTAINER:
            return status.state
    return None


def condition(job, kind: str):
    """The Job's true condition of ``kind``, or None."""
    for condition in job.status.conditions or () if job.status else ():
        if condition.type == kind and condition.status == "True":
            return condition
    return None


def failed_reason(job) -> str | None:
    """The reason of the Job's Failed condition, or None while it has none."""
    failed = condition(job, "Failed")
    return (failed.reason or "Failed") if failed is not None else None


def readable(tree: Path) -> None:
    """Let the build's own uid read the copy (the checkout may be private to git)."""
    for path in [tree, *tree.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | (0o005 if path.is_dir() else 0o004))


def collect(exchange: Path, publish: str, workdir: Path, limits: BuildLimits):
    """Check what ``collect`` copied out, then move it beside the deploy (``workdir``)."""
    out = exchange / OUT_DIR
    target = workdir / SITE_DIR
    if not (out / SITE_DIR).is_dir():
        shown = publish or "."
        return "failed", f"the build did not create the directory {shown!r}", target
    try:
        check_publish(out, SITE_DIR, limits.max_publish_bytes, limits.max_publish_files)
    except PublishProblem as exc:
        return exc.reason, exc.message, target
    shutil.copytree(out / SITE_DIR, target, symlinks=True)
    return "ok", "", target
