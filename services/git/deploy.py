"""A deploy: pushed commit -> checked-out files -> CDN release -> recorded at the api."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from services.cdn.base import CDNBackend, PublishError
from services.core.metrics import GitMetrics

from .checkout import DeployRejected, Limits, iter_files, plan_checkout
from .locks import LockTimeout, SiteLocks

__all__ = [
    "DeployFailed",
    "DeployRecorder",
    "DeployRejected",
    "DeploySuperseded",
    "Deployer",
    "Deployment",
]

log = logging.getLogger(__name__)


class DeployFailed(Exception):
    """The deploy could not be done for reasons on our side; the live site is unchanged."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class DeploySuperseded(Exception):
    """A newer push moved the branch while this deploy waited; that push deploys instead."""


class DeployRecorder(Protocol):
    """Records a deploy at the api (``ApiDeployRecorder`` or a test fake)."""

    def record(self, token: str, site_id: str, deploy: dict[str, Any]) -> dict[str, Any]:
        """Record one deploy; raise on refusal or failure."""


@dataclass(frozen=True)
class Deployment:
    """A deploy that went live."""

    site_id: str
    release: str
    commit: str
    file_count: int
    bytes: int
    url: str
    notes: tuple[str, ...] = ()
    record_error: str | None = None


class Deployer:
    """Runs deploys, one at a time per site, and counts their outcomes."""

    def __init__(
        self,
        cdn: CDNBackend,
        recorder: DeployRecorder,
        metrics: GitMetrics,
        limits: Limits,
        locks: SiteLocks,
        clock: Callable[[], float] = time.perf_counter,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        """Wire the collaborators.

        Args:
            cdn: Where releases are published.
            recorder: Records successful deploys at the api.
            metrics: Deploy counters and histograms.
            limits: Maximum files and bytes per deploy.
            locks: Per-site deploy locks.
            clock: Monotonic clock for durations.
            now: Wall clock for release ids.
        """
        self._cdn = cdn
        self._recorder = recorder
        self._metrics = metrics
        self._limits = limits
        self._locks = locks
        self._clock = clock
        self._now = now

    def check(self, site_id: str, store, commit_sha: bytes) -> None:
        """Refuse content that cannot be published, before the branch moves.

        Walks the trees only (no file contents), so it is cheap enough to run while
        the push is still open; the byte budget is enforced by the deploy itself.

        Raises:
            DeployRejected: with the reason for the pusher.
        """
        try:
            plan_checkout(store, commit_sha, self._limits)
        except DeployRejected as exc:
            self._metrics.deploys.labels("rejected").inc()
            log.info("push rejected", extra={"site_id": site_id, "reason": exc.message})
            raise

    def deploy(
        self,
        site_id: str,
        site: Mapping[str, Any],
        token: str,
        store,
        commit_sha: bytes,
        still_current: Callable[[], bool] = lambda: True,
    ) -> Deployment:
        """Publish a commit as the site's live release.

        Args:
            site_id: The site's id (from the authorised URL).
            site: The site JSON from the api (``hostnames``, ``url``).
            token: The pusher's token, used to record the deploy.
            store: The repository's object store.
            commit_sha: Hex sha of the pushed commit.
            still_current: Asked once the site lock is held: False if the branch has
                moved on since this push, so an older push never overwrites a newer one.

        Raises:
            DeployRejected: the content cannot be published (the pusher must fix it).
            DeployFailed: something on our side failed.
            DeploySuperseded: a newer push of the branch will deploy instead.
        """
        started = self._clock()
        try:
            with self._locks.hold(site_id):
                if not still_current():
                    raise DeploySuperseded("the branch moved on while this deploy waited")
                deployment = self._deploy_locked(site_id, site, token, store, commit_sha)
        except DeploySuperseded:
            raise
        except DeployRejected as exc:
            self._metrics.deploys.labels("rejected").inc()
            log.info("deploy rejected", extra={"site_id": site_id, "reason": exc.message})
            raise
        except DeployFailed as exc:
            self._metrics.deploys.labels("failed").inc()
            log.warning("deploy failed", extra={"site_id": site_id, "reason": exc.message})
            raise
        except LockTimeout as exc:
            self._metrics.deploys.labels("failed").inc()
            log.warning("deploy failed", extra={"site_id": site_id, "reason": str(exc)})
            raise DeployFailed(str(exc)) from exc
        except Exception as exc:
            self._metrics.deploys.labels("failed").inc()
            log.exception("deploy crashed", extra={"site_id": site_id})
            raise DeployFailed("internal error while publishing (see the server logs)") from exc
        self._metrics.deploys.labels("success").inc()
        self._metrics.deploy_duration.observe(self._clock() - started)
        self._metrics.deploy_bytes.observe(deployment.bytes)
        return deployment

    def _deploy_locked(self, site_id, site, token, store, commit_sha: bytes) -> Deployment:
        plan = plan_checkout(store, commit_sha, self._limits)
        hostnames = site.get("hostnames")
        if not isinstance(hostnames, list) or not hostnames:
            raise DeployFailed("the api returned no hostnames for this site")
        release = f"{self._now():%Y%m%dT%H%M%S%fZ}-{plan.commit[:12]}"
        try:
            result = self._cdn.publish(
                site_id, hostnames, release, iter_files(store, plan, self._limits)
            )
        except PublishError as exc:
            raise DeployFailed(f"could not publish: {exc}") from exc
        log.info(
            "deploy live",
            extra={
                "site_id": site_id,
                "release": release,
                "commit": plan.commit,
                "files": result.file_count,
                "bytes": result.bytes,
            },
        )
        record_error = None
        try:
            self._recorder.record(
                token,
                site_id,
                {
                    "commit_sha": plan.commit,
                    "release": release,
                    "file_count": result.file_count,
                    "bytes": result.bytes,
                },
            )
        except Exception as exc:  # noqa: BLE001 - the site is live; report, don't undo
            record_error = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
            log.error(
                "deploy not recorded",
                extra={"site_id": site_id, "release": release, "reason": record_error},
            )
        return Deployment(
            site_id=site_id,
            release=release,
            commit=plan.commit,
            file_count=result.file_count,
            bytes=result.bytes,
            url=str(site.get("url") or ""),
            notes=tuple(plan.notes),
            record_error=record_error,
        )
