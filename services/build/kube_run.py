"""Run one build as a Kubernetes Job, streaming its log live: ``run``'s twin for a cluster.

``KubeRunner.run`` takes the same arguments as ``services.build.sandbox.run`` (less the
sandbox and slot) and returns the same ``BuildResult``::

    runner = KubeRunner(ApiClient(), settings, exchange=Path("/var/lib/ecstatic/builds"))
    result = runner.run(command, source, workdir, on_line=..., publish=..., limits=...)

It copies ``source`` to ``<exchange>/<job>/src`` (the claim git shares with the Jobs,
``kube_job.py``), submits the Job, follows the ``build`` container's log through the API
(``on_line`` gets each line as it is printed), waits for the Job to end, maps the outcome
(success; failed with its exit code; OOM-killed; evicted for disk; deadline exceeded ->
timeout) and copies the checked publish directory into ``workdir``. The Job is always
deleted afterwards (propagation Background, so its pod goes too) and the exchange
directory removed. Needs the official ``kubernetes`` client (the rest of
``services.build`` is standard library only).
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from services.build.config import check_environment
from services.build.kube_job import (
    BUILD_CONTAINER,
    OUT_DIR,
    SITE_DIR,
    SOURCE_DIR,
    JobSettings,
    job_manifest,
)
from services.build.kube_outcome import (
    STUCK,
    build_state,
    collect,
    condition,
    failed_reason,
    failure,
    readable,
    timed_out,
)
from services.build.limits import BuildLimits, BuildResult
from services.build.lines import LineSplitter
from services.build.workspace import prepare

__all__ = ["KubeRunner"]

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.5
# Beyond the Job's own deadline: time for Kubernetes to notice it and stop the pod.
_GRACE_SECONDS = 30.0


class KubeRunner:
    """Submits build Jobs through one API client and supervises them."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: JobSettings,
        exchange: Path,
        *,
        poll_seconds: float = _POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        """Wire the client.

        Args:
            api: An API client (in a pod: ``kubernetes.config.load_incluster_config()``
                first, then ``ApiClient()``).
            settings: Namespace, image, service account, claim, git's uid.
            exchange: Where this process sees ``settings.claim``'s directory.
            poll_seconds: How often pod and Job status are read while waiting.
            clock: Monotonic seconds (tests may speed it up).
        """
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)
        self._settings = settings
        self._exchange = exchange
        self._poll = poll_seconds
        self._clock = clock

    def run(
        self,
        command: str,
        source: Path,
        workdir: Path,
        *,
        on_line: Callable[[str], None],
        publish: str = "",
        environment: Mapping[str, str] | None = None,
        limits: BuildLimits | None = None,
    ) -> BuildResult:
        """Build ``source`` with ``command`` in a Job; the publish directory lands in ``workdir``.

        Raises:
            ConfigError: ``environment`` holds a reserved or invalid name.
            ValueError: ``command`` contains NUL.
            FileExistsError: ``workdir`` already exists.
        """
        if "\x00" in command:
            raise ValueError("the build command contains a NUL character")
        limits = limits or BuildLimits()
        env = check_environment(dict(environment or {}))
        started = self._clock()
        name = f"build-{secrets.token_hex(8)}"
        exchange = self._exchange / name
        workdir.mkdir(mode=0o700)  # fresh, as sandbox.run's: FileExistsError otherwise
        target = workdir / SITE_DIR
        try:
            exchange.mkdir(mode=0o711)
            prepare(source, exchange / SOURCE_DIR, None)
            readable(exchange / SOURCE_DIR)
            (exchange / OUT_DIR).mkdir(mode=0o700)
            watch = _Watch(self, name, on_line, limits)
            manifest = job_manifest(name, command, publish, env, limits, self._settings)
            reason, code, message = watch.run(manifest)
            seconds = self._clock() - started
            if reason == "ok":
                reason, message, target = collect(exchange, publish, workdir, limits)
            return BuildResult(
                reason == "ok", code, reason, seconds, list(watch.tail), target, message
            )
        finally:
            shutil.rmtree(exchange, ignore_errors=True)

    # -- the API calls, in one place --
    def _create(self, manifest: dict) -> None:
        self._batch.create_namespaced_job(self._settings.namespace, manifest)

    def _job(self, name: str) -> Any:
        return self._batch.read_namespaced_job(name, self._settings.namespace)

    def _pod(self, name: str) -> Any:
        pods = self._core.list_namespaced_pod(
            self._settings.namespace, label_selector=f"batch.kubernetes.io/job-name={name}"
        ).items
        return pods[0] if pods else None

    def _log(self, pod: str, timeout: float):
        return self._core.read_namespaced_pod_log(
            pod,
            self._settings.namespace,
            container=BUILD_CONTAINER,
            follow=True,
            _preload_content=False,
            _request_timeout=(10, max(1.0, timeout)),
        )

    def _delete(self, name: str) -> None:
        try:
            self._batch.delete_namespaced_job(
                name, self._settings.namespace, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("could not delete build job %s: %s", name, exc.status)
        except HTTPError as exc:  # ttlSecondsAfterFinished removes it later
            log.warning("could not delete build job %s: %s", name, type(exc).__name__)


class _Watch:
    """One Job from creation to deletion: start, log, outcome."""

    def __init__(
        self,
        runner: KubeRunner,
        name: str,
        on_line: Callable[[str], None],
        limits: BuildLimits,
    ):
        self._r = runner
        self._name = name
        self._on_line = on_line
        self._limits = limits
        self._lines = LineSplitter(limits.max_line_chars)
        self.tail: deque[str] = deque(maxlen=limits.tail_lines)
        self._deadline = runner._clock() + limits.timeout_seconds + _GRACE_SECONDS

    def run(self, manifest: dict) -> tuple[str, int | None, str]:
        """``(reason, exit_code, message)``; the Job is gone when this returns."""
        try:
            self._r._create(manifest)
        except ApiException as exc:
            return "sandbox_error", None, f"the build job was refused: {exc.status} {exc.reason}"
        except HTTPError as exc:
            return "sandbox_error", None, f"the Kubernetes API is unreachable: {type(exc).__name__}"
        try:
            pod = self._started()
            if isinstance(pod, tuple):
                return pod
            if self._follow(pod.metadata.name):
                return "output_too_large", None, "the build wrote more output than its limit"
            return self._outcome()
        except ApiException as exc:
            return "sandbox_error", None, f"the Kubernetes API answered {exc.status} {exc.reason}"
        except HTTPError as exc:
            return "sandbox_error", None, f"the Kubernetes API is unreachable: {type(exc).__name__}"
        finally:
            self._r._delete(self._name)

    def _remaining(self) -> float:
        return self._deadline - self._r._clock()

    def _started(self):
        """The pod once its build container runs (or ran), else an outcome."""
        while self._remaining() > 0:
            pod = self._r._pod(self._name)
            if pod is not None:
                state = build_state(pod)
                if state is not None and (state.running or state.terminated):
                    return pod
                if state is not None and state.waiting and state.waiting.reason in STUCK:
                    why = f"{state.waiting.reason}: {state.waiting.message or ''}".strip(": ")
                    return "sandbox_error", None, f"the build pod cannot start ({why})"
            failed = failed_reason(self._r._job(self._name))
            if failed is not None:
                return self._failure(failed, pod)
            time.sleep(self._r._poll)
        return self._timeout()

    def _follow(self, pod: str) -> bool:
        """Send the log to ``on_line`` until it ends; True when the output cap was hit."""
        budget = self._limits.max_output_bytes
        response = self._r._log(pod, self._remaining())
        try:
            for data in response.stream(65536, decode_content=False):
                self._emit(self._lines.feed(data[: max(0, budget)]))
                budget -= len(data)
                if budget < 0:
                    return True
        except Exception as exc:  # a read timeout or a dropped stream: the status decides
            log.info("build log of %s ended early: %s", pod, type(exc).__name__)
        finally:
            response.release_conn()
        self._emit(self._lines.close())
        return False

    def _emit(self, lines: list[str]) -> None:
        for line in lines:
            self.tail.append(line)
            self._on_line(line)

    def _outcome(self) -> tuple[str, int | None, str]:
        """Wait for the Job's final condition and read the pod's last state."""
        while self._remaining() > 0:
            job = self._r._job(self._name)
            pod = self._r._pod(self._name)
            failed = failed_reason(job)
            if failed is not None:
                return self._failure(failed, pod)
            if condition(job, "Complete") is not None:
                return "ok", 0, ""
            time.sleep(self._r._poll)
        return self._timeout()

    def _failure(self, reason: str, pod) -> tuple[str, int | None, str]:
        return failure(reason, pod, self._limits)

    def _timeout(self) -> tuple[str, None, str]:
        return timed_out(self._limits)
