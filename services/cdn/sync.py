"""Sync a built site to a storage prefix: upload what changed, then delete what is stale.

``scan_directory`` (or ``files_from_sources``) hashes the local tree, streaming each file
so memory stays bounded; ``plan_sync`` compares it with the remote checksums from
``walk()`` (pure); ``apply_plan`` PUTs new and changed files on a bounded pool of
workers and, only after every PUT succeeded, deletes the stale remote files.

Bunny storage has no atomic switch: during a sync, and after one that failed midway,
visitors may get a mix of old and new files. Uploading first keeps every page reachable
throughout, and a failed upload deletes nothing: the previous release's files are all
still there, some possibly already replaced.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from .base import PublishError, SourceFile, check_relative_path
from .bunny_http import BunnyError

__all__ = [
    "LocalFile",
    "RemoteStore",
    "SyncError",
    "SyncPlan",
    "SyncResult",
    "apply_plan",
    "files_from_sources",
    "plan_sync",
    "scan_directory",
    "sync_tree",
]

T = TypeVar("T")


class RemoteStore(Protocol):
    """What a sync needs from storage (``BunnyStorage`` implements it)."""

    def walk(self, prefix: str = "") -> dict[str, str | None]: ...
    def put(self, path: str, data: bytes | Path, *, checksum: str | None = None) -> None: ...
    def delete(self, path: str) -> bool: ...
    def delete_dir(self, prefix: str) -> bool: ...


class SyncError(PublishError):
    """A sync stopped. ``path`` names the file that failed, if one did.

    ``replaced`` counts the uploads known to have succeeded before the stop (0: none
    did, though a request whose answer was lost may still have taken effect).
    """

    def __init__(self, message: str, path: str | None = None, replaced: int = 0):
        """Keep the message, the failing path and how many files were replaced."""
        super().__init__(message)
        self.path = path
        self.replaced = replaced


@dataclass(frozen=True)
class LocalFile:
    """One file to publish: its checksum, its size and where its bytes come from."""

    checksum: str  # uppercase hex SHA-256, as Bunny reports it
    size: int
    source: Path | bytes


@dataclass(frozen=True)
class SyncPlan:
    """What a sync will do, as paths relative to the prefix (each tuple sorted).

    Attributes:
        uploads: Files missing remotely or with a different checksum.
        unchanged: Files whose remote checksum already matches.
        stale: Every remote file absent from the local tree.
        delete_dirs: Top-most remote directories holding only stale files: one
            recursive DELETE each.
        delete_files: Stale files outside ``delete_dirs``: one DELETE each.
    """

    uploads: tuple[str, ...]
    unchanged: tuple[str, ...]
    stale: tuple[str, ...]
    delete_dirs: tuple[str, ...]
    delete_files: tuple[str, ...]


@dataclass(frozen=True)
class SyncResult:
    """What a sync did."""

    uploaded: int
    skipped: int
    deleted: int
    bytes_uploaded: int


def scan_directory(root: Path) -> dict[str, LocalFile]:
    """Hash every regular file under ``root``: ``{relative POSIX path: LocalFile}``.

    Raises:
        SyncError: ``root`` is not a directory, or the tree holds a symlink, a special
            file or an unsafe name (symlinks are refused, never followed).
    """
    root = Path(root)
    if not root.is_dir() or root.is_symlink():
        raise SyncError(f"{root} is not a directory")
    found: dict[str, LocalFile] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        # os.walk lists a symlink to a directory among dirnames, never entering it.
        for name in filenames + dirnames:
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                raise SyncError(f"{rel} is a symlink; a site holds regular files only", rel)
            if name in dirnames:
                continue
            if not full.is_file():
                raise SyncError(f"{rel} is not a regular file", rel)
            _check_path(rel)
            digest, size = _hash_file(full)
            found[rel] = LocalFile(checksum=digest, size=size, source=full)
    return found


def files_from_sources(sources: Iterable[SourceFile]) -> dict[str, LocalFile]:
    """Index in-memory files by path.

    Raises:
        SyncError: for an unsafe path or a path given twice.
    """
    found: dict[str, LocalFile] = {}
    for item in sources:
        _check_path(item.path)
        if item.path in found:
            raise SyncError(f"{item.path} appears twice in the release", item.path)
        checksum = hashlib.sha256(item.data).hexdigest().upper()
        found[item.path] = LocalFile(checksum=checksum, size=len(item.data), source=item.data)
    return found


def plan_sync(local: Mapping[str, str], remote: Mapping[str, str | None]) -> SyncPlan:
    """Decide which files to upload and which to delete (pure).

    Args:
        local: ``{path: uppercase SHA-256}`` of the tree to publish.
        remote: ``{path: checksum or None}`` as ``walk()`` reports the prefix.
    """
    uploads, unchanged = [], []
    for path, checksum in local.items():
        remote_sum = remote.get(path)
        same = remote_sum is not None and remote_sum.upper() == checksum.upper()
        (unchanged if same else uploads).append(path)
    stale = sorted(set(remote) - set(local))

    # A directory can go in one recursive DELETE when no local file lives under it.
    local_dirs = {directory for path in local for directory in _ancestors(path)}
    delete_dirs, delete_files = set(), []
    for path in stale:
        top = next((d for d in _ancestors(path) if d not in local_dirs), None)
        if top is None:
            delete_files.append(path)
        else:
            delete_dirs.add(top)
    return SyncPlan(
        uploads=tuple(sorted(uploads)),
        unchanged=tuple(sorted(unchanged)),
        stale=tuple(stale),
        delete_dirs=tuple(sorted(delete_dirs)),
        delete_files=tuple(delete_files),
    )


def sync_tree(
    storage: RemoteStore, local: Mapping[str, LocalFile], prefix: str, *, workers: int = 8
) -> SyncResult:
    """Make the files under ``prefix`` equal ``local``: walk, plan, apply.

    Raises:
        SyncError: the remote tree could not be listed, the local tree is empty (a
            broken build must not wipe a live site), or ``apply_plan`` failed.
    """
    if not local:
        raise SyncError("the site has no files; refusing to delete the live one")
    try:
        remote = storage.walk(prefix)
    except BunnyError as exc:
        raise SyncError(f"could not list the remote files under {prefix or '/'}: {exc}") from exc
    plan = plan_sync({path: f.checksum for path, f in local.items()}, remote)
    return apply_plan(storage, plan, local, prefix, workers=workers)


def apply_plan(
    storage: RemoteStore,
    plan: SyncPlan,
    local: Mapping[str, LocalFile],
    prefix: str,
    *,
    workers: int = 8,
) -> SyncResult:
    """Upload ``plan.uploads`` in parallel, then (only if all succeeded) delete the stale.

    Raises:
        SyncError: naming the first file whose upload failed after its retries (nothing
            was deleted), or the first stale path that could not be deleted (every new
            file is then in place; some stale ones remain).
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")

    def remote(path: str) -> str:
        return f"{prefix}/{path}" if prefix else path

    def upload(path: str) -> None:
        item = local[path]
        storage.put(remote(path), item.source, checksum=item.checksum)

    def upload_failed(path: str, exc: BaseException, replaced: int) -> SyncError:
        return SyncError(
            f"upload of {path} failed: {exc}. Nothing was deleted; {replaced} file(s) had "
            "already been replaced, so the live site may mix old and new files until a "
            "sync succeeds (Bunny storage has no atomic switch)",
            path=path,
            replaced=replaced,
        )

    def delete_failed(job: tuple, exc: BaseException, _deleted: int) -> SyncError:
        return SyncError(
            f"delete of stale {job[1]} failed: {exc}. The new files are all in place",
            path=job[1],
            replaced=len(plan.uploads),
        )

    _run_parallel(upload, plan.uploads, workers, upload_failed)
    deletions = [(storage.delete_dir, d) for d in plan.delete_dirs]
    deletions += [(storage.delete, f) for f in plan.delete_files]
    _run_parallel(lambda job: job[0](remote(job[1])), deletions, workers, delete_failed)
    return SyncResult(
        uploaded=len(plan.uploads),
        skipped=len(plan.unchanged),
        deleted=len(plan.stale),
        bytes_uploaded=sum(local[p].size for p in plan.uploads),
    )


