"""The command line that runs a build: ``prlimit`` → ``bwrap`` → (``setpriv``) → ``sh -c``.

Each layer is an existing, maintained tool that ``exec``s the next, so the build's
whole process tree shares one process group and one pid for the supervisor to kill:

* ``prlimit`` sets the rlimits (memory, processes, file size, core dumps), inherited by
  everything below it;
* ``bwrap`` (Debian's bubblewrap) unshares the pid, network, ipc, uts and cgroup
  namespaces, so there is no network at all, not even 127.0.0.1 of the host, and shows
  the build only read-only system directories, the toolchains it was given, the fresh
  work directory at ``/build`` and small size-capped tmpfs mounts;
* as root, ``setpriv`` then runs *inside* the sandbox and drops to the build slot's own
  uid/gid with no groups, no capabilities and ``no_new_privs``, so RLIMIT_NPROC counts
  only this build's processes (it is per real uid).

Why that order as root: bwrap then sets up its mounts with root's rights (in a mount
namespace of its own, no user namespace), so it can bind a work directory that sits
below owner-only (0700) directories: every directory under ``ECSTATIC_HOME`` stays
private, and only the work directory itself belongs to the slot uid. Not root, bwrap
runs unprivileged (it creates a user namespace) as the caller, who owns everything.

NOTE(build): with no network, builds that download packages (``npm install``,
``pip install``, Hugo modules, Bundler) fail. They need a future design: a read-only
package cache bound in, or a filtering proxy reachable through a socket.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUILD_DIR",
    "HOME_DIR",
    "HOST_ENV",
    "Sandbox",
    "build_argv",
    "check_paths",
    "environment_for",
    "identity_files",
]

BUILD_DIR = "/build"
HOME_DIR = "/build-home"
# The only variables prlimit/setpriv/bwrap themselves get: bwrap's pid 1 inside the
# sandbox keeps the environment it was started with, readable in /proc/1/environ.
HOST_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
# Every namespace (a user namespace too): bwrap run by an unprivileged caller.
_UNPRIVILEGED = ("--unshare-all",)
# As root: every namespace but the user one, and only what setpriv needs to drop to the
# slot uid (it then drops these too: the build itself has no capability at all).
_AS_ROOT = (
    "--unshare-pid",
    "--unshare-net",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--cap-add",
    "CAP_SETUID",
    "--cap-add",
    "CAP_SETGID",
)
_SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Read-only /etc entries builds need; never /etc as a whole (shadow, ssh keys, pip.conf).
_ETC = (
    "/etc/alternatives",
    "/etc/ssl/certs",
    "/etc/ca-certificates",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/mime.types",
)


@dataclass(frozen=True)
class Sandbox:
    """Where and as whom builds run (host settings, not the site owner's).

    Attributes:
        base_uid: Build slot ``n`` runs as uid and gid ``base_uid + n`` when Ecstatic runs
            as root. These uids must be unused on the host: nothing else may own files or
            run processes under them (RLIMIT_NPROC counts every process of the uid).
        toolchains: Extra directories bound read-only at the same path (so shebangs keep
            working), e.g. the virtualenv holding mkdocs; each ``<dir>/bin`` goes first on
            PATH inside.
        hidden: Paths that must never be visible inside, e.g. ``ECSTATIC_HOME``: a
            toolchain inside or above one of them is refused.
        bwrap: The bubblewrap executable.
        tmp_bytes: Size cap of each tmpfs (``/tmp``, ``/build-home``, ``/dev/shm``); tmpfs
            is RAM that RLIMIT_AS does not count.
    """

    base_uid: int = 200_000
    toolchains: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()
    bwrap: str = "bwrap"
    tmp_bytes: int = 256 * 2**20

    def uid(self, slot: int) -> int:
        """The uid (and gid) of one build slot."""
        return self.base_uid + slot

    def path(self) -> str:
        """PATH inside the sandbox: toolchains first, then the system directories."""
        bins = [str(tc / "bin") for tc in self.toolchains if (tc / "bin").is_dir()]
        return ":".join([*bins, *_SYSTEM_PATH])


def identity_files(uid: int) -> tuple[bytes, bytes]:
    """Minimal ``/etc/passwd`` and ``/etc/group`` so tools that look the user up work."""
    passwd = (
        f"root:x:0:0::/nonexistent:/usr/sbin/nologin\nbuild:x:{uid}:{uid}::{HOME_DIR}:/bin/sh\n"
    )
    group = f"root:x:0:\nbuild:x:{uid}:\n"
    return passwd.encode(), group.encode()


def build_argv(
    command: str,
    workdir: Path,
    *,
    sandbox: Sandbox,
    uid: int | None,
    environment: Mapping[str, str],
    rlimits: Mapping[str, int],
    fds: Mapping[str, int],
) -> list[str]:
    """The full argument list (no shell on the host; ``sh -c`` runs inside the sandbox).

    Args:
        command: The user's build command.
        workdir: The fresh work directory, bound read-write at ``/build``.
        sandbox: Host-side sandbox settings.
        uid: Drop to this uid/gid with ``setpriv`` inside the sandbox (None when not root).
        environment: The complete environment of the build (bwrap starts from empty).
        rlimits: prlimit option name → value, e.g. ``{"as": 2**31, "nproc": 256}``.
        fds: Inherited file descriptors: ``status`` (bwrap's JSON status), ``passwd``
            and ``group`` (contents of the files of the same name).
    """
    argv = ["prlimit", *(f"--{name}={value}" for name, value in rlimits.items()), "--"]
    argv += [sandbox.bwrap, *(_AS_ROOT if uid is not None else _UNPRIVILEGED)]
    argv += [
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into a terminal outside
        "--hostname",
        "build",
        "--json-status-fd",
        str(fds["status"]),
        "--clearenv",
    ]
    for name, value in environment.items():
        argv += ["--setenv", name, value]
    for path in _SYSTEM_DIRS:
        argv += _mirror(path)
    for path in _ETC:
        argv += ["--ro-bind-try", path, path]
    argv += ["--file", str(fds["passwd"]), "/etc/passwd"]
    argv += ["--file", str(fds["group"]), "/etc/group"]
    # bwrap makes missing mount points 0700 and its tmpfs 0755, both owned by root when
    # root runs it: open them to the slot uid (only this build lives in the sandbox).
    made: set[Path] = set()
    for toolchain in sandbox.toolchains:
        for parent in [p for p in reversed(toolchain.parents) if p != Path("/")]:
            if parent not in made:
                made.add(parent)
                argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", str(toolchain), str(toolchain)]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for tmp in ("/tmp", HOME_DIR, "/dev/shm"):
        argv += ["--perms", "1777", "--size", str(sandbox.tmp_bytes), "--tmpfs", tmp]
    argv += ["--bind", str(workdir), BUILD_DIR, "--chdir", BUILD_DIR]
    # The mount skeleton and /dev are tmpfs too: make them read-only, uncapped RAM otherwise.
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--"]
    if uid is not None:
        argv += [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    return [*argv, "/bin/sh", "-c", command]


def check_paths(workdir: Path, sandbox: Sandbox, uid: int | None) -> str | None:
    """Why the sandbox cannot be set up as configured, or None when it can.

    Toolchains must stay clear of every hidden path, and the build uid must be able to
    read and enter each toolchain directory itself (bwrap mounts it, so the directories
    above it do not matter) and own its work directory.
    """
    for toolchain in sandbox.toolchains:
        real = toolchain.resolve()
        for hidden in sandbox.hidden:
            secret = hidden.resolve()
            if real == secret or secret in real.parents or real in secret.parents:
                return f"toolchain {toolchain} overlaps the hidden path {hidden}"
    if uid is None:
        return None
    for toolchain in sandbox.toolchains:
        info = toolchain.stat()
        if info.st_mode & 0o005 != 0o005 and info.st_uid != uid:
            return f"toolchain {toolchain} is not readable by the build uid {uid} (needs o+rx)"
    if workdir.stat().st_uid != uid:
        return f"{workdir} does not belong to the build uid {uid}"
    return None


def _mirror(path: str) -> list[str]:
    # Merged-/usr systems have /bin, /lib* as symlinks into /usr: recreate them as such.
    if os.path.islink(path):
        return ["--symlink", os.readlink(path), path]
    if os.path.isdir(path):
        return ["--ro-bind", path, path]
    return []


def environment_for(sandbox: Sandbox, user: Mapping[str, str]) -> dict[str, str]:
    """The build's complete environment: a fixed minimum, then the user's variables.

    Nothing comes from the host's environment, so no token, key or ``ECSTATIC_*``
    setting can reach the build. The user's names were validated (no PATH, HOME, LD_*,
    ECSTATIC_*), so they cannot displace PATH or HOME.
    """
    env = {
        "PATH": sandbox.path(),
        "HOME": HOME_DIR,
        "USER": "build",
        "LOGNAME": "build",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "CI": "true",
    }
    env.update(user)
    return env
