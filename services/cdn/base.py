"""The CDN backend seam: publish a release of a site's files, then make it live.

The git room produces files; a backend stores them and switches the site's hostnames
to the new release. ``LocalCDN`` writes release directories that Caddy serves; a Bunny
backend (storage API upload, purge) will implement the same interface.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ActivateResult",
    "CDNBackend",
    "Listing",
    "ReleaseBackend",
    "PublishError",
    "PublishResult",
    "SourceFile",
    "check_hostname",
    "check_identifier",
    "check_relative_path",
]

# Ids name directories on the CDN, so they must be a single, boring path component.
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_NAME_MAX = 255  # bytes per path component on Linux file systems


class PublishError(Exception):
    """A publish could not be done; the live site was left as it was."""


@dataclass(frozen=True)
class Listing:
    """What a directory handed over whole holds, as the one who wrote it knows it.

    The pipeline's checkout of a plain site is written by Ecstatic alone, from a tree
    already checked (regular files and directories only, owner-only modes), so the
    backend can take it over without scanning every entry again.
    """

    file_count: int
    bytes: int
    directories: tuple[str, ...]  # relative paths, every one of them; "" not included


@dataclass(frozen=True)
class SourceFile:
    """One file of a release: a relative POSIX path and its contents."""

    path: str
    data: bytes


@dataclass(frozen=True)
class PublishResult:
    """What a publish stored."""

    file_count: int
    bytes: int


def check_identifier(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe single path component (site or release id).

    Raises:
        PublishError: for ``/``, ``..``, empty or otherwise unusual names.
    """
    if not isinstance(value, str) or not _IDENTIFIER.match(value) or ".." in value:
        raise PublishError(f"invalid {kind} {value!r}")
    return value


def check_hostname(value: str) -> str:
    """Return ``value`` if it is a lowercase DNS hostname (no port, no path).

    Raises:
        PublishError: for anything else.
    """
    if not isinstance(value, str) or not _HOSTNAME.match(value):
        raise PublishError(f"invalid hostname {value!r}")
    return value


def check_relative_path(path: str) -> tuple[str, ...]:
    """Split a release-relative POSIX path into safe components.

    Raises:
        PublishError: for absolute paths, empty, ``.`` or ``..`` components, NUL bytes
            or components longer than the file system allows.
    """
    if not isinstance(path, str) or not path or path.startswith("/") or "\x00" in path:
        raise PublishError(f"invalid file path {path!r}")
    parts = tuple(path.split("/"))
    for part in parts:
        if part in ("", ".", "..") or len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX:
            raise PublishError(f"invalid file path {path!r}")
    return parts


class CDNBackend(ABC):
    """Stores releases of a site and switches its hostnames to one atomically."""

    @abstractmethod
    def publish(
        self,
        site_id: str,
        hostnames: Sequence[str],
        release_id: str,
        source: Path | Iterable[SourceFile],
    ) -> PublishResult:
        """Store ``source`` as release ``release_id`` of a site and make it live.

        Args:
            site_id: The site's id.
            hostnames: Every hostname the site is served on.
            release_id: A new, unique id for this release.
            source: A directory to copy, or an iterable of files. If the iterable
                raises, the publish is abandoned and the exception propagates.

        Returns:
            How many files and bytes the release holds.

        Raises:
            PublishError: invalid ids or paths, or the release could not be stored;
                the live site is unchanged.
        """


@dataclass(frozen=True)
class ActivateResult:
    """What making a release live cost: files sent to a remote CDN, or none on ``local``."""

    uploaded: int = 0
    skipped: int = 0
    deleted: int = 0
    bytes_uploaded: int = 0
    remote: bool = False  # a pull-zone cache to purge afterwards


class ReleaseBackend(ABC):
    """The deploy pipeline's view of a CDN: store a release, then make it live.

    Releases are named by the caller with ids that sort like the deploys they come from
    (``steps.release_id``), so "newest" is the deploy record's order, never an mtime.
    """

    @abstractmethod
    def stage(
        self,
        site_id: str,
        release_id: str,
        source: Path,
        adopt: bool = False,
        fresh: Sequence[str] = (),
        listing: Listing | None = None,
    ) -> PublishResult:
        """Store the files under ``source`` as a release; visitors see nothing new yet.

        The backend may hard-link ``source``'s files: the caller hands them over and
        never writes to them afterwards (the pipeline removes its working directory).
        ``adopt``: the caller wrote ``source`` itself (no build touched it); the backend
        may take the directory over whole (``LocalCDN`` renames it). ``fresh``: the files
        in it (relative paths) whose contents were not flushed to disk yet. ``listing``
        (with ``adopt``): what ``source`` holds, vouched for by its writer, so it need
        not be scanned.

        Raises:
            PublishError: invalid ids or files, or the release could not be stored.
        """

    @abstractmethod
    def activate(
        self, site_id: str, hostnames: Sequence[str], release_id: str, preview: bool = False
    ) -> ActivateResult:
        """Make every hostname serve a staged release (``preview``: a branch's own host).

        Raises:
            PublishError: the switch could not be done; what was live stays live (on
                ``bunny``, some changed files may already be in place: no atomic switch).
        """

    @abstractmethod
    def has_release(self, site_id: str, release_id: str) -> bool:
        """True when the release is stored (restorable)."""

    @abstractmethod
    def remove_hostnames(self, site_id: str, hostnames: Sequence[str]) -> None:
        """Stop serving these hostnames (a deleted branch's preview) and forget their files."""

    @abstractmethod
    def prune(self, site_id: str, keep: Sequence[str]) -> None:
        """Remove the site's releases that are neither in ``keep`` nor served by a hostname."""