def _run_parallel(
    work: Callable[[T], object],
    items: Iterable[T],
    workers: int,
    failed: Callable[[T, BaseException, int], SyncError],
) -> None:
    """Run ``work`` over ``items`` on ``workers`` threads; stop at the first failure.

    An outage-like failure (``BunnyError``, ``OSError``, ``ValueError``) becomes the
    ``SyncError`` that ``failed(item, exc, succeeded_so_far)`` builds; anything else is a
    bug and propagates with its own type.
    """
    items = list(items)
    if not items:
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bunny-sync") as pool:
        futures = {pool.submit(work, item): item for item in items}
        for future in as_completed(futures):
            exc = future.exception()
            if exc is None:
                continue
            # Cancel what has not started and wait for what is in flight, so no request
            # runs behind the caller's back once the error is raised.
            pool.shutdown(wait=True, cancel_futures=True)
            succeeded = sum(1 for f in futures if not f.cancelled() and f.exception() is None)
            if isinstance(exc, (BunnyError, OSError, ValueError)):
                raise failed(futures[future], exc, succeeded) from exc
            raise exc


def _check_path(path: str) -> None:
    try:
        check_relative_path(path)
    except PublishError as exc:
        raise SyncError(str(exc), path) from None


def _ancestors(path: str) -> list[str]:
    """``"a/b/c"`` -> ``["a", "a/b"]``: the directories holding ``path``, top first."""
    parts = path.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


def _hash_file(path: Path) -> tuple[str, int]:
    with open(path, "rb") as handle:  # file_digest streams: memory stays bounded
        digest = hashlib.file_digest(handle, "sha256").hexdigest().upper()
        return digest, os.fstat(handle.fileno()).st_size
