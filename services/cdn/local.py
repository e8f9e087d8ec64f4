"""The local CDN: release directories on disk, switched live by a symlink per hostname.

Layout (Caddy serves ``root {home}/cdn/live/{host}``)::

    {root}/releases/{site_id}/{release_id}/<files>
    {root}/live/{hostname} -> ../releases/{site_id}/{release_id}

A release is written under a temporary name and renamed into place when complete; the
hostname symlink is then replaced with ``os.replace``, which is atomic, so a visitor
sees the old release or the new one, never a mix and never a missing file.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .base import (
    ActivateResult,
    CDNBackend,
    Listing,
    PublishError,
    PublishResult,
    ReleaseBackend,
    SourceFile,
    check_hostname,
    check_identifier,
    check_relative_path,
)

__all__ = ["LocalCDN", "flush_all", "remove_tree"]

log = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_CHUNK = 1 << 20


class LocalCDN(CDNBackend, ReleaseBackend):
    """Release directories under ``root``, made live by atomic symlink switches.

    It is the deploy pipeline's ``ReleaseBackend`` (``stage``, ``activate``,
    ``has_release``, ``remove_hostnames``, ``prune``) and keeps ``publish`` (both at once).

    Release ids sort like the deploys they come from (``{number:08d}-{deploy_id}``, or
    the older timestamped ids): "newest" is the id's order, never a directory mtime,
    which a crash mid-removal can leave looking newest.
    """

    def __init__(
        self,
        root: Path,
        keep: int = 5,
        sync: bool = True,
        stale_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ):
        """Create the backend (touches no disk until the first publish).

        Args:
            root: The CDN root (``config.cdn_root``).
            keep: Releases kept per site, the live one included. At least 2, so the
                release visitors were just served from is never pruned under them.
            sync: Flush written files to disk before switching, so a crash right
                after a switch cannot leave the live site pointing at empty files.
            stale_seconds: Age after which an abandoned temporary release is removed.
            clock: Wall clock in seconds: ages abandoned temporaries.
        """
        if keep < 2:
            raise ValueError("keep must be at least 2")
        self.root = Path(root)
        self._keep = keep
        self._sync = sync
        self._stale_seconds = stale_seconds
        self._clock = clock

    @property
    def releases_dir(self) -> Path:
        """Where every site's releases live."""
        return self.root / "releases"

    @property
    def live_dir(self) -> Path:
        """One symlink per hostname, pointing at the live release."""
        return self.root / "live"

    def release_path(self, site_id: str, release_id: str) -> Path:
        """Where a release's files are (or would be)."""
        site = check_identifier("site id", site_id)
        return self.releases_dir / site / check_identifier("release id", release_id)

    def publish(
        self,
        site_id: str,
        hostnames: Sequence[str],
        release_id: str,
        source: Path | Iterable[SourceFile],
    ) -> PublishResult:
        """Write a release, switch every hostname to it, then prune old releases.

        See ``CDNBackend.publish``. Pruning never fails the publish: the new release
        is live by then, and a release that cannot be removed is retried by ``sweep``.
        """
        hosts = _hosts(hostnames)
        result = self.stage(site_id, release_id, source)
        self._switch(hosts, site_id, release_id)
        log.info(
            "release published",
            extra={
                "site_id": site_id,
                "release": release_id,
                "hosts": hosts,
                "files": result.file_count,
                "bytes": result.bytes,
            },
        )
        self.prune(site_id)
        return result

    def stage(
        self,
        site_id: str,
        release_id: str,
        source: Path | Iterable[SourceFile],
        adopt: bool = False,
        fresh: Sequence[str] = (),
        listing: Listing | None = None,
    ) -> PublishResult:
        """Store a complete release under its final name; nothing is served from it yet.

        ``adopt``: ``source`` is a directory the caller wrote itself and hands over whole
        (the pipeline's checkout of a plain site); ``fresh`` names the files in it
        (relative paths) whose contents may not be on disk yet, the others having been
        flushed before. It is checked (regular files and directories only), its modes
        made owner-only, renamed into place, and its fresh files and every directory
        flushed before this returns: nothing is linked or copied. On another file system
        it is linked or copied as usual. With a ``listing`` the writer vouches for what
        it holds (and that it made it owner-only), so the check's scan is skipped.
        """
        final = self.release_path(site_id, release_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(final):
            raise PublishError(f"release {release_id} already exists")
        if adopt and isinstance(source, (str, os.PathLike)):
            adopted = self._adopt(Path(source), final, fresh, listing)
            if adopted is not None:
                return adopted
        staging = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=final.parent))
        try:
            result = _fill(staging, source)
            if self._sync:
                os.sync()
            os.chmod(staging, 0o700)
            os.rename(staging, final)
        except BaseException as exc:
            _discard(staging)
            if isinstance(exc, OSError):
                raise PublishError(f"could not store the release: {exc}") from exc
            raise
        return result

    def activate(
        self, site_id: str, hostnames: Sequence[str], release_id: str, preview: bool = False
    ) -> ActivateResult:
        """Switch every hostname to a staged release (atomically, one link each).

        Returns:
            An empty ``ActivateResult``: nothing is uploaded anywhere.
        """
        if not self.has_release(site_id, release_id):
            raise PublishError(f"release {release_id} is not stored")
        self._switch(_hosts(hostnames), site_id, release_id)
        return ActivateResult()

    def has_release(self, site_id: str, release_id: str) -> bool:
        """True when the release is stored."""
        return self.release_path(site_id, release_id).is_dir()

    def remove_hostnames(self, site_id: str, hostnames: Sequence[str]) -> None:
        """Stop serving hostnames that serve this site (others' links are left alone)."""
        for host in _hosts(hostnames):
            link = self.live_dir / host
            with contextlib.suppress(OSError):
                if (_parse_target(os.readlink(link)) or ("",))[0] == site_id:
                    os.unlink(link)

    def live_release(self, hostname: str) -> tuple[str, str] | None:
        """The ``(site_id, release_id)`` a hostname serves, or None if it has none."""
        try:
            target = os.readlink(self.live_dir / check_hostname(hostname))
        except OSError:
            return None
        return _parse_target(target)

    def releases(self, site_id: str) -> list[str]:
        """A site's stored releases, newest (highest id) first."""
        site_dir = self.releases_dir / check_identifier("site id", site_id)
        try:
            entries = list(os.scandir(site_dir))
        except FileNotFoundError:
            return []
        names = [
            e.name
            for e in entries
            if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
        ]
        return sorted(names, reverse=True)

    def prune(self, site_id: str, keep: Sequence[str] | None = None) -> None:
        """Remove releases that are neither kept nor live; never raises.

        Args:
            site_id: The site.
            keep: Release ids to keep; by default the ``keep`` newest by id.
        """
        try:
            in_use = {rel for site, rel in self._live_targets() if site == site_id}
            names = self.releases(site_id)
            kept = set(names[: self._keep] if keep is None else keep)
            for name in names:
                if name not in kept and name not in in_use:
                    _discard(self.releases_dir / site_id / name)
                    log.info("release pruned", extra={"site_id": site_id, "release": name})
            self._sweep_site(self.releases_dir / site_id, self._clock() - self._stale_seconds)
        except Exception:  # noqa: BLE001 - pruning costs disk, never a deploy
            log.warning("release pruning failed", extra={"site_id": site_id}, exc_info=True)

    def sweep(self) -> None:
        """At start: remove what a killed process left (temporaries, half-removed releases)."""
        try:
            sites = [e.path for e in os.scandir(self.releases_dir) if e.is_dir()]
        except FileNotFoundError:
            sites = []
        for site_dir in sites:
            self._sweep_site(Path(site_dir), cutoff=float("inf"))
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.live_dir):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    # -- internals --------------------------------------------------------------------

    def _adopt(
        self, source: Path, final: Path, fresh: Sequence[str], listing: Listing | None
    ) -> PublishResult | None:
        """Rename a checked directory into place; None where it is on another volume."""
        if source.is_symlink() or not source.is_dir():
            raise PublishError(f"{source} is not a directory")
        try:
            os.chmod(source, 0o700)
            if listing is None:
                result, directories = _check_adopted(source)
            else:
                result = PublishResult(file_count=listing.file_count, bytes=listing.bytes)
                directories = ["", *listing.directories]
            os.rename(source, final)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return None
            raise PublishError(f"could not store the release: {exc}") from exc
        if self._sync:
            # Renamed first, flushed after, all in one round: nothing names the release
            # until ``activate`` switches a link to it, which comes after this flush.
            try:
                flush_all(
                    [_under(final, f) for f in fresh],
                    [*(_under(final, d) for d in directories), os.fspath(final.parent)],
                )
            except OSError as exc:
                _discard(final)
                raise PublishError(f"could not store the release: {exc}") from exc
        return result

    def _sweep_site(self, site_dir: Path, cutoff: float) -> None:
        for entry in os.scandir(site_dir):
            stale = entry.name.startswith(_TMP_PREFIX) and (
                entry.stat(follow_symlinks=False).st_mtime < cutoff
            )
            if stale or entry.name.startswith(_TRASH_PREFIX):
                try:
                    remove_tree(Path(entry.path))
                except OSError:
                    log.warning("could not remove %s", entry.name, exc_info=True)

    def _switch(self, hosts: list[str], site_id: str, release_id: str) -> None:
        self.live_dir.mkdir(parents=True, exist_ok=True)
        target = f"../releases/{site_id}/{release_id}"
        for host in hosts:
            temp = self.live_dir / f".{host}.{secrets.token_hex(6)}.tmp"
            try:
                os.symlink(target, temp)
                os.replace(temp, self.live_dir / host)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise PublishError(
                    f"could not switch {host} to release {release_id}: {exc}"
                ) from exc
        if self._sync:
            _fsync_dir(self.live_dir)

    def _live_targets(self) -> set[tuple[str, str]]:
        try:
            links = list(os.scandir(self.live_dir))
        except FileNotFoundError:
            return set()
        targets = set()
        for entry in links:
            if entry.is_symlink():
                with contextlib.suppress(OSError):
                    parsed = _parse_target(os.readlink(entry.path))
                    if parsed:
                        targets.add(parsed)
        return targets


