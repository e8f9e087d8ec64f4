"""Turn a pushed commit into the files of a release, refusing anything unsafe.

Pushed objects are untrusted: trees can hold names such as ``..`` or ``.git``,
symlinks pointing anywhere, submodules whose content is not here, or millions of
entries. ``plan_checkout`` walks the tree once and decides what gets published, with
each file's size read from its object header (nothing inflated), so the file count and
byte quotas are enforced before the branch moves; ``iter_files`` then yields the file
contents, enforcing the byte budget again as it goes.
An optional root ``ecstatic.toml`` with ``publish = "subdir"`` names the directory
to publish.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cachetools import LRUCache
from dulwich.objects import Blob, Commit, ShaFile, Tag, Tree

from services.build import BuildConfig, ConfigError, parse_config
from services.cdn.base import Listing, SourceFile
from services.cdn.local import remove_tree

__all__ = [
    "CONFIG_FILE",
    "DeployRejected",
    "Limits",
    "Plan",
    "Spare",
    "StreamedFile",
    "format_bytes",
    "forget_unlinked",
    "iter_files",
    "link_spare",
    "plan_checkout",
    "write_checkout",
]

CONFIG_FILE = "ecstatic.toml"
_MAX_NAME_BYTES = 255  # NAME_MAX on Linux file systems
_MAX_PATH_BYTES = 4000  # leaves room under PATH_MAX for the release directory
_S_IFGITLINK = 0o160000

log = logging.getLogger(__name__)


class DeployRejected(Exception):
    """The pushed content cannot be published; ``message`` tells the pusher why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Limits:
    """Upper bounds for one deploy (``config.max_deploy_files`` / ``max_deploy_bytes``).

    ``max_file_bytes`` caps each published file and ``max_depth`` the directory
    nesting: a tree nested thousands deep breaks tools that recurse (Python's
    ``shutil.rmtree`` among them) long after it was published.
    """

    max_files: int
    max_bytes: int
    max_file_bytes: int = 100 * 2**20
    max_depth: int = 32


@dataclass
class Plan:
    """What a commit publishes: files relative to the publish directory."""

    commit: str
    publish_dir: str
    files: list[tuple[str, bytes]] = field(default_factory=list)  # (path, blob sha)
    sizes: list[int] = field(default_factory=list)  # each file's size, from its header
    planned_bytes: int = 0  # the sum of ``sizes``
    notes: list[str] = field(default_factory=list)
    config: BuildConfig = field(default_factory=BuildConfig)
    file_count: int = 0  # what write_checkout wrote
    bytes: int = 0
    written: list[tuple[str, bytes]] = field(default_factory=list)  # not from the cache

    def listing(self, prefix: str = "") -> Listing:
        """What a checkout of this plan holds under ``prefix`` (``""`` or ``"dir/"``).

        ``write_checkout`` writes exactly the planned files, owner-only, and nothing
        else: the release made of its directory need not scan it (``LocalCDN.stage``).
        """
        paths, size = [], 0
        for (path, _sha), planned in zip(self.files, self.sizes, strict=True):
            if path.startswith(prefix):
                paths.append(path[len(prefix) :])
                size += planned
        directories = tuple(sorted(_directories(paths)))
        return Listing(file_count=len(paths), bytes=size, directories=directories)


@dataclass(frozen=True)
class Spare:
    """A site's last checkout linked again from its cache, to start the next one from.

    A push that changes one file of a thousand then renames the spare into place and
    replaces one file, instead of linking a thousand (``write_checkout``'s ``spare``).
    Only this process writes it, under the owner-only cache; ``files`` is what it holds.
    """

    path: Path
    files: dict[str, bytes]  # path -> blob sha


def link_spare(files: list[tuple[str, bytes]], cache: Path, path: Path) -> Spare:
    """Link a checkout's ``files`` from the site's ``cache`` into a new ``path``.

    Raises:
        OSError: a cache entry is missing, or ``path`` exists; nothing is left behind.
    """
    os.mkdir(path, 0o700)
    root, pool, made = os.fspath(path), os.fspath(cache), {""}
    try:
        for name, sha in files:
            parent = name.rpartition("/")[0]
            if parent not in made:
                _make_parents(root, parent, made)
            os.link(f"{pool}/{sha.decode('ascii')}", f"{root}/{name}")
    except BaseException:
        _remove_quietly(path)
        raise
    return Spare(path=path, files=dict(files))


