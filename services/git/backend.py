"""Bare repositories, one per site, and the dulwich backend that serves one of them.

Repositories live at ``{root}/{site_id}.git``. The site id is checked against the
api's id format before it touches a path, and a request's backend opens only the
repository of the site its caller was authorised for, whatever path dulwich asks for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from dulwich.errors import NotGitRepository
from dulwich.hooks import Hook
from dulwich.repo import Repo
from dulwich.server import Backend

from services.cdn.local import remove_tree

__all__ = ["SITE_ID", "SiteBackend", "SiteRepos"]

log = logging.getLogger(__name__)

# Site ids as the api issues them: 16 lowercase hex digits. Nothing else is a path here.
SITE_ID = re.compile(r"^[0-9a-f]{16}$")


class SiteRepos:
    """The bare repositories under ``root``, created on first use."""

    def __init__(self, root: Path, default_branch: bytes = b"main"):
        """Create the collection (no disk access until a repository is opened).

        Args:
            root: Directory holding ``{site_id}.git`` (``config.git_root``).
            default_branch: Branch HEAD names in a new repository.
        """
        self.root = Path(root)
        self._default_branch = default_branch

    def path(self, site_id: str) -> Path:
        """The repository path of a site.

        Raises:
            ValueError: ``site_id`` is not a site id.
        """
        if not isinstance(site_id, str) or not SITE_ID.match(site_id):
            raise ValueError(f"invalid site id {site_id!r}")
        return self.root / f"{site_id}.git"

    def open(self, site_id: str) -> Repo:
        """Open a site's bare repository, creating it if it does not exist yet."""
        path = self.path(site_id)
        if path.exists():
            return Repo(str(path))
        self.root.mkdir(parents=True, exist_ok=True)
        # Initialise under a temporary name and rename into place, so a concurrent
        # first push never sees a half-made repository.
        staging = tempfile.mkdtemp(prefix=f".tmp-{site_id}-", dir=self.root)
        try:
            Repo.init_bare(staging, default_branch=self._default_branch).close()
            os.rename(staging, path)
            log.info("repository created", extra={"site_id": site_id})
        except OSError:
            if not path.exists():
                raise
        finally:
            with contextlib.suppress(OSError):
                remove_tree(Path(staging))
        return Repo(str(path))

    def sweep(self) -> None:
        """At start: remove what a killed process left behind.

        That is half-made repositories (``.tmp-*``) and dulwich's ``objects/tmp_pack_*``
        files from interrupted pushes. It assumes one receiver process per ``root``
        (the layout: one git worker owns the repositories), so nothing here is in use.
        """
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                if entry.name.startswith(".tmp-"):
                    remove_tree(Path(entry.path))
                elif entry.name.endswith(".git") and entry.is_dir(follow_symlinks=False):
                    for leftover in Path(entry.path, "objects").glob("tmp_pack_*"):
                        leftover.unlink()
                        log.info("removed an interrupted pack", extra={"file": str(leftover)})
            except OSError:
                log.warning("sweep failed", extra={"entry": entry.name}, exc_info=True)


class SiteBackend(Backend):
    """A per-request dulwich backend serving exactly one site's repository."""

    def __init__(
        self,
        repos: SiteRepos,
        site_id: str,
        url_path: str,
        hooks: Callable[[Repo], dict[str, Hook]],
    ):
        """Bind the backend to one authorised site.

        Args:
            repos: Where repositories live.
            site_id: The site the caller was authorised for.
            url_path: The only repository path served (``/git/{site_id}.git``).
            hooks: Builds the hooks to attach to the opened repository.
        """
        self._repos = repos
        self._site_id = site_id
        self._url_path = url_path
        self._hooks = hooks
        self._opened: list[Repo] = []

    def open_repository(self, path: str | bytes) -> Repo:
        """Open the site's repository if ``path`` names it.

        Raises:
            NotGitRepository: for any other path.
        """
        if isinstance(path, bytes):  # dulwich passes bytes for POSTs, str for info/refs
            path = path.decode("utf-8", "replace")
        if path != self._url_path:
            raise NotGitRepository(f"no repository at {path}")
        repo = self._repos.open(self._site_id)
        # Only our hooks run: never a script that happens to sit in the repo's hooks dir.
        repo.hooks.clear()
        repo.hooks.update(self._hooks(repo))
        self._opened.append(repo)
        return repo

    def close(self) -> None:
        """Close every repository this request opened."""
        while self._opened:
            self._opened.pop().close()