def remove_tree(path: Path) -> None:
    """Remove a directory tree without recursion and without deep paths.

    Python 3.11's ``shutil.rmtree`` and ``os.walk`` both recurse, so a tree nested a
    thousand deep raises ``RecursionError``; its paths also outgrow ``PATH_MAX``.
    Instead every subdirectory found is first moved up to sit directly under ``path``
    (relative to open directory fds), so the work list stays flat and at most two
    descriptors are open. Symlinks are unlinked, never followed.
    """
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    try:
        pending = _empty_dir(top, top)
        while pending:
            name = pending.pop()
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
            try:
                pending.extend(_empty_dir(fd, top))
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=top)
    finally:
        os.close(top)
    os.rmdir(path)


def _empty_dir(fd: int, top: int) -> list[str]:
    """Unlink the files in directory ``fd``; move its subdirectories under ``top``."""
    moved = []
    with os.scandir(fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in names:
        if not is_dir:
            os.unlink(name, dir_fd=fd)
        elif fd == top:
            moved.append(name)
        else:
            flat = f".rm-{secrets.token_hex(8)}"
            os.rename(name, flat, src_dir_fd=fd, dst_dir_fd=top)
            moved.append(flat)
    return moved


def _discard(path: Path) -> None:
    # Rename first (atomic): a crash mid-removal leaves a ".trash-" entry that no
    # listing shows and the next sweep finishes, never a half-deleted release.
    trash = path.with_name(f"{_TRASH_PREFIX}{path.name}-{secrets.token_hex(4)}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    remove_tree(trash)


def _hosts(hostnames: Sequence[str]) -> list[str]:
    if isinstance(hostnames, str) or not hostnames:
        raise PublishError("a release needs at least one hostname")
    return list(dict.fromkeys(check_hostname(h) for h in hostnames))


def _parse_target(target: str) -> tuple[str, str] | None:
    parts = target.split("/")
    if len(parts) == 4 and parts[0] == ".." and parts[1] == "releases":
        return parts[2], parts[3]
    return None


def _fill(staging: Path, source: Path | Iterable[SourceFile]) -> PublishResult:
    writer = _ReleaseWriter(staging)
    if isinstance(source, (str, os.PathLike)):
        _copy_tree(Path(source), writer)
    else:
        for item in source:
            # A streamed file (git's StreamedFile) hands over its chunks one at a time.
            chunks = getattr(item, "chunks", None)
            writer.write(item.path, chunks() if callable(chunks) else [item.data])
    return PublishResult(file_count=writer.files, bytes=writer.bytes)


def _check_adopted(source: Path) -> tuple[PublishResult, list[str]]:
    """Count a directory handed over whole, fixing modes; refuse anything but files.

    Returns the counts and every directory, relative (``""`` first), for flushing.
    """
    files = size = 0
    top = os.fspath(source)
    directories = [""]
    pending = [top]
    while pending:
        with os.scandir(pending.pop()) as scan:
            entries = list(scan)
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                if stat.S_IMODE(info.st_mode) != 0o700:
                    os.chmod(entry.path, 0o700)
                directories.append(os.path.relpath(entry.path, top))
                pending.append(entry.path)
            elif stat.S_ISREG(info.st_mode):
                if stat.S_IMODE(info.st_mode) != 0o600:
                    os.chmod(entry.path, 0o600)  # owner-only: Caddy runs as this same user
                files += 1
                size += info.st_size
            else:
                rel = os.path.relpath(entry.path, source)
                raise PublishError(f"{rel} is not a regular file; releases hold files only")
    return PublishResult(file_count=files, bytes=size), directories


def _under(root: Path, relative: str) -> str:
    return os.fspath(root.joinpath(*check_relative_path(relative))) if relative else os.fspath(root)


def _copy_tree(source: Path, writer: _ReleaseWriter) -> None:
    # An explicit stack, not os.walk (which recurses on 3.11): build output is untrusted.
    if not source.is_dir():
        raise PublishError(f"{source} is not a directory")
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(source / rel_dir if rel_dir else source) as scan:
            entries = sorted(scan, key=lambda e: e.name, reverse=True)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_symlink():
                raise PublishError(f"{rel} is a symlink; releases hold regular files only")
            if entry.is_dir(follow_symlinks=False):
                stack.append(rel)
            elif not entry.is_file(follow_symlinks=False):
                raise PublishError(f"{rel} is not a regular file")
            elif not writer.link(rel, entry.path):
                with open(entry.path, "rb") as handle:
                    writer.write(rel, iter(lambda h=handle: h.read(_CHUNK), b""))


class _ReleaseWriter:
    """Writes files under a fresh staging directory, refusing anything unusual."""

    def __init__(self, staging: Path):
        self._staging = staging
        self._dirs: set[tuple[str, ...]] = {()}
        self.files = 0
        self.bytes = 0

    def write(self, path: str, chunks: Iterable[bytes]) -> None:
        parts = check_relative_path(path)
        self._ensure_dir(parts[:-1])
        target = self._staging.joinpath(*parts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(target, flags, 0o600)
        except FileExistsError as exc:
            raise PublishError(f"{path} appears twice in the release") from exc
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, 0o600)  # owner-only: Caddy runs as this same user
            for chunk in chunks:
                handle.write(chunk)
                self.bytes += len(chunk)
        self.files += 1

    def link(self, path: str, source: str) -> bool:
        """Hard-link ``source`` in as ``path``; False where the file systems differ.

        A deploy's source directory is its own and removed after the publish, so sharing
        its files' inodes costs nothing and makes an unchanged file free to publish.
        """
        parts = check_relative_path(path)
        self._ensure_dir(parts[:-1])
        target = self._staging.joinpath(*parts)
        try:
            os.link(source, target, follow_symlinks=False)
        except FileExistsError as exc:
            raise PublishError(f"{path} appears twice in the release") from exc
        except OSError:
            return False  # EXDEV (another volume) or no links here: copy instead
        os.chmod(target, 0o600)  # owner-only whatever the build left
        self.bytes += os.stat(target).st_size
        self.files += 1
        return True

    def _ensure_dir(self, parts: tuple[str, ...]) -> None:
        for depth in range(1, len(parts) + 1):
            prefix = parts[:depth]
            if prefix in self._dirs:
                continue
            directory = self._staging.joinpath(*prefix)
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError as exc:
                raise PublishError(f"{'/'.join(prefix)} is both a file and a directory") from exc
            os.chmod(directory, 0o700)
            self._dirs.add(prefix)


_FSYNC_EACH = 64  # more fresh files than this: one sync(2) beats an fsync each
_FLUSHERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsync")


def flush_all(
    files: Sequence[str], directories: Sequence[str] = (), missing_ok: bool = False
) -> None:
    """Flush files and directories to disk, all at once.

    Each fsync waits for the file system's journal commit; issued together they share
    the commit instead of waiting for one each, in turn. ``missing_ok``: a file removed
    since has nothing left to keep.
    """
    if len(files) > _FSYNC_EACH:
        os.sync()
        files = ()
    flush = functools.partial(_fsync_path, missing_ok=missing_ok)
    for done in _FLUSHERS.map(flush, [*files, *directories]):
        del done  # map re-raises the first failure here


def _fsync_path(path: str, missing_ok: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
