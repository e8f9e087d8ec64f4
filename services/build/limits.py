"""What bounds a build (``BuildLimits``) and what it reports (``BuildResult``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["REASONS", "BuildLimits", "BuildResult"]

REASONS = ("ok", "failed", "timeout", "memory", "output_too_large", "sandbox_error")


@dataclass(frozen=True)
class BuildLimits:
    """Limits of one build; the defaults suit a small docs or blog site on a 2-core box.

    Attributes:
        timeout_seconds: Wall clock from start to finish (default 15 min).
        memory_bytes: RLIMIT_AS, address space per process (default 2 GiB; Go and Node
            reserve more address space than they use, so do not go much lower).
        max_processes: RLIMIT_NPROC for the slot uid (default 256): stops fork bombs.
        max_file_bytes: RLIMIT_FSIZE, largest single file written (default 256 MiB).
        max_open_files: RLIMIT_NOFILE (default 4096).
        max_output_bytes: stdout+stderr read before the build is stopped (4 MiB).
        max_workspace_bytes: the work directory's size, measured every
            ``check_seconds`` while the build runs (default 2 GiB).
        max_publish_bytes: size of the publish directory after the build (512 MiB).
        max_publish_files: files in the publish directory after the build (50,000).
        max_line_chars: longer output lines are split (default 2000).
        tail_lines: lines kept for ``BuildResult.tail`` (default 40).
        check_seconds: how often the work directory is measured (default 2 s).
    """

    timeout_seconds: float = 900.0
    memory_bytes: int = 2 * 2**30
    max_processes: int = 256
    max_file_bytes: int = 256 * 2**20
    max_open_files: int = 4096
    max_output_bytes: int = 4 * 2**20
    max_workspace_bytes: int = 2 * 2**30
    max_publish_bytes: int = 512 * 2**20
    max_publish_files: int = 50_000
    max_line_chars: int = 2000
    tail_lines: int = 40
    check_seconds: float = 2.0

    def rlimits(self) -> dict[str, int]:
        """The ``prlimit`` options (soft = hard, so the build cannot raise them)."""
        return {
            "as": self.memory_bytes,
            "nproc": self.max_processes,
            "fsize": self.max_file_bytes,
            "nofile": self.max_open_files,
            "core": 0,
        }


@dataclass(frozen=True)
class BuildResult:
    """What a build did.

    Attributes:
        ok: True when the command succeeded and the publish directory passed its checks.
        exit_code: The command's exit status; None when it was stopped or never started.
        reason: One of ``REASONS``.
        seconds: Wall-clock duration, including copying the tree in.
        tail: The last ``BuildLimits.tail_lines`` output lines.
        publish_dir: The directory to publish (inside the work directory).
        message: One line for the pusher, e.g. "the build timed out after 600 s".
    """

    ok: bool
    exit_code: int | None
    reason: str
    seconds: float
    tail: list[str]
    publish_dir: Path
    message: str = ""
