"""The pipeline's steps: checkout, build, publish, activate, record.

Each is a small object with a ``name`` and ``run(job)``; ``Pipeline`` runs them in order.
They raise ``StepFailed`` with a short reason code when the deploy cannot go on, and
never touch what visitors see before ``activate``.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from cachetools import LRUCache

from services.cdn.base import PublishError, ReleaseBackend
from services.cdn.local import flush_all, remove_tree
from services.core.metrics import GitMetrics

from .checkout import (
    DeployRejected,
    Limits,
    Plan,
    Spare,
    forget_unlinked,
    format_bytes,
    link_spare,
    write_checkout,
)
from .deploy_api import DeployApi
from .pipeline import DeployJob, StepFailed, Superseded

__all__ = [
    "Activate",
    "Build",
    "Builder",
    "Checkout",
    "Publish",
    "Record",
    "purge",
    "release_id",
]

log = logging.getLogger(__name__)

_SPARE_SUFFIX = ".spare"  # beside the site's cache directory: "<site id>.spare"


def release_id(job: DeployJob) -> str:
    """Sortable by the deploy's number at the api, never by a clock or an mtime."""
    return f"{int(job.deploy['number']):08d}-{job.deploy_id}"


class Checkout:
    """Write the pushed commit's tree into the deploy's fresh working directory."""

    name = "checkout"
    _PLANS_KEPT = 8  # plans of checked commits whose deploys have not started yet

    def __init__(self, limits: Limits, cache_root: Path | None = None):
        """Bound what a checkout may hold (files, bytes, depth, per-file size).

        Args:
            limits: The limits.
            cache_root: Where each site's checkout cache lives (files by blob sha, linked
                into each checkout, so unchanged files cost neither writing nor copying).
        """
        self._limits = limits
        self._cache_root = cache_root
        # A plan depends only on the commit (content-addressed) and the limits: the
        # deploy of a commit the update hook just checked need not walk it again.
        self._plans: LRUCache[bytes, Plan] = LRUCache(maxsize=self._PLANS_KEPT)
        # Each site's last checkout, linked again after its deploy (``finish``): the next
        # push starts from it and touches only the files that changed.
        self._spares: dict[str, Spare] = {}
        self._checked_out: dict[str, list[tuple[str, bytes]]] = {}  # deploy id -> files
        self._lock = threading.Lock()
        if cache_root is not None:  # spares a previous process left: nobody knows them
            for stale in cache_root.glob(f"*{_SPARE_SUFFIX}"):
                remove_tree(stale)

    def check(self, repo, commit: bytes) -> None:
        """Refuse a commit before its branch moves (``ValidateHook``): no file is written.

        Every limit is checked here: names, depth, file count, each file's size and
        the total (``max_deploy_bytes``), the sizes read from the object headers.
        """
        try:
            plan = write_checkout(repo.object_store, commit, self._limits, dest=None)
        except DeployRejected as exc:
            raise StepFailed("rejected", exc.message) from exc
        with self._lock:
            self._plans[commit] = plan

    def run(self, job: DeployJob) -> None:
        """Check out the commit; the build config and notes land on the job."""
        assert job.workdir is not None
        with self._lock:  # taken, not kept: a big tree's plan is not small
            plan = self._plans.pop(job.commit, None)
            spare = self._spares.pop(job.site_id, None)
        try:
            checkout = write_checkout(
                job.repo.object_store,
                job.commit,
                self._limits,
                dest=job.workdir / "src",
                cache=self._cache(job),
                plan=plan,
                spare=spare,
            )
        except DeployRejected as exc:
            raise StepFailed("rejected", exc.message) from exc
        with self._lock:
            self._checked_out[job.deploy_id] = checkout.files
        job.fresh = checkout.written  # flushed by the release made of them, or by finish
        job.checkout = checkout
        job.config = checkout.config
        for note in checkout.notes:
            job.log.write(f"note: {note}")
        job.log.write(
            f"checked out {job.commit[:7].decode()} "
            f"({checkout.file_count} files, {format_bytes(checkout.bytes)})"
        )

    def finish(self, job: DeployJob) -> None:
        """After the deploy: flush what no release flushed, drop unused cache entries.

        A file the cache keeps is linked into later releases as it is, so its contents
        must be on disk by then, whatever became of this deploy.
        """
        with self._lock:
            files = self._checked_out.pop(job.deploy_id, None)
        cache = self._cache(job)
        if cache is None:
            return
        flush_all(
            [os.fspath(cache / sha.decode("ascii")) for _path, sha in job.fresh], missing_ok=True
        )
        job.fresh = []
        if files is not None:  # before the GC: the spare's links keep its entries
            self._keep_spare(job.site_id, files, cache)
        forget_unlinked(cache)

    def _keep_spare(self, site_id: str, files, cache: Path) -> None:
        path = cache.with_name(f"{cache.name}{_SPARE_SUFFIX}")
        with self._lock:
            self._spares.pop(site_id, None)
        remove_tree(path)  # the spare a deploy did not use (its own, or a failed one's)
        try:
            spare = link_spare(files, cache, path)
        except OSError:
            log.warning("no spare checkout kept", extra={"site_id": site_id}, exc_info=True)
            return
        with self._lock:
            self._spares[site_id] = spare

    def _cache(self, job: DeployJob) -> Path | None:
        return self._cache_root / job.site_id if self._cache_root else None


