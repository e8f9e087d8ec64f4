"""The deploy pipeline: named steps that take a pushed commit to a live release.

    checkout -> build -> publish -> activate -> record

Each step is a small object with ``name`` and ``run(job)``; the list is the pipeline, so a
step can be swapped (a Kubernetes Job for ``build``, Bunny for ``publish``/``activate``)
without touching the others. The deploy record at the api follows along: ``building``
from checkout, ``publishing`` from publish, ``live`` once recorded; a step that fails
leaves the live site as it was and the record ``failed`` with a reason; a newer push of
the same branch makes a waiting deploy ``superseded``.

The record's updates go through the deploy's log (``DeployLog.then``): in order, each
after the lines written before it, without the steps waiting on the api in between.
The final one is waited for, so a deploy's record is final before the next deploy of
the site starts (the queue's site lock is held until ``run`` returns).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.cdn.local import remove_tree
from services.core.metrics import GitMetrics

from .deploy_api import DeployApi
from .deploy_log import DeployLog

__all__ = ["DeployJob", "Pipeline", "Step", "StepFailed", "Superseded"]

log = logging.getLogger(__name__)

# The record's state while a step runs (the api validates the transitions).
STATE_OF_STEP = {
    "checkout": "building",
    "build": "building",
    "publish": "publishing",
    "activate": "publishing",
    "record": "publishing",
}


class StepFailed(Exception):
    """A step could not finish; ``reason`` is a short code, ``message`` is for people."""

    def __init__(self, reason: str, message: str, tail: Sequence[str] = ()):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.tail = list(tail)


class Superseded(Exception):
    """A newer push of the same branch deploys instead of this one."""


@dataclass
class DeployJob:
    """One deploy on its way; steps read what they need and fill in what they make."""

    site_id: str
    site: dict[str, Any]
    deploy: dict[str, Any]  # the api's deploy JSON: id, number, context, branch, hostname
    repo: Any  # the site's dulwich repository
    commit: bytes  # hex sha
    credential: str  # the short-lived credential for this site's deploys
    log: DeployLog
    still_current: Callable[[], bool] = lambda: True
    finished: Callable[[], None] = lambda: None  # the record is final (``InFlight.leave``)
    # Filled in by the steps.
    workdir: Path | None = None
    checkout: Any = None  # the Plan written into workdir/src (services.git.checkout.Plan)
    config: Any = None  # the parsed ecstatic.toml (services.build.config.BuildConfig)
    publish_dir: Path | None = None
    generator: str | None = None
    release: str | None = None
    file_count: int = 0
    bytes: int = 0
    fresh: list[tuple[str, bytes]] = field(default_factory=list)  # written, not yet flushed
    notes: list[str] = field(default_factory=list)
    step_seconds: dict[str, float] = field(default_factory=dict)
    url: str = ""

    @property
    def deploy_id(self) -> str:
        """The api's id of this deploy."""
        return str(self.deploy["id"])

    @property
    def hostnames(self) -> list[str]:
        """Where this deploy goes live: the site's hostnames, or its preview's one."""
        if self.deploy.get("context") == "preview":
            return [str(self.deploy["hostname"])]
        return list(self.site.get("hostnames") or [])


class Step(Protocol):
    """One named step of the pipeline."""

    name: str

    def run(self, job: DeployJob) -> None:
        """Do the step's work; raise ``StepFailed`` or ``Superseded`` to stop."""