def format_bytes(count: int) -> str:
    """A human size: ``512 B``, ``1.5 KiB``, ``12.0 MiB``."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def plan_checkout(store, commit_sha: bytes, limits: Limits, whole_tree: bool = False) -> Plan:
    """Walk a commit's tree and decide which files a release gets.

    Args:
        store: A dulwich object store holding the pushed objects.
        commit_sha: Hex sha of the commit (or of a tag pointing at one).
        limits: Maximum number of files (checked here) and bytes (see ``iter_files``).
        whole_tree: Plan every file of the repository (a build's input) rather than
            only the ``publish`` directory's.

    Returns:
        The files to publish, in tree order, with notes for the pusher.

    Raises:
        DeployRejected: symlinks, unsafe names, missing objects, too many files, or a
            bad ``ecstatic.toml``.
    """
    from .packs import ObjectSizes  # here: packs -> limits -> checkout would be a cycle

    try:
        with ObjectSizes(store) as sizes:
            return _plan(store, commit_sha, limits, whole_tree, sizes)
    except DeployRejected:
        raise
    except (RecursionError, MemoryError, ValueError, TypeError, KeyError, zlib.error) as exc:
        # Hostile content must never crash the check (which would let the ref move):
        # anything unexpected is a refusal with a generic reason.
        raise DeployRejected(
            f"the pushed tree could not be checked ({type(exc).__name__})"
        ) from exc


def _plan(store, commit_sha: bytes, limits: Limits, whole_tree: bool, sizes) -> Plan:
    commit = _peel_to_commit(store, commit_sha)
    root = _load(store, commit.tree, Tree, "the commit's root tree")
    config = _read_config(store, root)
    plan = Plan(commit=commit.id.decode("ascii"), publish_dir="", config=config)
    if whole_tree:
        # The build's input: everything but the host's own configuration.
        _walk(store, root, plan, limits, sizes, skip_config=True, depth=0)
        return plan
    publish_parts = _publish_parts(config.publish or ".")
    tree = root
    for depth, part in enumerate(publish_parts):
        where = "/".join(publish_parts[: depth + 1])
        try:
            mode, sha = tree[part.encode("utf-8")]
        except KeyError:
            raise DeployRejected(
                f"{CONFIG_FILE}: publish directory {where!r} does not exist"
            ) from None
        if stat.S_ISLNK(mode) or mode & 0o170000 == _S_IFGITLINK or not stat.S_ISDIR(mode):
            raise DeployRejected(f"{CONFIG_FILE}: publish path {where!r} is not a directory")
        tree = _load(store, sha, Tree, f"directory {where!r}")
    plan.publish_dir = "/".join(publish_parts)
    _walk(store, tree, plan, limits, sizes, not publish_parts, len(publish_parts))
    return plan


def write_checkout(
    store,
    commit_sha: bytes,
    limits: Limits,
    dest: Path | None,
    cache: Path | None = None,
    plan: Plan | None = None,
    spare: Spare | None = None,
) -> Plan:
    """Check a commit's whole tree and, given ``dest``, write its files there.

    With ``dest=None`` nothing is written: the check alone, cheap enough for the
    ``update`` hook before the branch moves (file sizes come from the object headers).

    ``cache`` (one directory per site) keeps each file written once, named by its blob
    sha, and hard-links it into later checkouts: a push that changes one file of a
    thousand writes one file. ``forget_unlinked`` removes the entries nothing uses.

    Args:
        store: The object store.
        commit_sha: The commit.
        limits: The limits.
        dest: Where to write the tree (must not exist), or None to only check.
        cache: The site's checkout cache, or None.
        plan: The plan the check already made of this very commit (saves a walk).
        spare: A ``Spare`` to take over as ``dest`` (it is used up): only the files
            that differ from its own are removed, linked or written.

    The files written (``plan.written``) are not flushed to disk: whoever makes a
    release of them does (``LocalCDN.stage``'s ``fresh``), or ``Checkout.finish``.

    Raises:
        DeployRejected: as ``plan_checkout`` and ``iter_files``.
    """
    if plan is None or plan.commit != _peel_to_commit(store, commit_sha).id.decode("ascii"):
        plan = plan_checkout(store, commit_sha, limits, whole_tree=True)
    else:
        plan = _fresh(plan)
    if dest is None:
        return plan
    root = os.fspath(dest)
    pool = os.fspath(cache) if cache is not None else None
    if pool is not None:
        os.makedirs(pool, exist_ok=True)
    if spare is not None and pool is not None:
        kept = _take_spare(spare, plan, dest)
        if kept is not None:
            _fill(store, plan, limits, root, pool, *kept)
            return plan
    dest.mkdir(parents=True, exist_ok=False)
    _fill(store, plan, limits, root, pool, {""}, {})
    return plan


def _take_spare(spare: Spare, plan: Plan, dest: Path) -> tuple[set[str], dict] | None:
    """Rename the spare to ``dest`` and remove what the plan does not keep.

    Returns the directories left in place and the files kept as they are, or None
    (nothing at ``dest``) when the spare cannot be used: then a full checkout follows.
    """
    try:
        os.rename(spare.path, dest)
    except OSError:
        return None
    wanted = dict(plan.files)
    kept = {path: sha for path, sha in spare.files.items() if wanted.get(path) == sha}
    old_dirs, new_dirs = _directories(spare.files), _directories(wanted)
    root = os.fspath(dest)
    try:
        for path in spare.files.keys() - kept.keys():
            os.unlink(f"{root}/{path}")
        # Deepest first, so each is empty by its turn (a file there was removed above).
        for directory in sorted(old_dirs - new_dirs, key=lambda d: d.count("/"), reverse=True):
            os.rmdir(f"{root}/{directory}")
    except OSError:
        log.warning("spare checkout unusable; checking out in full", exc_info=True)
        _remove_quietly(dest)
        return None
    return (old_dirs & new_dirs) | {""}, kept


def _directories(files) -> set[str]:
    found: set[str] = set()
    for path in files:
        parent = path.rpartition("/")[0]
        while parent and parent not in found:
            found.add(parent)
            parent = parent.rpartition("/")[0]
    return found


def _fill(store, plan: Plan, limits: Limits, root: str, pool, made: set[str], kept) -> None:
    """Put every planned file not in ``kept`` under ``root``: linked, else written."""
    from .packs import BlobReader  # here: packs -> limits -> checkout would be a cycle

    with BlobReader(store) as blobs:
        _fill_from(blobs, store, plan, limits, root, pool, made, kept)


def _fill_from(blobs, store, plan: Plan, limits: Limits, root: str, pool, made, kept) -> None:
    for (path, sha), planned in zip(plan.files, plan.sizes, strict=True):
        if kept.get(path) == sha:
            size = planned  # already there, linked from the cache it was checked into
        else:
            parent = path.rpartition("/")[0]
            if parent not in made:
                _make_parents(root, parent, made)
            target = f"{root}/{path}"
            cached = f"{pool}/{sha.decode('ascii')}" if pool is not None else None
            size = planned if cached is not None and _linked(cached, target) else None
            if size is None:
                size = _write_file(blobs, store, path, sha, target, limits)
                plan.written.append((path, sha))
                if cached is not None:
                    with contextlib.suppress(OSError):  # another checkout made it first
                        os.link(target, cached)
        plan.bytes += size
        plan.file_count += 1
        if plan.bytes > limits.max_bytes:  # the plan's sizes said otherwise: never trust
            limit = format_bytes(limits.max_bytes)
            raise DeployRejected(f"the published files add up to more than {limit}, the limit")


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        remove_tree(path)


def _fresh(plan: Plan) -> Plan:
    # The check's plan, with nothing written yet (it may be used by more than one deploy).
    return Plan(
        commit=plan.commit,
        publish_dir=plan.publish_dir,
        files=plan.files,
        sizes=plan.sizes,
        planned_bytes=plan.planned_bytes,
        notes=list(plan.notes),
        config=plan.config,
    )


def _linked(cached: str, target: str) -> bool:
    try:
        os.link(cached, target)
    except OSError:
        return False
    return True


def _write_file(blobs, store, path: str, sha: bytes, target: str, limits: Limits) -> int:
    size, chunks = _contents(blobs, store, path, sha, limits)
    written = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "wb", buffering=0, closefd=True) as handle:
        for chunk in chunks:
            handle.write(chunk)
            written += len(chunk)
    return written


def _contents(blobs, store, path: str, sha: bytes, limits: Limits):
    """``(size, chunks)`` of a planned file; the per-file limit is checked first."""
    streamed = blobs.stream(sha)
    if streamed is None:
        data = _load(store, sha, Blob, f"file {path!r}").data
        size, chunks = len(data), iter((data,))
    else:
        size, chunks = streamed
    _check_file_size(path, size, limits)
    return size, chunks


def _check_file_size(path: str, size: int, limits: Limits) -> None:
    if size > limits.max_file_bytes:
        raise DeployRejected(
            f"{path!r} is {format_bytes(size)}, larger than the "
            f"{format_bytes(limits.max_file_bytes)} limit per file"
        )


def forget_unlinked(cache: Path) -> None:
    """Remove the cache entries no release and no checkout links any more.

    Run after a deploy, off its critical path: it stats every entry of the cache.
    """
    # An entry whose only link is the cache's own serves no release and no checkout.
    with contextlib.suppress(FileNotFoundError), os.scandir(cache) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_nlink == 1:
                    os.unlink(entry.path)


def _make_parents(root: str, directory: str, made: set[str]) -> None:
    missing = []
    while directory not in made:
        missing.append(directory)
        directory = directory.rpartition("/")[0]
    for path in reversed(missing):
        os.mkdir(f"{root}/{path}", 0o700)
        made.add(path)


def iter_files(store, plan: Plan, limits: Limits) -> Iterator[SourceFile]:
    """Yield the planned files with their contents.

    Raises:
        DeployRejected: when the files add up to more than ``limits.max_bytes`` (raised
            mid-way: the consumer must abandon what it wrote), or a blob is missing.
    """
    from .packs import stream_blob  # here: packs -> limits -> checkout would be a cycle

    total = 0
    for path, sha in plan.files:
        streamed = stream_blob(store, sha)  # its own file: the consumer may hold several
        if streamed is None:
            data = _load(store, sha, Blob, f"file {path!r}").data
            size, item = len(data), SourceFile(path=path, data=data)
        else:
            size, chunks = streamed
            item = StreamedFile(path, size, chunks)
        _check_file_size(path, size, limits)
        total += size
        if total > limits.max_bytes:
            limit = format_bytes(limits.max_bytes)
            raise DeployRejected(f"the published files add up to more than {limit}, the limit")
        yield item


class StreamedFile:
    """A ``SourceFile`` read from its pack a step at a time (``LocalCDN`` streams it).

    ``data`` still works, for consumers that want the bytes: it joins the chunks.
    """

    def __init__(self, path: str, size: int, chunks: Iterator[bytes]):
        """Wrap the chunks of a file of ``size`` bytes."""
        self.path = path
        self.size = size
        self._chunks = chunks

    def chunks(self) -> Iterator[bytes]:
        """The contents, once."""
        return self._chunks

    @property
    def data(self) -> bytes:
        """The whole contents (holds the file in memory)."""
        return b"".join(self._chunks)


# -- internals ------------------------------------------------------------------------


def _load(store, sha: bytes, kind: type[ShaFile], what: str):
    try:
        obj = store[sha]
    except (KeyError, ValueError):
        raise DeployRejected(f"{what} ({_short(sha)}) is missing from the pushed objects") from None
    if not isinstance(obj, kind):
        raise DeployRejected(f"{what} ({_short(sha)}) is not a {kind.type_name.decode()}")
    return obj


def _short(sha: bytes) -> str:
    return sha[:12].decode("ascii", "replace")


def _peel_to_commit(store, sha: bytes) -> Commit:
    for _ in range(16):  # tags of tags, bounded so a tag loop cannot hang us
        obj = _load(store, sha, ShaFile, "the pushed commit")
        if isinstance(obj, Commit):
            return obj
        if not isinstance(obj, Tag):
            raise DeployRejected(f"{_short(sha)} is not a commit")
        sha = obj.object[1]
    raise DeployRejected(f"{_short(sha)}: too many nested tags")


def _read_config(store, root: Tree) -> BuildConfig:
    try:
        mode, sha = root[CONFIG_FILE.encode()]
    except KeyError:
        return parse_config(None)
    if not stat.S_ISREG(mode):
        raise DeployRejected(f"{CONFIG_FILE} must be a regular file")
    try:
        return parse_config(_load(store, sha, Blob, CONFIG_FILE).data)
    except ConfigError as exc:
        raise DeployRejected(exc.message) from None


def _publish_parts(publish: str) -> list[str]:
    # The publish directory must stay inside the tree: relative, no "..", no NUL.
    bad = f"{CONFIG_FILE}: publish = {publish!r} must be a relative directory inside the repository"
    if publish.startswith("/") or "\\" in publish or "\x00" in publish:
        raise DeployRejected(bad)
    parts = [p for p in publish.split("/") if p not in ("", ".")]
    if any(p == ".." or p.lower() == ".git" for p in parts):
        raise DeployRejected(bad)
    return parts


def _check_name(name: bytes, parent: str) -> str:
    shown = (parent + name.decode("utf-8", "backslashreplace")) or "(empty)"
    if name in (b"", b".", b".."):
        raise DeployRejected(f"invalid file name {shown!r}")
    if b"/" in name or b"\x00" in name:
        raise DeployRejected(f"invalid file name {shown!r}: contains '/' or NUL")
    if name.lower() == b".git":
        raise DeployRejected(f"{shown!r}: a .git entry cannot be published")
    if len(name) > _MAX_NAME_BYTES:
        raise DeployRejected(f"file name too long: {shown!r}")
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise DeployRejected(f"file name {shown!r} is not valid UTF-8") from None
    path = parent + text
    if len(path.encode("utf-8")) > _MAX_PATH_BYTES:
        raise DeployRejected(f"path too long: {path[:80]!r}...")
    return path


class _Subtree:
    """A checked directory, for ``_walk``'s memo: its entries and what the limits need.

    A tree's sha names its content, so a directory a push did not change is the same
    directory that was checked before: the next check takes its summary instead of
    walking it again (a one-file change to a site of a thousand files walks one level).
    Entries hold names, not paths, and a child directory by reference: a summary costs
    its own entries, and the paths are made once, for the plan (``_flatten``).
    """

    __slots__ = (
        "bytes",
        "directories",
        "entries",
        "files",
        "height",
        "largest",
        "longest",
        "submodules",
    )

    def __init__(self) -> None:
        # ("f", name, sha, size) | ("d", name, _Subtree) | ("m", name): a skipped submodule
        self.entries: list[tuple] = []
        self.files = 0  # below this one, in all
        self.submodules = 0
        self.bytes = 0
        self.directories = 0
        self.height = 0  # levels of directories below this one
        self.largest = 0  # the largest file's size
        self.longest = 0  # the longest relative path, in bytes

    def add_file(self, name: str, sha: bytes, size: int) -> None:
        self.entries.append(("f", name, sha, size))
        self.files += 1
        self.bytes += size
        self.largest = max(self.largest, size)
        self.longest = max(self.longest, len(name.encode("utf-8")))

    def add_submodule(self, name: str) -> None:
        self.entries.append(("m", name))
        self.submodules += 1

    def add_subtree(self, name: str, child: _Subtree) -> None:
        self.entries.append(("d", name, child))
        self.files += child.files
        self.submodules += child.submodules
        self.bytes += child.bytes
        self.directories += child.directories + 1
        self.height = max(self.height, child.height + 1)
        self.largest = max(self.largest, child.largest)
        self.longest = max(self.longest, len(name.encode("utf-8")) + 1 + child.longest)

    @property
    def weight(self) -> int:
        # Everything below it: a summary keeps its children alive whatever the memo
        # evicts, so counting them whole keeps the memo's memory bounded.
        return self.files + self.submodules + self.directories + 1


def _flatten(top: _Subtree) -> tuple[list[tuple[str, bytes]], list[int], list[str]]:
    """The files (paths from the top, shas), their sizes and the submodules' paths."""
    files: list[tuple[str, bytes]] = []
    sizes: list[int] = []
    submodules: list[str] = []
    stack = [("", iter(top.entries))]  # iterative: depth is bounded, but never trusted
    while stack:
        prefix, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
        elif entry[0] == "f":
            files.append((prefix + entry[1], entry[2]))
            sizes.append(entry[3])
        elif entry[0] == "d":
            stack.append((f"{prefix}{entry[1]}/", iter(entry[2].entries)))
        else:
            submodules.append(prefix + entry[1])
    return files, sizes, submodules


# Summaries of checked directories, keyed by (object store, tree sha); bounded by the
# entries below them, so a few hundred thousand names at most.
_SUBTREES: LRUCache[tuple[object, bytes], _Subtree] = LRUCache(
    maxsize=200_000, getsizeof=lambda s: s.weight
)
_SUBTREES_LOCK = threading.Lock()


@dataclass
class _Totals:
    """What a walk has counted so far, checked against the limits as it goes."""

    limits: Limits
    files: int = 0
    directories: int = 0
    bytes: int = 0

    def directory(self, path: str, level: int) -> None:
        self.directories += 1
        if self.directories > self.limits.max_files:
            raise DeployRejected(f"more than {self.limits.max_files} directories, the limit")
        if level > self.limits.max_depth:
            raise DeployRejected(
                f"directories nested more than {self.limits.max_depth} deep, the limit "
                f"(at {path[:80]!r})"
            )

    def file(self, path: str, sha: bytes, size: int | None) -> int:
        limits = self.limits
        self.files += 1
        if self.files > limits.max_files:
            raise DeployRejected(f"more than {limits.max_files} files, the limit")
        if size is None:
            raise DeployRejected(
                f"file {path!r} ({_short(sha)}) is missing from the pushed objects"
            )
        _check_file_size(path, size, limits)
        self.bytes += size
        if self.bytes > limits.max_bytes:
            raise DeployRejected(
                f"the files add up to more than {format_bytes(limits.max_bytes)}, this "
                f"site's limit (max_deploy_bytes); {self.files} files counted so far"
            )
        return size

    def fits(self, known: _Subtree, path: str, level: int) -> bool:
        """Whether a checked directory fits at ``path``, within what is left; if so, count it."""
        limits = self.limits
        fits = (
            level + known.height <= limits.max_depth
            and len(path.encode("utf-8")) + 1 + known.longest <= _MAX_PATH_BYTES
            and known.largest <= limits.max_file_bytes
            and self.directories + known.directories <= limits.max_files
            and self.files + known.files <= limits.max_files
            and self.bytes + known.bytes <= limits.max_bytes
        )
        if fits:
            self.files += known.files
            self.directories += known.directories
            self.bytes += known.bytes
        return fits


class _Frame:
    """One directory being walked: where it is, and the summary made so far."""

    __slots__ = ("entries", "key", "level", "name", "next", "parent", "summary")

    def __init__(self, tree: Tree, key, name: str, parent: str, level: int):
        self.entries = list(tree.iteritems())
        self.next = 0
        self.key = key  # None for the top, whose summary is never reused
        self.name = name
        self.parent = parent  # its path from the top, with a trailing "/" (or "")
        self.level = level
        self.summary = _Subtree()


def _walk(
    store, top: Tree, plan: Plan, limits: Limits, sizes, skip_config: bool, depth: int
) -> None:
    # Iterative, so a deeply nested hostile tree cannot exhaust the Python stack. The
    # running totals are checked as each entry is seen, so a hostile tree is refused
    # before it is walked whole; a directory checked before is taken whole from the
    # memo when it fits the limits, and walked (for the exact refusal) when it does not.
    store_key = getattr(store, "path", None) or id(store)
    totals = _Totals(limits)
    stack = [_Frame(top, None, "", "", depth)]
    top_summary = stack[0].summary
    while stack:
        frame = stack[-1]
        if frame.next == len(frame.entries):
            stack.pop()
            if not stack:
                break  # the top: its summary is the plan's
            if frame.key is not None:
                with _SUBTREES_LOCK:
                    _SUBTREES[frame.key] = frame.summary
            stack[-1].summary.add_subtree(frame.name, frame.summary)
            continue
        entry = frame.entries[frame.next]
        frame.next += 1
        path = _check_name(entry.path, frame.parent)
        name = path[len(frame.parent) :]
        mode = entry.mode
        if mode & 0o170000 == _S_IFGITLINK:
            frame.summary.add_submodule(name)
        elif stat.S_ISLNK(mode):
            raise DeployRejected(
                f"symlink {path!r} is not allowed: sites are published as regular files only"
            )
        elif stat.S_ISDIR(mode):
            totals.directory(path, frame.level + 1)
            key = (store_key, entry.sha)
            with _SUBTREES_LOCK:
                known = _SUBTREES.get(key)
            # Never taken for a tree this store lacks (a push may name what it never sent).
            level = frame.level + 1
            if known is not None and entry.sha in store and totals.fits(known, path, level):
                frame.summary.add_subtree(name, known)
                continue
            child = _load(store, entry.sha, Tree, f"directory {path!r}")
            stack.append(_Frame(child, key, name, path + "/", level))
        elif stat.S_ISREG(mode):
            if skip_config and path == CONFIG_FILE:
                continue  # host configuration, not site content
            size = totals.file(path, entry.sha, sizes.size(entry.sha))
            frame.summary.add_file(name, entry.sha, size)
        else:
            raise DeployRejected(f"{path!r} has an unsupported file mode {mode:o}")
    files, sizes, submodules = _flatten(top_summary)
    plan.files += files
    plan.sizes += sizes
    plan.planned_bytes += top_summary.bytes
    for path in submodules:
        plan.notes.append(f"skipped submodule {path!r}: its files are not in this repository")
