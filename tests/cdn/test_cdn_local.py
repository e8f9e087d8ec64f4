import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from services.cdn import CDNBackend, LocalCDN, PublishError, PublishResult, SourceFile
from services.cdn.local import flush_all

SITE = "0123456789abcdef"


class Clock:
    """Wall clock that moves one second per reading, so release order is deterministic."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
def cdn(tmp_path):
    return LocalCDN(tmp_path / "cdn", keep=3, sync=False, clock=Clock())


def files(**contents: str) -> list[SourceFile]:
    return [SourceFile(path.replace("__", "/"), text.encode()) for path, text in contents.items()]


def read_live(cdn: LocalCDN, host: str, path: str) -> str:
    return (cdn.live_dir / host / path).read_text()


def test_local_cdn_is_a_backend(cdn):
    assert isinstance(cdn, CDNBackend)


def test_publish_fills_the_release_and_switches_the_hostname(cdn):
    result = cdn.publish(
        SITE, ["blog.localhost"], "r1", files(index_html="<h1>hi</h1>", css__site_css="a{}")
    )

    assert result == PublishResult(file_count=2, bytes=len("<h1>hi</h1>") + 3)
    release = cdn.releases_dir / SITE / "r1"
    assert (release / "css" / "site_css").read_text() == "a{}"
    link = cdn.live_dir / "blog.localhost"
    assert link.is_symlink()
    assert os.readlink(link) == f"../releases/{SITE}/r1"  # relative: the tree can move
    assert read_live(cdn, "blog.localhost", "index_html") == "<h1>hi</h1>"
    assert cdn.live_release("blog.localhost") == (SITE, "r1")
    # no temporaries left behind
    assert [p.name for p in (cdn.releases_dir / SITE).iterdir()] == ["r1"]
    assert [p.name for p in cdn.live_dir.iterdir()] == ["blog.localhost"]


def test_every_hostname_is_switched(cdn):
    cdn.publish(SITE, ["a.localhost", "b.localhost", "a.localhost"], "r1", files(x="1"))
    assert cdn.live_release("a.localhost") == (SITE, "r1")
    assert cdn.live_release("b.localhost") == (SITE, "r1")


def test_second_publish_switches_and_keeps_the_old_release(cdn):
    cdn.publish(SITE, ["blog.localhost"], "r1", files(index_html="one", old_html="old"))
    cdn.publish(SITE, ["blog.localhost"], "r2", files(index_html="two"))

    assert cdn.live_release("blog.localhost") == (SITE, "r2")
    assert read_live(cdn, "blog.localhost", "index_html") == "two"
    assert not (cdn.live_dir / "blog.localhost" / "old_html").exists()
    assert cdn.releases(SITE) == ["r2", "r1"]


def test_publish_copies_a_directory(cdn, tmp_path):
    source = tmp_path / "src"
    (source / "docs").mkdir(parents=True)
    (source / "index.html").write_text("home")
    (source / "docs" / "a.html").write_text("doc")

    result = cdn.publish(SITE, ["blog.localhost"], "r1", source)

    assert result == PublishResult(file_count=2, bytes=7)
    assert read_live(cdn, "blog.localhost", "docs/a.html") == "doc"


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_directory_source_with_a_symlink_is_refused(cdn, tmp_path, kind):
    cdn.publish(SITE, ["blog.localhost"], "r1", files(index_html="live"))
    source = tmp_path / "src"
    source.mkdir()
    (source / "index.html").write_text("new")
    target = tmp_path / ("secret" if kind == "file" else "secretdir")
    if kind == "file":
        target.write_text("secret")
    else:
        target.mkdir()
    (source / "link").symlink_to(target)

    with pytest.raises(PublishError, match="symlink"):
        cdn.publish(SITE, ["blog.localhost"], "r2", source)

    assert cdn.live_release("blog.localhost") == (SITE, "r1")
    assert cdn.releases(SITE) == ["r1"]


def test_failing_source_leaves_the_live_site_and_no_partial_release(cdn):
    cdn.publish(SITE, ["blog.localhost"], "r1", files(index_html="live"))

    class Boom(Exception):
        pass

    def source():
        yield SourceFile("index.html", b"half")
        raise Boom()

    with pytest.raises(Boom):
        cdn.publish(SITE, ["blog.localhost"], "r2", source())

    assert cdn.live_release("blog.localhost") == (SITE, "r1")
    assert read_live(cdn, "blog.localhost", "index_html") == "live"
    assert sorted(p.name for p in (cdn.releases_dir / SITE).iterdir()) == ["r1"]


@pytest.mark.parametrize(
    ("site_id", "hostnames", "release_id"),
    [
        ("../x", ["blog.localhost"], "r1"),
        ("a/b", ["blog.localhost"], "r1"),
        ("..", ["blog.localhost"], "r1"),
        ("", ["blog.localhost"], "r1"),
        (SITE, ["blog.localhost"], ".."),
        (SITE, ["blog.localhost"], "a/b"),
        (SITE, ["blog.localhost"], "x..y"),
        (SITE, ["blog.localhost"], ".hidden"),
        (SITE, ["../etc"], "r1"),
        (SITE, ["a/b.localhost"], "r1"),
        (SITE, [".."], "r1"),
        (SITE, ["Blog.localhost"], "r1"),
        (SITE, ["blog.localhost:8080"], "r1"),
        (SITE, [], "r1"),
        (SITE, "blog.localhost", "r1"),
    ],
)
def test_invalid_ids_and_hostnames_are_refused(cdn, site_id, hostnames, release_id):
    with pytest.raises(PublishError):
        cdn.publish(site_id, hostnames, release_id, files(index_html="x"))
    assert not cdn.live_dir.exists()
    assert not (cdn.root.parent / "x").exists() and not (cdn.root.parent / "etc").exists()


@pytest.mark.parametrize(
    "path", ["../evil", "/abs", "a//b", "a/./b", "a/../b", "", ".", "a/", "x\x00y"]
)
def test_unsafe_file_paths_are_refused(cdn, path):
    with pytest.raises(PublishError, match="invalid file path"):
        cdn.publish(SITE, ["blog.localhost"], "r1", [SourceFile(path, b"x")])
    assert not (cdn.root / "releases" / "evil").exists()
    assert not (cdn.releases_dir / SITE / "evil").exists()
    assert cdn.releases(SITE) == []
    assert cdn.live_release("blog.localhost") is None


def test_duplicate_and_conflicting_paths_are_refused(cdn):
    with pytest.raises(PublishError, match="twice"):
        cdn.publish(SITE, ["blog.localhost"], "r1", [SourceFile("a", b"1"), SourceFile("a", b"2")])
    with pytest.raises(PublishError, match="both a file and a directory"):
        cdn.publish(
            SITE, ["blog.localhost"], "r1", [SourceFile("a", b"1"), SourceFile("a/b", b"2")]
        )
    assert cdn.releases(SITE) == []


def test_an_existing_release_id_is_refused(cdn):
    cdn.publish(SITE, ["blog.localhost"], "r1", files(index_html="one"))
    with pytest.raises(PublishError, match="already exists"):
        cdn.publish(SITE, ["blog.localhost"], "r1", files(index_html="two"))
    assert read_live(cdn, "blog.localhost", "index_html") == "one"


def test_a_real_directory_in_the_live_dir_is_not_replaced(cdn):
    (cdn.live_dir / "blog.localhost").mkdir(parents=True)
    (cdn.live_dir / "blog.localhost" / "keep").write_text("hand-made")
    with pytest.raises(PublishError, match="could not switch"):
        cdn.publish(SITE, ["blog.localhost"], "r1", files(index_html="x"))
    assert (cdn.live_dir / "blog.localhost" / "keep").read_text() == "hand-made"
    assert [p.name for p in cdn.live_dir.iterdir()] == ["blog.localhost"]  # no temp links


def test_old_releases_are_pruned_after_the_switch(cdn):
    for n in range(1, 6):
        cdn.publish(SITE, ["blog.localhost"], f"r{n}", files(index_html=str(n)))
    assert cdn.releases(SITE) == ["r5", "r4", "r3"]
    assert cdn.live_release("blog.localhost") == (SITE, "r5")


def test_pruning_orders_by_deploy_number_not_by_mtime(cdn):
    # Ids carry the deploy number; a directory's mtime (touched by a crash mid-removal,
    # a backup restore, a clock jump) says nothing about which deploy is newer.
    for number in [3, 1, 4, 2]:
        cdn.publish(SITE, ["blog.localhost"], f"{number:08d}-d{number}", files(i=str(number)))
        old = 2_000_000_000 + number  # make every older id look freshly modified
        os.utime(cdn.releases_dir / SITE / f"{number:08d}-d{number}", (old, old))
    assert cdn.releases(SITE) == ["00000004-d4", "00000003-d3", "00000002-d2"]
    assert cdn.live_release("blog.localhost") == (SITE, "00000002-d2")  # live is kept


def test_pruning_spares_releases_another_hostname_still_serves(cdn):
    cdn.publish(SITE, ["old.localhost"], "r1", files(index_html="1"))
    for n in range(2, 7):
        cdn.publish(SITE, ["new.localhost"], f"r{n}", files(index_html=str(n)))
    assert cdn.releases(SITE) == ["r6", "r5", "r4", "r1"]
    assert read_live(cdn, "old.localhost", "index_html") == "1"


def test_pruning_only_touches_the_published_site(cdn):
    other = "fedcba9876543210"
    cdn.publish(other, ["other.localhost"], "o1", files(index_html="o"))
    for n in range(1, 6):
        cdn.publish(SITE, ["blog.localhost"], f"r{n}", files(index_html=str(n)))
    assert cdn.releases(other) == ["o1"]


def test_abandoned_temporaries_are_removed_once_stale(tmp_path):
    clock = Clock()
    cdn = LocalCDN(tmp_path / "cdn", sync=False, clock=clock, stale_seconds=3600)
    site_dir = cdn.releases_dir / SITE
    (site_dir / ".tmp-crashed").mkdir(parents=True)
    (site_dir / ".tmp-crashed" / "f").write_text("x")
    (site_dir / ".tmp-inflight").mkdir()
    old = clock.now - 7200
    os.utime(site_dir / ".tmp-crashed", (old, old))
    os.utime(site_dir / ".tmp-inflight", (clock.now, clock.now))

    cdn.publish(SITE, ["blog.localhost"], "r1", files(index_html="x"))

    assert sorted(p.name for p in site_dir.iterdir()) == [".tmp-inflight", "r1"]


def test_files_are_owner_only_whatever_the_umask(cdn):
    previous = os.umask(0)  # the most permissive: the modes still come out owner-only
    try:
        cdn.publish(SITE, ["blog.localhost"], "r1", files(a__b__c_html="x"))
    finally:
        os.umask(previous)
    release = cdn.releases_dir / SITE / "r1"
    assert stat.S_IMODE(release.stat().st_mode) == 0o700
    assert stat.S_IMODE((release / "a" / "b").stat().st_mode) == 0o700
    assert stat.S_IMODE((release / "a" / "b" / "c_html").stat().st_mode) == 0o600


def test_keep_must_leave_the_previous_release(tmp_path):
    with pytest.raises(ValueError):
        LocalCDN(tmp_path, keep=1)


def test_live_release_of_unknown_host_is_none(cdn):
    assert cdn.live_release("nobody.localhost") is None


def test_sync_mode_publishes(tmp_path):
    cdn = LocalCDN(tmp_path / "cdn")  # the default: flush to disk before switching
    cdn.publish(SITE, ["blog.localhost"], "r1", files(index_html="durable"))
    assert read_live(cdn, "blog.localhost", "index_html") == "durable"


def test_visitors_never_see_a_missing_file_during_switches(tmp_path):
    # Nothing is pruned during the run: this is about the switch itself. (With keep=3 and
    # 150 switches in a second, a read that began three releases ago can find its release
    # pruned, which no real visitor meets: deploys are not milliseconds apart.)
    cdn = LocalCDN(tmp_path / "cdn", keep=200, sync=False)
    cdn.publish(SITE, ["blog.localhost"], "r0", files(index_html="v0", about_html="v0"))
    page = cdn.live_dir / "blog.localhost" / "index_html"
    stop = threading.Event()
    seen: set[str] = set()
    errors: list[BaseException] = []

    def visitor():
        while not stop.is_set():
            try:
                seen.add(page.read_text())
            except OSError as exc:  # a gap between unlink and symlink would land here
                errors.append(exc)

    # Switch threads often, so the visitor runs inside any gap a switch might leave.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=visitor)
    thread.start()
    try:
        for n in range(1, 150):
            cdn.publish(
                SITE, ["blog.localhost"], f"r{n}", files(index_html=f"v{n}", about_html=f"v{n}")
            )
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert errors == []
    assert seen <= {f"v{n}" for n in range(150)}
    assert len(seen) > 1
    assert Path(cdn.live_dir / "blog.localhost").is_symlink()


# -- numbered releases, non-recursive removal, startup sweep ---------------------------


def deep_tree(root: Path, depth: int, name: str = "d" * 40) -> None:
    # Built with dir fds: the full path is far longer than PATH_MAX.
    os.makedirs(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            os.mkdir(name, dir_fd=fd)
            with open(os.open(f"f{level}", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as f:
                f.write("x")
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def test_remove_tree_handles_a_thousand_levels_and_long_paths(tmp_path):
    from services.cdn.local import remove_tree

    deep_tree(tmp_path / "deep", 1000)
    remove_tree(tmp_path / "deep")
    assert not (tmp_path / "deep").exists()


def test_remove_tree_unlinks_symlinks_without_following(tmp_path):
    from services.cdn.local import remove_tree

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")
    (tmp_path / "t" / "sub").mkdir(parents=True)
    (tmp_path / "t" / "sub" / "link").symlink_to(outside)
    (tmp_path / "t" / "file-link").symlink_to(outside / "keep")
    remove_tree(tmp_path / "t")
    assert not (tmp_path / "t").exists()
    assert (outside / "keep").read_text() == "k"


def test_pruning_a_deeply_nested_old_release_never_fails_a_publish(cdn):
    deep_tree(cdn.releases_dir / SITE / "00000001-old", 1000)
    for n in range(2, 6):
        cdn.publish(SITE, ["blog.localhost"], f"{n:08d}-d", files(index_html=str(n)))
    assert cdn.releases(SITE) == ["00000005-d", "00000004-d", "00000003-d"]


def test_a_prune_that_fails_is_logged_not_raised(cdn, caplog, monkeypatch):
    import services.cdn.local as local

    for n in range(1, 4):
        cdn.publish(SITE, ["blog.localhost"], f"{n:08d}-d", files(index_html=str(n)))

    def broken(path):
        raise RecursionError("simulated")

    monkeypatch.setattr(local, "remove_tree", broken)
    result = cdn.publish(SITE, ["blog.localhost"], "00000004-d", files(index_html="4"))
    assert result.file_count == 1
    assert cdn.live_release("blog.localhost") == (SITE, "00000004-d")
    assert "release pruning failed" in caplog.text


def test_a_removal_killed_midway_is_invisible_and_finished_by_the_sweep(tmp_path):
    cdn = LocalCDN(tmp_path / "cdn", keep=2, sync=False)
    cdn.publish(SITE, ["blog.localhost"], "00000001-a", files(index_html="1"))
    cdn.publish(SITE, ["blog.localhost"], "00000002-b", files(index_html="2"))
    site_dir = cdn.releases_dir / SITE
    # What a kill -9 leaves: a release renamed for removal, half emptied, and a staging dir.
    (site_dir / ".trash-00000003-c-1234").mkdir()
    (site_dir / ".trash-00000003-c-1234" / "half").write_text("x")
    (site_dir / ".tmp-abandoned").mkdir()
    (cdn.live_dir / ".blog.localhost.abc.tmp").symlink_to("../releases/x/y")

    assert cdn.releases(SITE) == ["00000002-b", "00000001-a"]
    LocalCDN(tmp_path / "cdn", sync=False).sweep()  # what build() runs at start

    assert sorted(p.name for p in site_dir.iterdir()) == ["00000001-a", "00000002-b"]
    assert [p.name for p in cdn.live_dir.iterdir()] == ["blog.localhost"]
    assert read_live(cdn, "blog.localhost", "index_html") == "2"


def test_release_backend_stage_activate_prune(cdn, tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "b.txt").write_text("b")
    for n in (1, 2, 3):
        stored = cdn.stage(SITE, f"{n:08d}-d", src)
        assert stored == PublishResult(file_count=1, bytes=1)
    assert cdn.live_release("blog.localhost") is None  # staging serves nothing
    cdn.activate(SITE, ["blog.localhost"], "00000001-d")
    assert read_live(cdn, "blog.localhost", "a/b.txt") == "b"
    cdn.prune(SITE, keep=["00000003-d"])
    assert cdn.releases(SITE) == ["00000003-d", "00000001-d"]  # kept + live
    with pytest.raises(PublishError):
        cdn.activate(SITE, ["blog.localhost"], "00000002-d")
    cdn.remove_hostnames(SITE, ["blog.localhost"])
    assert cdn.live_release("blog.localhost") is None


def test_flush_all_flushes_what_exists_and_names_what_is_missing_unless_told(tmp_path):
    present = tmp_path / "present"
    present.write_bytes(b"x")
    gone = os.fspath(tmp_path / "gone")
    flush_all([os.fspath(present)], [os.fspath(tmp_path)])
    flush_all([os.fspath(present), gone], missing_ok=True)  # removed since: nothing to keep
    with pytest.raises(FileNotFoundError):
        flush_all([os.fspath(present), gone])
