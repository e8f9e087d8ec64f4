"""Builds under an owner-only data directory: the slot uid needs no way down to its work
directory (it is bound by descriptor), and nothing it leaves is readable by others."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from build_kit import BASE_UID, write_tree

from services.build.bwrap import Sandbox
from services.build.limits import BuildLimits
from services.build.sandbox import run
from services.core.private_files import OWNER_ONLY_UMASK, offenders

pytestmark = pytest.mark.integration


@pytest.fixture
def owner_only_umask():
    previous = os.umask(OWNER_ONLY_UMASK)
    yield
    os.umask(previous)


def test_a_build_runs_below_directories_only_the_owner_can_enter(tmp_path, owner_only_umask):
    home = tmp_path / "home"
    deploys = home / "git" / "work"
    deploys.mkdir(parents=True)
    for directory in (tmp_path, home, home / "git", deploys):
        directory.chmod(0o700)
    source = write_tree(home / "checkout", {"index.html": "<h1>hi</h1>\n", "a/b.txt": "b\n"})
    lines: list[str] = []

    result = run(
        "id -u; cat index.html a/b.txt; mkdir -p out/deep && echo built > out/deep/x.html",
        source,
        deploys / "work1",
        on_line=lines.append,
        publish="out",
        limits=BuildLimits(timeout_seconds=60),
        sandbox=Sandbox(base_uid=BASE_UID, hidden=(home,)),
        slot=3,
    )

    assert result.ok, (result.reason, result.message, lines)
    if os.geteuid() == 0:
        assert lines[0] == str(BASE_UID + 3)  # really the slot uid, not root
    assert lines[1:] == ["<h1>hi</h1>", "b"]
    assert (result.publish_dir / "deep" / "x.html").read_text() == "built\n"
    # Every directory above the work directory is still 0700 and everything is private.
    for directory in (tmp_path, home, home / "git", deploys):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert offenders(home) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="slot uids exist only when Ecstatic runs as root")
def test_the_slot_uid_cannot_reach_anything_else_under_home(tmp_path, owner_only_umask):
    home = tmp_path / "home"
    secret = home / "api" / "ecstatic.db"
    secret.parent.mkdir(parents=True)
    secret.write_text("token hashes")
    tmp_path.chmod(0o700)
    lines: list[str] = []
    result = run(
        f"cat {secret} || echo unreadable; ls /build",
        write_tree(tmp_path / "src", {"index.html": "x"}),
        home / "work1",
        on_line=lines.append,
        limits=BuildLimits(timeout_seconds=60),
        sandbox=Sandbox(base_uid=BASE_UID, hidden=(home,)),
    )
    assert result.ok and "token hashes" not in lines and "unreadable" in lines
    assert Path(home / "work1" / "index.html").read_text() == "x"
