"""Starting deploys for a push: the api's record first, then the queue.

``DeployStarter`` is what the push hooks talk to. It knows which branch deploys where
(the default branch to production, any other to its own preview hostname), creates the
deploy record at the api, and hands a ``DeployJob`` to the queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dulwich.objects import Commit

from services.cdn.base import CDNBackend

from .deploy_api import DeployApi
from .deploy_log import DeployLog
from .inflight import InFlight
from .pipeline import DeployJob
from .queue import DeployQueue

__all__ = ["DEFAULT_BRANCHES", "DeployStarter", "Push", "deploy_branches"]

log = logging.getLogger(__name__)

DEFAULT_BRANCHES = (b"refs/heads/main", b"refs/heads/master")
_MAX_MESSAGE = 200


def deploy_branches(repo) -> list[bytes]:
    """The refs whose pushes go to production: what HEAD names, then main, then master."""
    head = repo.refs.get_symrefs().get(b"HEAD")
    return list(dict.fromkeys(ref for ref in (head, *DEFAULT_BRANCHES) if ref))


def branch_name(ref: bytes) -> str:
    """``refs/heads/feature/x`` -> ``feature/x``."""
    return ref.removeprefix(b"refs/heads/").decode("utf-8", "replace")


@dataclass(frozen=True)
class Push:
    """One pushed ref of one site, with what the pusher is allowed to do."""

    site_id: str
    site: dict[str, Any]
    repo: Any
    credential: str


class DeployStarter:
    """Creates deploy records and queues their jobs."""

    def __init__(
        self,
        api: DeployApi,
        queue: DeployQueue,
        cdn: CDNBackend,
        inflight: InFlight | None = None,
    ):
        """Wire the api client, the queue, the CDN (for removing previews) and the
        in-flight entries (so a restart after a crash can mark what died)."""
        self._api = api
        self._queue = queue
        self._cdn = cdn
        self._inflight = inflight

    def start(self, push: Push, ref: bytes, sha: bytes) -> DeployJob:
        """Record a queued deploy of ``ref`` at ``sha`` and queue it."""
        production = ref in deploy_branches(push.repo)
        commit = _commit(push.repo, sha)
        body = {
            "context": "production" if production else "preview",
            "branch": branch_name(ref),
            "commit_sha": sha.decode("ascii"),
            "author": _author(commit),
            "message": _message(commit),
        }
        deploy = self._api.create(push.credential, push.site_id, body)
        job_log = DeployLog(
            ship=lambda lines: self._api.append_log(
                push.credential, push.site_id, str(deploy["id"]), lines
            )
        )

        def still_current() -> bool:
            try:
                return push.repo.refs[ref] == sha
            except KeyError:
                return False

        deploy_id = str(deploy["id"])
        inflight = self._inflight
        if inflight is not None:
            inflight.enter(push.site_id, deploy_id, push.credential)
        job = DeployJob(
            site_id=push.site_id,
            site=push.site,
            deploy=deploy,
            repo=push.repo,
            commit=sha,
            credential=push.credential,
            log=job_log,
            still_current=still_current,
            finished=(lambda: inflight.leave(deploy_id)) if inflight else (lambda: None),
        )
        # Not queued (the process is stopping)? The entry stays, held until the process
        # exits: the next start marks the record interrupted rather than leave it queued.
        self._queue.submit(job)
        return job

    def remove_preview(self, push: Push, ref: bytes) -> str:
        """A deleted branch: its preview's files and hostname go; returns what to tell."""
        branch = branch_name(ref)
        previews = {p.get("branch"): p for p in push.site.get("previews") or []}
        preview = previews.get(branch)
        if preview is None:  # push.site may be the authorizer's copy from before the preview
            deploys = self._api.list(push.credential, push.site_id)
            current = [d for d in deploys if d.get("current") and d.get("branch") == branch]
            preview = next((d for d in current if d.get("context") == "preview"), None)
        if preview is None:
            return f"deleted {branch}; it had no preview"
        self._cdn.remove_hostnames(push.site_id, [str(preview["hostname"])])
        self._api.remove_preview(push.credential, push.site_id, branch)
        return f"deleted {branch}; its preview {preview['hostname']} is gone"


def _commit(repo, sha: bytes) -> Commit | None:
    try:
        obj = repo.object_store[sha]
    except KeyError:
        return None
    return obj if isinstance(obj, Commit) else None


def _author(commit: Commit | None) -> str:
    # The name only: the email address is nobody's business on a deploy list.
    if commit is None:
        return ""
    return commit.author.split(b"<", 1)[0].strip().decode("utf-8", "replace")[:100]


def _message(commit: Commit | None) -> str:
    if commit is None:
        return ""
    first = commit.message.split(b"\n", 1)[0].strip()
    return first.decode("utf-8", "replace")[:_MAX_MESSAGE]
