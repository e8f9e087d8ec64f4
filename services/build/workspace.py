"""The build's fresh work directory: filled from the checkout, measured, and checked.

Everything the build leaves behind is untrusted: the publish directory may hold
symlinks pointing at host files (harmless inside the sandbox, dangerous to whoever
reads it afterwards as root), FIFOs, or far too many bytes. ``check_publish`` walks it
without following links before anything publishes it.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

__all__ = ["PublishProblem", "check_publish", "prepare", "tree_usage"]


class PublishProblem(Exception):
    """The publish directory cannot be published; ``reason`` is a BuildResult reason."""

    def __init__(self, reason: str, message: str):
        """Keep the ``reason`` and the one-line ``message``."""
        super().__init__(message)
        self.reason = reason
        self.message = message


def prepare(source: Path, workdir: Path, uid: int | None) -> None:
    """Create ``workdir`` (it must not exist) holding a copy of ``source`` only.

    Symlinks are copied as links, never followed: one pointing at a host file would
    otherwise copy that file in. With ``uid``, the copy is handed to the build uid.

    Raises:
        FileExistsError: ``workdir`` exists, so it would not be fresh.
    """
    workdir.mkdir(mode=0o700)
    shutil.copytree(source, workdir, symlinks=True, dirs_exist_ok=True)
    if uid is None:
        return
    os.lchown(workdir, uid, uid)
    for top, dirs, files in os.walk(workdir):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), uid, uid)


def tree_usage(root: Path, max_entries: int) -> tuple[int, int]:
    """``(bytes, entries)`` under ``root``, without following symlinks.

    Stops counting past ``max_entries`` so a tree of millions of files costs little.
    """
    total = entries = 0
    stack = [str(root)]
    while stack and entries <= max_entries:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    info = entry.stat(follow_symlinks=False)
                    total += info.st_size
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(entry.path)
        except OSError:
            continue  # vanished while the build runs
    return total, entries


def check_publish(workdir: Path, publish: str, max_bytes: int, max_files: int) -> Path:
    """Check the built publish directory and return its path.

    Raises:
        PublishProblem: missing, reached through a symlink, holding links or special
            files ("failed"), or larger than the caps ("output_too_large").
    """
    target = workdir
    for part in [p for p in publish.split("/") if p]:
        target = target / part
        if target.is_symlink() or not target.is_dir():
            shown = publish or "."
            raise PublishProblem("failed", f"the build did not create the directory {shown!r}")
    total = files = 0
    stack = [target]
    while stack:
        for entry in os.scandir(stack.pop()):
            info = entry.stat(follow_symlinks=False)
            rel = os.path.relpath(entry.path, workdir)
            if stat.S_ISDIR(info.st_mode):
                stack.append(Path(entry.path))
            elif stat.S_ISLNK(info.st_mode):
                raise PublishProblem("failed", f"the build output has a symlink {rel!r}")
            elif not stat.S_ISREG(info.st_mode):
                raise PublishProblem("failed", f"the build output has a special file {rel!r}")
            else:
                files += 1
                total += info.st_size
            if files > max_files:
                raise PublishProblem("output_too_large", f"more than {max_files} files built")
            if total > max_bytes:
                raise PublishProblem(
                    "output_too_large", f"the built site is larger than {max_bytes} bytes"
                )
    return target
