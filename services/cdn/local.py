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
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .base import (
    CDNBackend,
    PublishError,
    PublishResult,
    SourceFile,
    check_hostname,
    check_identifier,
    check_relative_path,
)

__all__ = ["LocalCDN"]

log = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


class LocalCDN(CDNBackend):
    """Release directories under ``root``, made live by atomic symlink switches."""

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
            clock: Wall clock in seconds: orders releases, ages abandoned temporaries.
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

    def publish(
        self,
        site_id: str,
        hostnames: Sequence[str],
        release_id: str,
        source: Path | Iterable[SourceFile],
    ) -> PublishResult:
        """Write a release, switch every hostname to it, then prune old releases.

        See ``CDNBackend.publish``.
        """
        check_identifier("site id", site_id)
        check_identifier("release id", release_id)
        if isinstance(hostnames, str) or not hostnames:
            raise PublishError("a release needs at least one hostname")
        hosts = list(dict.fromkeys(check_hostname(h) for h in hostnames))

        site_dir = self.releases_dir / site_id
        site_dir.mkdir(parents=True, exist_ok=True)
        final = site_dir / release_id
        if os.path.lexists(final):
            raise PublishError(f"release {release_id} already exists")

        staging = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=site_dir))
        try:
            result = _fill(staging, source)
            if self._sync:
                os.sync()
            os.chmod(staging, 0o755)
            os.rename(staging, final)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, OSError):
                raise PublishError(f"could not store the release: {exc}") from exc
            raise
        # The directory's mtime orders releases for pruning. Stamp it explicitly, to the
        # nanosecond: the kernel's own timestamps are too coarse to order quick publishes.
        stamp = int(self._clock() * 1e9)
        os.utime(final, ns=(stamp, stamp))

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
        self._prune(site_id)
        return result

    def live_release(self, hostname: str) -> tuple[str, str] | None:
        """The ``(site_id, release_id)`` a hostname serves, or None if it has none."""
        try:
            target = os.readlink(self.live_dir / check_hostname(hostname))
        except OSError:
            return None
        return _parse_target(target)

    def releases(self, site_id: str) -> list[str]:
        """A site's stored releases, newest first."""
        site_dir = self.releases_dir / check_identifier("site id", site_id)
        try:
            entries = [
                e
                for e in os.scandir(site_dir)
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            ]
        except FileNotFoundError:
            return []
        entries.sort(
            key=lambda e: (e.stat(follow_symlinks=False).st_mtime_ns, e.name), reverse=True
        )
        return [e.name for e in entries]

    # -- internals --------------------------------------------------------------------

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

    def _prune(self, site_id: str) -> None:
        # Pruning runs only after the switch, and never touches a release any hostname
        # still serves: a failure here costs disk space, never availability.
        try:
            in_use = {rel for site, rel in self._live_targets() if site == site_id}
            site_dir = self.releases_dir / site_id
            for name in self.releases(site_id)[self._keep :]:
                if name not in in_use:
                    shutil.rmtree(site_dir / name)
                    log.info("release pruned", extra={"site_id": site_id, "release": name})
            cutoff = self._clock() - self._stale_seconds
            for entry in os.scandir(site_dir):
                if (
                    entry.name.startswith(_TMP_PREFIX)
                    and entry.stat(follow_symlinks=False).st_mtime < cutoff
                ):
                    shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            log.warning("release pruning failed", extra={"site_id": site_id}, exc_info=True)


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
            writer.write(item.path, [item.data])
    return PublishResult(file_count=writer.files, bytes=writer.bytes)


def _copy_tree(source: Path, writer: _ReleaseWriter) -> None:
    if not source.is_dir():
        raise PublishError(f"{source} is not a directory")
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + [
            d for d in dirnames if os.path.islink(os.path.join(dirpath, d))
        ]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, source).replace(os.sep, "/")
            if os.path.islink(full):
                raise PublishError(f"{rel} is a symlink; releases hold regular files only")
            if not os.path.isfile(full):
                raise PublishError(f"{rel} is not a regular file")
            with open(full, "rb") as handle:
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
            fd = os.open(target, flags, 0o644)
        except FileExistsError as exc:
            raise PublishError(f"{path} appears twice in the release") from exc
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, 0o644)  # readable by the web server whatever the umask
            for chunk in chunks:
                handle.write(chunk)
                self.bytes += len(chunk)
        self.files += 1

    def _ensure_dir(self, parts: tuple[str, ...]) -> None:
        for depth in range(1, len(parts) + 1):
            prefix = parts[:depth]
            if prefix in self._dirs:
                continue
            directory = self._staging.joinpath(*prefix)
            try:
                os.mkdir(directory, 0o755)
            except FileExistsError as exc:
                raise PublishError(f"{'/'.join(prefix)} is both a file and a directory") from exc
            os.chmod(directory, 0o755)
            self._dirs.add(prefix)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
