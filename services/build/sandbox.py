"""Run a site's build command in a bubblewrap sandbox, streaming its output live.

``run`` copies the checked-out tree into a fresh work directory, starts the command
line from ``bwrap.py`` (rlimits, unprivileged slot uid, every namespace unshared) and
supervises it from this thread: merged stdout/stderr goes to ``on_line`` line by line
as it is printed, and the wall clock, the output volume and the work directory's size
are watched. On any limit the whole process group is SIGKILLed; bwrap's own pid 1 then
takes every process of the build's pid namespace with it.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

from services.build.bwrap import (
    HOST_ENV,
    Sandbox,
    build_argv,
    check_paths,
    environment_for,
    identity_files,
)
from services.build.config import check_environment
from services.build.limits import REASONS, BuildLimits, BuildResult
from services.build.lines import LineSplitter
from services.build.workspace import PublishProblem, check_publish, prepare, tree_usage

__all__ = ["REASONS", "BuildLimits", "BuildResult", "Sandbox", "run"]

# Words allocators and runtimes print when RLIMIT_AS refuses memory (C, Python, Go, C++,
# Node). RLIMIT_AS does not kill; it makes allocations fail, and the program says so.
_MEMORY_HINTS = (
    "cannot allocate memory",
    "out of memory",
    "memoryerror",
    "bad_alloc",
    "failed to allocate",
    "allocation failed",
)


def run(
    command: str,
    source: Path,
    workdir: Path,
    *,
    on_line: Callable[[str], None],
    publish: str = "",
    environment: Mapping[str, str] | None = None,
    limits: BuildLimits | None = None,
    sandbox: Sandbox | None = None,
    slot: int = 0,
) -> BuildResult:
    """Build ``source`` with ``command`` (``sh -c COMMAND`` inside the sandbox).

    Args:
        command: The build command.
        source: The checked-out tree; it is copied, never modified.
        workdir: A path that must not exist yet; it becomes the fresh work directory
            (the caller removes it after publishing). It may live under the data
            directory, but it is seen inside as ``/build`` and holds only the copy.
        on_line: Called from this thread with each output line as it is printed.
        publish: Directory to publish, relative to the tree (validated by ``config``).
        environment: The user's variables (validated again here).
        limits: Resource limits (default ``BuildLimits()``).
        sandbox: Host-side settings: uids, toolchains, hidden paths (default ``Sandbox()``).
        slot: Build slot; concurrent builds must use distinct slots (distinct uids).

    Raises:
        ConfigError: ``environment`` holds a reserved or invalid name.
        ValueError: ``command`` contains NUL (``config`` refuses those).
        FileExistsError: ``workdir`` already exists.
    """
    if "\x00" in command:
        raise ValueError("the build command contains a NUL character")
    limits = limits or BuildLimits()
    sandbox = sandbox or Sandbox()
    started = time.monotonic()
    env = environment_for(sandbox, check_environment(dict(environment or {})))
    uid = sandbox.uid(slot) if os.geteuid() == 0 else None  # not root: run as ourselves
    target = workdir.joinpath(*[p for p in publish.split("/") if p])
    prepare(source, workdir, uid)
    problem = check_paths(workdir, sandbox, uid)
    if problem:
        return BuildResult(False, None, "sandbox_error", 0.0, [], target, problem)
    watch = _Watch(on_line, limits, workdir)
    stopped = watch.run(command, workdir, sandbox, uid, env)
    seconds = time.monotonic() - started
    reason, code, message = watch.outcome(stopped, limits)
    if reason == "ok":
        try:
            target = check_publish(
                workdir, publish, limits.max_publish_bytes, limits.max_publish_files
            )
        except PublishProblem as exc:
            reason, message = exc.reason, exc.message
    return BuildResult(reason == "ok", code, reason, seconds, list(watch.tail), target, message)


class _Watch:
    """Starts the sandbox and supervises it until it ends or a limit stops it."""

    def __init__(self, on_line: Callable[[str], None], limits: BuildLimits, workdir: Path):
        self._on_line = on_line
        self._limits = limits
        self._workdir = workdir
        self._lines = LineSplitter(limits.max_line_chars)
        self.tail: deque[str] = deque(maxlen=limits.tail_lines)
        self.status = b""
        self.returncode: int | None = None
        self.start_error = ""

    def run(self, command: str, workdir: Path, sandbox: Sandbox, uid, env) -> str | None:
        """Run to the end; the reason when a limit stopped the build, else None."""
        status_r, status_w = os.pipe()
        passwd, group = identity_files(uid if uid is not None else os.getuid())
        passwd_r, group_r = _pipe_with(passwd), _pipe_with(group)
        fds = {"status": status_w, "passwd": passwd_r, "group": group_r}
        argv = build_argv(
            command,
            workdir,
            sandbox=sandbox,
            uid=uid,
            environment=env,
            rlimits=self._limits.rlimits(),
            fds=fds,
        )
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=HOST_ENV,
                start_new_session=True,  # one process group to kill
                pass_fds=tuple(fds.values()),
            )
        except OSError as exc:
            self.start_error = f"cannot start the sandbox: {exc}"
            return None
        finally:
            for fd in fds.values():
                os.close(fd)
        try:
            return self._supervise(proc, status_r)
        finally:
            if proc.poll() is None:
                _kill(proc)
            self.returncode = proc.wait()
            self.status += _read_available(status_r)
            proc.stdout.close()
            os.close(status_r)

    def _supervise(self, proc: subprocess.Popen, status_fd: int) -> str | None:
        limits = self._limits
        deadline = time.monotonic() + limits.timeout_seconds
        next_check = time.monotonic() + limits.check_seconds
        budget = limits.max_output_bytes
        out = proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(out, selectors.EVENT_READ)
            selector.register(status_fd, selectors.EVENT_READ)
            while out in selector.get_map():
                now = time.monotonic()
                if now >= deadline:
                    return _kill(proc, "timeout")
                if now >= next_check:
                    used, _ = tree_usage(self._workdir, limits.max_publish_files * 10)
                    if used > limits.max_workspace_bytes:
                        return _kill(proc, "output_too_large")
                    next_check = now + limits.check_seconds
                for key, _ in selector.select(min(deadline, next_check) - now):
                    data = os.read(key.fd, 65536)
                    if not data:
                        selector.unregister(key.fd)
                    elif key.fd == status_fd:
                        self.status += data
                    else:
                        self._emit(self._lines.feed(data[:budget]))
                        budget -= len(data)
                        if budget < 0:
                            return _kill(proc, "output_too_large")
        self._emit(self._lines.close())
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return _kill(proc, "timeout")
        return None

    def _emit(self, lines: list[str]) -> None:
        for line in lines:
            self.tail.append(line)
            self._on_line(line)

    def outcome(self, stopped: str | None, limits: BuildLimits) -> tuple[str, int | None, str]:
        """``(reason, exit_code, message)`` once the process has ended."""
        if self.start_error:
            return "sandbox_error", None, self.start_error
        if stopped == "timeout":
            return stopped, None, f"the build timed out after {limits.timeout_seconds:g} s"
        if stopped == "output_too_large":
            return stopped, None, "the build wrote more output than its limit"
        events = _json_lines(self.status)
        if not any("child-pid" in event for event in events):
            # bwrap failed before starting the command; its reason is the last line.
            last = self.tail[-1] if self.tail else f"exit status {self.returncode}"
            return "sandbox_error", None, f"the sandbox did not start: {last}"
        code = next((e["exit-code"] for e in events if "exit-code" in e), self.returncode)
        if code == 0:
            return "ok", 0, ""
        text = "\n".join(self.tail).lower()
        if any(hint in text for hint in _MEMORY_HINTS):
            return "memory", code, f"the build ran out of memory (limit {limits.memory_bytes} B)"
        return "failed", code, f"the build command exited with status {code}"


def _kill(proc: subprocess.Popen, reason: str | None = None) -> str | None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone
    return reason


def _pipe_with(data: bytes) -> int:
    # Small enough for the pipe buffer, so writing before the reader starts cannot block.
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    return read


def _read_available(fd: int) -> bytes:
    # Non-blocking: bwrap has exited, so whatever it wrote is in the pipe already.
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def _json_lines(data: bytes) -> list[dict]:
    events = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events