class Builder(Protocol):
    """Runs a site's build (``services.build``); the seam a Kubernetes Job can fill."""

    def build(self, job: DeployJob) -> Path:
        """Build ``job.workdir / "src"``; return the directory to publish.

        Raises:
            StepFailed: the build failed, timed out or broke a limit.
        """


class Build:
    """Build the site (or take the checked-out tree as it is) and find what to publish."""

    name = "build"

    def __init__(self, builder: Builder):
        """Wire the builder."""
        self._builder = builder

    def run(self, job: DeployJob) -> None:
        """Build, then stop here if a newer push has overtaken this one."""
        job.publish_dir = self._builder.build(job)
        if not job.still_current():
            raise Superseded()


class Publish:
    """Store the built files as a release on the CDN backend; nothing goes live yet."""

    name = "publish"

    def __init__(self, cdn: ReleaseBackend, metrics: GitMetrics):
        """Wire the backend and the metrics."""
        self._cdn = cdn
        self._metrics = metrics

    def run(self, job: DeployJob) -> None:
        """Stage the release."""
        assert job.publish_dir is not None
        job.release = release_id(job)
        # A plain site publishes its checkout as it is (builds copy it, never change it):
        # that directory is the pipeline's own, so the backend may take it over whole.
        src = job.workdir / "src" if job.workdir is not None else None
        adopt = src is not None and job.publish_dir.is_relative_to(src)
        fresh: list[str] = []
        listing = None
        if adopt:
            prefix = job.publish_dir.relative_to(src).as_posix()
            prefix = "" if prefix == "." else prefix + "/"
            fresh = [p.removeprefix(prefix) for p, _sha in job.fresh if p.startswith(prefix)]
            # No build ran on it: it holds what the checkout wrote, so it is not scanned.
            listing = job.checkout.listing(prefix) if job.checkout is not None else None
        try:
            stored = self._cdn.stage(
                job.site_id,
                job.release,
                job.publish_dir,
                adopt=adopt,
                fresh=fresh,
                listing=listing,
            )
        except PublishError as exc:
            raise StepFailed("publish_failed", f"could not store the release: {exc}") from exc
        job.file_count, job.bytes = stored.file_count, stored.bytes
        if adopt and len(fresh) == len(job.fresh):
            job.fresh = []  # flushed with the release (or by its sync, off the rename path)
        self._metrics.deploy_bytes.observe(stored.bytes)


