"""``LocalCDN.stage(adopt=True)``: a directory handed over whole is renamed into place."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from services.cdn import LocalCDN, PublishError

SITE = "0123456789abcdef"


@pytest.fixture(params=[False, True], ids=["no-sync", "sync"])
def cdn(tmp_path, request):
    return LocalCDN(tmp_path / "cdn", sync=request.param)


def _tree(root, files: dict[str, bytes], mode=0o600):
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)
    return root


def test_adopted_directory_becomes_the_release_without_copying(cdn, tmp_path):
    src = _tree(tmp_path / "src", {"index.html": b"home", "a/b/c.css": b"c{}"})
    inode = (src / "a/b/c.css").stat().st_ino
    (src / "a").chmod(0o700)

    result = cdn.stage(SITE, "00000001-x", src, adopt=True)

    release = cdn.release_path(SITE, "00000001-x")
    assert (result.file_count, result.bytes) == (2, 7)
    assert not src.exists()  # taken over, not copied
    assert (release / "a/b/c.css").stat().st_ino == inode
    # Readable by the web server, whatever the checkout's modes were.
    assert stat.S_IMODE((release / "index.html").stat().st_mode) == 0o600
    assert stat.S_IMODE((release / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE(release.stat().st_mode) == 0o700
    cdn.activate(SITE, ["blog.localhost"], "00000001-x")
    assert (cdn.live_dir / "blog.localhost" / "index.html").read_bytes() == b"home"


def test_adopting_refuses_what_is_not_a_regular_file(cdn, tmp_path):
    src = _tree(tmp_path / "src", {"index.html": b"x"})
    (src / "passwd").symlink_to("/etc/passwd")

    with pytest.raises(PublishError, match="passwd is not a regular file"):
        cdn.stage(SITE, "00000001-x", src, adopt=True)
    assert cdn.releases(SITE) == []


def test_adopting_across_file_systems_falls_back_to_linking(cdn, tmp_path, monkeypatch):
    src = _tree(tmp_path / "src", {"index.html": b"x", "d/e.txt": b"ee"})
    rename = os.rename

    def cross_device(a, b, *args, **kwargs):
        if os.fspath(a) == os.fspath(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return rename(a, b, *args, **kwargs)

    monkeypatch.setattr(os, "rename", cross_device)
    result = cdn.stage(SITE, "00000001-x", src, adopt=True)

    assert (result.file_count, result.bytes) == (2, 3)
    assert src.exists()  # linked or copied, the source left to its owner
    assert (cdn.release_path(SITE, "00000001-x") / "d/e.txt").read_bytes() == b"ee"


def test_an_existing_release_is_never_replaced_by_adopting(cdn, tmp_path):
    cdn.stage(SITE, "00000001-x", _tree(tmp_path / "a", {"index.html": b"old"}), adopt=True)

    with pytest.raises(PublishError, match="already exists"):
        cdn.stage(SITE, "00000001-x", _tree(tmp_path / "b", {"index.html": b"new"}), adopt=True)
    assert (cdn.release_path(SITE, "00000001-x") / "index.html").read_bytes() == b"old"


@pytest.mark.parametrize("listed", [False, True], ids=["scanned", "listed"])
def test_an_adopted_release_is_flushed_in_one_round_after_its_rename(tmp_path, monkeypatch, listed):
    from services.cdn import local
    from services.cdn.base import Listing

    cdn = LocalCDN(tmp_path / "cdn", sync=True)
    src = _tree(tmp_path / "src", {"index.html": b"home", "a/b/c.css": b"c{}", "a/d.txt": b"d"})
    for d in (src / "a", src / "a/b"):
        d.chmod(0o700)
    rounds = []
    monkeypatch.setattr(local, "flush_all", lambda files, dirs: rounds.append((files, dirs)))
    listing = Listing(file_count=3, bytes=8, directories=("a", "a/b")) if listed else None

    result = cdn.stage(SITE, "00000001-x", src, adopt=True, fresh=["a/b/c.css"], listing=listing)

    release = cdn.release_path(SITE, "00000001-x")
    assert (result.file_count, result.bytes) == (3, 8)
    assert len(rounds) == 1  # one journal commit's wait, not one per step
    files, dirs = rounds[0]
    assert files == [str(release / "a/b/c.css")]
    assert sorted(dirs) == sorted(
        [str(release), str(release / "a"), str(release / "a/b"), str(release.parent)]
    )


def test_a_release_whose_flush_fails_is_not_left_behind(tmp_path, monkeypatch):
    from services.cdn import local

    cdn = LocalCDN(tmp_path / "cdn", sync=True)
    src = _tree(tmp_path / "src", {"index.html": b"home"})

    def full_disk(files, dirs):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(local, "flush_all", full_disk)
    with pytest.raises(PublishError, match="could not store the release"):
        cdn.stage(SITE, "00000001-x", src, adopt=True, fresh=["index.html"])
    assert cdn.releases(SITE) == []
