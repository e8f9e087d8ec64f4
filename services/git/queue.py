"""Deploys run on worker threads, outside the push request, one at a time per site.

The push request only enqueues the deploy and follows its log; the pusher hanging up
never aborts or corrupts it. Per-site order comes from ``SiteLocks`` (a ``flock``, so it
holds across processes too); a newer push of the same branch finds the older one still
waiting and the pipeline marks that one superseded.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from .locks import LockTimeout, SiteLocks
from .pipeline import DeployJob, Pipeline, StepFailed

__all__ = ["DeployQueue"]

log = logging.getLogger(__name__)


class DeployQueue:
    """A bounded pool of deploy workers (``Background``-shaped: start, stop, healthy)."""

    name = "deploys"

    def __init__(self, pipeline: Pipeline, locks: SiteLocks, workers: int = 2):
        """Create the queue; workers start on the first submit.

        Args:
            pipeline: Runs one deploy.
            locks: Per-site deploy locks.
            workers: Deploys running at once, across sites.
        """
        self._pipeline = pipeline
        self._locks = locks
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deploy")
        self._accepting = True
        self._lock = threading.Lock()

    def submit(self, job: DeployJob) -> Future:
        """Queue a deploy; its log closes once the outcome is recorded, whatever it is.

        Raises:
            RuntimeError: the process is stopping and takes no new deploys.
        """
        with self._lock:
            if not self._accepting:
                raise RuntimeError("this git process is stopping; push again in a moment")
            return self._pool.submit(self._run, job)

    def _run(self, job: DeployJob) -> str:
        try:
            with self._locks.hold(job.site_id):
                return self._pipeline.run(job)
        except LockTimeout as exc:
            self._pipeline.refuse(job, StepFailed("internal", str(exc)))
            return "failed"
        finally:  # the pipeline ends both after its record; a deploy that never ran here
            job.log.close()
            job.finished()

    def start(self) -> None:
        """Nothing to start: workers are made on demand."""

    def stop(self, timeout: float) -> None:
        """Take no new deploys and let the running ones finish (SIGTERM)."""
        with self._lock:
            self._accepting = False
        finished = threading.Event()

        def wait() -> None:
            self._pool.shutdown(wait=True, cancel_futures=False)
            finished.set()

        threading.Thread(target=wait, daemon=True).start()
        if not finished.wait(timeout):
            log.warning("deploys still running at shutdown")

    def healthy(self) -> bool:
        """True while deploys are taken."""
        return self._accepting