class Activate:
    """Make the release what the deploy's hostnames serve (atomic on ``local``)."""

    name = "activate"

    def __init__(self, cdn: ReleaseBackend, api: DeployApi, metrics: GitMetrics):
        """Wire the backend, the api (which purges a remote CDN's cache) and the metrics."""
        self._cdn = cdn
        self._api = api
        self._metrics = metrics

    def run(self, job: DeployJob) -> None:
        """Switch the hostnames; from here on the new version is what visitors get."""
        assert job.release is not None
        if not job.still_current():
            raise Superseded()
        try:
            preview = job.deploy.get("context") == "preview"
            result = self._cdn.activate(job.site_id, job.hostnames, job.release, preview)
        except PublishError as exc:
            raise StepFailed("activate_failed", f"could not make the release live: {exc}") from exc
        self._metrics.files.labels("uploaded").inc(result.uploaded)
        self._metrics.files.labels("skipped").inc(result.skipped)
        self._metrics.uploaded_bytes.inc(result.bytes_uploaded)
        if result.remote:
            purge(self._api, job.credential, job.site_id, job.log.write)
        job.log.write(
            f"published {job.file_count} {'file' if job.file_count == 1 else 'files'} "
            f"({format_bytes(job.bytes)}) as release {job.release}"
            + (f"; {result.uploaded} uploaded, {result.skipped} unchanged" if result.remote else "")
        )


class Record:
    """Tell the api the deploy is live and point its context at it; then prune."""

    name = "record"

    def __init__(self, api: DeployApi, cdn: ReleaseBackend, keep: int = 5):
        """Wire the api client and the backend; ``keep`` releases per site are kept."""
        self._api = api
        self._cdn = cdn
        self._keep = keep

    def run(self, job: DeployJob) -> None:
        """Record; a failure here is reported as what it is: live, but not recorded."""
        url = job.site.get("url") or ""
        if job.deploy.get("context") == "preview":
            url = f"{_scheme(url)}://{job.deploy['hostname']}{_port(url)}/"
        job.url = url
        # Said before the record says live: whoever sees "live" can read the whole log.
        job.log.write(f"live at {url}")
        try:
            changes = {
                "state": "live",
                "release": job.release,
                "file_count": job.file_count,
                "bytes": job.bytes,
                "generator": job.generator,
                "step_seconds": job.step_seconds,
            }
            live = {k: v for k, v in changes.items() if v is not None}

            def record() -> None:
                job.deploy = self._api.update(job.credential, job.site_id, job.deploy_id, live)
                self._api.activate(job.credential, job.site_id, job.deploy_id)

            # After the log so far and every earlier update of the record, in order.
            job.log.call(record)
        except Exception as exc:  # noqa: BLE001 - the site IS live: say so, never "failed"
            log.error("deploy not recorded", extra={"site_id": job.site_id, "reason": str(exc)})
            job.log.write(f"warning: the site is live but the deploy was not recorded: {exc}")
        self._prune(job)

    def _prune(self, job: DeployJob) -> None:
        try:
            deploys = self._api.list(job.credential, job.site_id)
            keep = [d["release"] for d in deploys if d.get("release") and d.get("state") == "live"]
            self._cdn.prune(job.site_id, keep[: self._keep])
        except Exception:  # noqa: BLE001 - pruning costs disk, never availability
            log.warning("release pruning failed", extra={"site_id": job.site_id}, exc_info=True)


def purge(api: DeployApi, credential: str, site_id: str, say) -> None:
    """Ask the api to purge the pull zone's cache; a failure only delays fresh content."""
    try:
        api.purge(credential, site_id)
    except Exception as exc:  # noqa: BLE001 - the files are in place; the cache catches up
        log.warning("cache purge failed", extra={"site_id": site_id, "reason": str(exc)})
        say(f"warning: the CDN cache was not purged ({exc}); it may serve the old files a while")


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "http"


def _port(url: str) -> str:
    host = url.split("://", 1)[-1].split("/", 1)[0]
    return ":" + host.rsplit(":", 1)[1] if ":" in host else ""
