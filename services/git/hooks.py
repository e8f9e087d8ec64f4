"""Push hooks: refuse what can never deploy, then deploy every pushed branch live.

``ValidateHook`` is dulwich's ``update`` hook: it runs once the pack is stored but before
a ref moves, so a tree that can never be published (a symlink, a ``..`` name, a bad
``ecstatic.toml``) is refused and the branch stays where it was. ``DeployHook`` is the
``post-receive`` hook: it starts a deploy for each pushed branch (the default branch to
production, any other to its preview) and streams each deploy's log to the pusher as
``remote:`` lines while it runs (``StreamingReceivePackHandler``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from dulwich.errors import HookError
from dulwich.hooks import Hook

from .deploys import DeployStarter, Push, branch_name, deploy_branches
from .pipeline import StepFailed

__all__ = ["DeployHook", "ValidateHook"]

log = logging.getLogger(__name__)

_ZERO = b"0" * 40
RETRY = "hint: to retry, push a new commit (e.g. git commit --allow-empty -m redeploy && git push)"
Write = Callable[[str], None]


class PusherGone(Exception):
    """The pusher's connection closed; the deploy goes on without an audience."""


class DeployHook(Hook):
    """``post-receive``: deploy each pushed branch, streaming its log to the pusher."""

    def __init__(self, starter: DeployStarter, push: Push):
        """Bind the hook to one push (its site, repository and credential)."""
        self._starter = starter
        self._push = push

    def execute(self, client_refs: Sequence[tuple[bytes, bytes, bytes]]) -> bytes:
        """Run without streaming (a client without a sideband): collect the output."""
        lines: list[str] = []
        self.stream(client_refs, lines.append)
        return "".join(f"{line}\n" for line in lines).encode("utf-8")

    def stream(self, client_refs: Sequence[tuple[bytes, bytes, bytes]], write: Write) -> None:
        """Start every deploy, then follow each one's log until it ends or the pusher goes."""
        try:
            jobs = []
            for _old, new, ref in client_refs:
                if not ref.startswith(b"refs/heads/"):
                    write(f"stored {ref.decode('utf-8', 'replace')}; only branches deploy")
                elif new == _ZERO:
                    write(self._starter.remove_preview(self._push, ref))
                else:
                    if ref in deploy_branches(self._push.repo):
                        self._point_head_at(ref)
                    jobs.append((ref, self._starter.start(self._push, ref, new)))
                    write(f"{branch_name(ref)}: deploy queued")
            for ref, job in jobs:
                self._follow(branch_name(ref), job, write)
        except PusherGone:
            log.info("pusher left; deploys go on", extra={"site_id": self._push.site_id})
        except Exception:  # noqa: BLE001 - the push is stored; never break it here
            log.exception("post-receive failed", extra={"site_id": self._push.site_id})
            _safe(write, "error: deploy failed: internal error (see the server logs)")
            _safe(write, RETRY)

    @staticmethod
    def _follow(branch: str, job, write: Write) -> None:
        prefix = f"{branch}: " if job.deploy.get("context") == "preview" else ""
        for line in job.log.follow():
            _safe(write, prefix + line)

    def _point_head_at(self, ref: bytes) -> None:
        # A first push of "master" into a repo whose HEAD names "main" would leave HEAD
        # dangling and clones empty; follow the branch that was actually pushed.
        repo = self._push.repo
        head = repo.refs.get_symrefs().get(b"HEAD")
        if head is None or head == ref:
            return
        try:
            repo.refs[head]
        except KeyError:
            repo.refs.set_symbolic_ref(b"HEAD", ref)


def _safe(write: Write, line: str) -> None:
    try:
        write(line)
    except Exception as exc:  # noqa: BLE001 - whatever the server raises for a closed socket
        raise PusherGone() from exc


class ValidateHook(Hook):
    """``update`` hook: refuse a branch whose tree or config can never deploy."""

    def __init__(self, check: Callable[[bytes], None], site_id: str):
        """Bind the hook to the site's check (``Checkout.check``: raises ``StepFailed``)."""
        self._check = check
        self._site_id = site_id

    def execute(self, ref: bytes, old_sha: bytes, new_sha: bytes) -> tuple[bytes, bytes]:
        """Check one ref update; raise ``HookError`` to refuse it (the ref stays put)."""
        if new_sha == _ZERO or not ref.startswith(b"refs/heads/"):
            return b"", b""
        try:
            self._check(new_sha)
        except StepFailed as exc:
            log.info("push rejected", extra={"site_id": self._site_id, "reason": exc.reason})
            raise HookError(f"deploy rejected: {exc.message}") from exc
        except Exception as exc:
            # Never let a surprise in the check move the branch: refuse, plainly.
            log.exception("push check failed", extra={"site_id": self._site_id})
            raise HookError("deploy rejected: the push could not be checked; try again") from exc
        return b"", b""
