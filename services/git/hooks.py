"""Push hooks: refuse unpublishable content, then deploy the default branch.

``ValidateHook`` is the ``update`` hook: dulwich runs it once the pack is stored but
before the ref moves, so content that can never be published (a symlink, a ``..``
name, too many files) is refused and the push fails. ``DeployHook`` is the
``post-receive`` hook: dulwich runs it after the refs moved and writes what it returns
to the progress sideband, which the git client prints as ``remote:`` lines. It never
raises: a failure becomes an ``error:`` line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from dulwich.errors import HookError
from dulwich.hooks import Hook

from .checkout import DeployRejected, format_bytes
from .deploy import Deployer, DeployFailed, DeploySuperseded

__all__ = ["DEFAULT_BRANCHES", "DeployHook", "ValidateHook", "deploy_branches"]

log = logging.getLogger(__name__)

DEFAULT_BRANCHES = (b"refs/heads/main", b"refs/heads/master")
_ZERO = b"0" * 40
_RETRY = "hint: to retry, push a new commit (e.g. git commit --allow-empty -m redeploy && git push)"


def deploy_branches(repo) -> list[bytes]:
    """The refs whose pushes deploy: what HEAD names, then main, then master."""
    head = repo.refs.get_symrefs().get(b"HEAD")
    return list(dict.fromkeys(ref for ref in (head, *DEFAULT_BRANCHES) if ref))


def _name(ref: bytes) -> str:
    return ref.removeprefix(b"refs/heads/").decode("utf-8", "replace")


def _short(sha: bytes) -> str:
    return sha[:7].decode("ascii", "replace")


class DeployHook(Hook):
    """Deploys the default branch of one site's repository after a push."""

    def __init__(self, deployer: Deployer, repo, site_id: str, site: Mapping[str, Any], token: str):
        """Bind the hook to one request's repository, site and pusher.

        Args:
            deployer: Runs the deploy.
            repo: The dulwich repository that received the push.
            site_id: The site's id.
            site: The site JSON from the api (``hostnames``, ``url``).
            token: The pusher's token.
        """
        self._deployer = deployer
        self._repo = repo
        self._site_id = site_id
        self._site = site
        self._token = token

    def execute(self, client_refs: Sequence[tuple[bytes, bytes, bytes]]) -> bytes:
        """Handle the updated refs; return the text the pusher sees."""
        try:
            lines = self._handle(list(client_refs))
        except Exception:  # noqa: BLE001 - the push is stored; never break it here
            log.exception("post-receive failed", extra={"site_id": self._site_id})
            lines = ["error: deploy failed: internal error (see the server logs)", _RETRY]
        return ("".join(f"{line}\n" for line in lines)).encode("utf-8")

    def _handle(self, client_refs: list[tuple[bytes, bytes, bytes]]) -> list[str]:
        head = self._repo.refs.get_symrefs().get(b"HEAD")
        deployable = deploy_branches(self._repo)
        pushed = {ref: new for _old, new, ref in client_refs}
        chosen = next((ref for ref in deployable if ref in pushed and pushed[ref] != _ZERO), None)
        lines: list[str] = []
        for _old, new, ref in client_refs:
            if ref == chosen:
                continue
            if new == _ZERO:
                lines.append(f"deleted {_name(ref)}; the live site is unchanged")
            elif chosen is None:
                target = _name(head or DEFAULT_BRANCHES[0])
                lines.append(
                    f"stored {_name(ref)} ({_short(new)}); not deployed: only {target} goes live"
                )
            else:
                lines.append(
                    f"stored {_name(ref)} ({_short(new)}); not deployed: {_name(chosen)} was"
                )
        if chosen is not None:
            self._point_head_at(head, chosen)
            lines.extend(self._deploy(chosen, pushed[chosen]))
        return lines

    def _point_head_at(self, head: bytes | None, ref: bytes) -> None:
        # A first push of "master" into a repo whose HEAD names "main" would leave HEAD
        # dangling and clones empty; follow the branch that was actually pushed.
        if head is None or head == ref:
            return
        try:
            self._repo.refs[head]
        except KeyError:
            self._repo.refs.set_symbolic_ref(b"HEAD", ref)

    def _deploy(self, ref: bytes, sha: bytes) -> list[str]:
        branch = _name(ref)

        def still_current() -> bool:
            try:
                return self._repo.refs[ref] == sha
            except KeyError:
                return False

        try:
            done = self._deployer.deploy(
                self._site_id, self._site, self._token, self._repo.object_store, sha, still_current
            )
        except DeployRejected as exc:
            return [
                f"error: deploy rejected: {exc.message}",
                f"error: the live site was not changed ({branch} at {_short(sha)} is stored)",
            ]
        except DeployFailed as exc:
            return [
                f"error: deploy failed: {exc.message}",
                "error: the live site was not changed",
                _RETRY,
            ]
        except DeploySuperseded:
            return [f"{branch} moved on during this push; the newer push deploys instead"]
        lines = [f"note: {note}" for note in done.notes]
        lines.append(
            f"published {done.file_count} {'file' if done.file_count == 1 else 'files'} "
            f"({format_bytes(done.bytes)}) "
            f"from {branch} at {_short(sha)} as release {done.release}"
        )
        if done.record_error:
            lines.append(
                f"warning: the site is live but the deploy was not recorded: {done.record_error}"
            )
        lines.append(f"live at {done.url}")
        return lines


class ValidateHook(Hook):
    """``update`` hook: refuse a push to a deploy branch whose tree cannot be published."""

    def __init__(self, deployer: Deployer, repo, site_id: str):
        """Bind the hook to one request's repository and site."""
        self._deployer = deployer
        self._repo = repo
        self._site_id = site_id

    def execute(self, ref: bytes, old_sha: bytes, new_sha: bytes) -> tuple[bytes, bytes]:
        """Check one ref update; raise ``HookError`` to refuse it."""
        if new_sha == _ZERO or ref not in deploy_branches(self._repo):
            return b"", b""
        try:
            self._deployer.check(self._site_id, self._repo.object_store, new_sha)
        except DeployRejected as exc:
            raise HookError(f"deploy rejected: {exc.message}") from exc
        except Exception:  # noqa: BLE001 - let the deploy itself report what is wrong
            log.exception("push check failed", extra={"site_id": self._site_id})
        return b"", b""