class Pipeline:
    """Runs the steps of one deploy in order and keeps the api's record in step."""

    def __init__(
        self,
        steps: Sequence[Step],
        api: DeployApi,
        metrics: GitMetrics,
        work_root: Path,
        clock: Callable[[], float] = time.perf_counter,
    ):
        """Wire the pipeline.

        Args:
            steps: The steps, in order.
            api: The api's deploy routes.
            metrics: Deploy metrics (durations by step, outcomes by reason).
            work_root: Where each deploy gets its fresh working directory.
            clock: Monotonic clock for durations.
        """
        self.steps = list(steps)
        self._api = api
        self._metrics = metrics
        self._work_root = work_root
        self._clock = clock

    def sweep(self) -> None:
        """At start: remove working directories a killed process left behind."""
        try:
            entries = list(os.scandir(self._work_root))
        except FileNotFoundError:
            return
        for entry in entries:
            _remove(Path(entry.path))

    def run(self, job: DeployJob) -> str:
        """Run every step; return the outcome ("live", "failed", "superseded").

        The deploy's log closes (ending the pusher's output) as soon as the outcome is
        recorded, before the steps' ``finish`` housekeeping runs.
        """
        started = self._clock()
        self._work_root.mkdir(parents=True, exist_ok=True)
        job.workdir = Path(tempfile.mkdtemp(prefix=f".work-{job.site_id}-", dir=self._work_root))
        # mkdtemp makes it 0700, and so it stays: bubblewrap mounts it for the build
        # slot's uid as root (services/build/bwrap.py), so nothing above it opens up.
        state = "queued"
        try:
            if not job.still_current():
                raise Superseded()
            for step in self.steps:
                wanted = STATE_OF_STEP.get(step.name, state)
                notice = None
                if wanted != state:
                    self._update(job, {"state": wanted, "step": step.name})
                    state = wanted
                else:
                    notice = _StepNotice(lambda name=step.name: self._update(job, {"step": name}))
                began = self._clock()
                try:
                    step.run(job)
                finally:
                    if notice is not None:
                        notice.cancel()
                job.step_seconds[step.name] = round(self._clock() - began, 4)
                self._metrics.step_duration.labels(step.name).observe(job.step_seconds[step.name])
        except Superseded:
            job.log.write(f"{job.deploy.get('branch')} moved on: a newer push deploys instead")
            self._finish(job, "superseded", "superseded", started)
            return "superseded"
        except StepFailed as exc:
            self._fail(job, exc, started)
            return "failed"
        except Exception:  # noqa: BLE001 - report, never leave the record dangling
            log.exception("deploy crashed", extra={"site_id": job.site_id})
            self._fail(job, StepFailed("internal", "internal error (see the server logs)"), started)
            return "failed"
        else:
            self._metrics.deploys.labels("live", "none").inc()
            self._metrics.deploy_duration.observe(self._clock() - started)
        finally:
            # The record is final, so the pusher's output ends here; the tidying after
            # it (the working directory, each step's ``finish``) keeps the site's lock
            # (``DeployQueue``): the site's next deploy waits for it, no pusher does.
            job.log.close()
            job.finished()
            _remove(job.workdir)
            self._after(job)
        return "live"

    def refuse(self, job: DeployJob, exc: StepFailed) -> None:
        """A deploy that never got to run (its site stayed busy): failed, with why."""
        self._fail(job, exc, self._clock())

    def _fail(self, job: DeployJob, exc: StepFailed, started: float) -> None:
        for line in exc.tail:
            job.log.write(line)
        job.log.write(f"error: deploy failed: {exc.message}")
        job.log.write("error: the live site was not changed")
        self._finish(job, "failed", exc.reason, started)

    def _finish(self, job: DeployJob, state: str, reason: str, started: float) -> None:
        self._metrics.deploys.labels(state, reason).inc()
        self._metrics.deploy_duration.observe(self._clock() - started)
        changes = {"state": state, "reason": reason, "step_seconds": job.step_seconds}
        self._update(job, changes, wait=True)

    def _after(self, job: DeployJob) -> None:
        # Housekeeping after the outcome (e.g. the checkout cache's flush, spare and GC).
        for step in self.steps:
            finish = getattr(step, "finish", None)
            if finish is None:
                continue
            try:
                finish(job)
            except Exception:  # noqa: BLE001 - housekeeping never fails a deploy
                log.warning("step cleanup failed", extra={"step": step.name}, exc_info=True)

    def _update(self, job: DeployJob, changes: dict[str, Any], wait: bool = False) -> None:
        """Update the record after the log so far; ``wait`` for the final state only."""

        def send() -> None:
            try:
                answer = self._api.update(job.credential, job.site_id, job.deploy_id, changes)
            except Exception as exc:  # noqa: BLE001 - the deploy itself is what matters
                log.warning(
                    "deploy record not updated",
                    extra={"site_id": job.site_id, "deploy": job.deploy_id, "reason": str(exc)},
                )
                return
            if wait:
                job.deploy = answer

        if wait:
            try:
                job.log.call(send)
            except Exception:  # noqa: BLE001 - a stuck api: the record lags, the deploy ends
                log.warning("deploy record update timed out", extra={"site_id": job.site_id})
        else:
            job.log.then(send)


class _StepNotice:
    """Names a step in the record only if it is still running after a moment.

    A step that changes no state (a build, the switch, the record) is worth showing
    while it takes long; a fast one would only cost the api a write during the deploy.
    The lock orders a late notice before whatever update follows the step's end.
    """

    DELAY = 0.25

    def __init__(self, send: Callable[[], None]):
        self._send = send
        self._lock = threading.Lock()
        self._cancelled = False
        self._timer = threading.Timer(self.DELAY, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if not self._cancelled:
                self._send()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
        self._timer.cancel()


def _remove(path: Path | None) -> None:
    # Never recursive (a hostile tree may be deep); a failure costs disk, not the deploy.
    if path is not None:
        try:
            remove_tree(path)
        except OSError:
            log.warning("could not remove a deploy's working directory", exc_info=True)
