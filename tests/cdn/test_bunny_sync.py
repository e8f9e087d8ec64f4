"""Sync planning and execution, and the BunnyCDN backend, against the local Bunny double."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.cdn import CDNBackend, PublishError, PublishResult, SourceFile
from services.cdn.bunny import BunnyCDN
from services.cdn.bunny_http import RetryPolicy
from services.cdn.bunny_storage import BunnyStorage
from services.cdn.sync import (
    SyncError,
    SyncResult,
    files_from_sources,
    plan_sync,
    scan_directory,
    sync_tree,
)
from tests.cdn.bunny_double import BunnyDouble

ZONE = "sites"
KEY = "zone-pw-0b7e41-SECRET"
SITE = "site-0123456789"
WORKERS = 8
# A read timeout short enough for stalls to be cheap, long enough for a busy 2-core box.
FAST = RetryPolicy(attempts=3, backoff_initial=0.01, backoff_max=0.05, timeout=(2.0, 1.0))


@pytest.fixture(scope="module")
def shared_double():
    with BunnyDouble() as bunny:
        bunny.add_zone(ZONE, KEY)
        yield bunny


@pytest.fixture
def double(shared_double):
    """The module's double, emptied (one server pair per module keeps the tests fast)."""
    shared_double.restore({ZONE: ({}, set())})
    return shared_double


@pytest.fixture
def storage(double):
    client = BunnyStorage(
        ZONE, KEY, double.storage_host, scheme="http", pool_size=WORKERS, policy=FAST
    )
    yield client
    client.close()


@pytest.fixture
def cdn(storage):
    return BunnyCDN(storage, workers=WORKERS)


def make_site(root: Path, count: int = 1000, seed: int = 7) -> Path:
    """``count`` files of 0-3 KiB over nested directories, a few with awkward names."""
    rng = random.Random(seed)
    dirs = ["", "css", "js/vendor", "blog/2024/naïve café", "img/a b", "docs/ü#?%"]
    for n in range(count):
        directory = root / dirs[n % len(dirs)]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"page {n:04d}.html").write_bytes(rng.randbytes(rng.randrange(3072)))
    return root


def remote_tree(double: BunnyDouble, prefix: str = SITE) -> dict[str, bytes]:
    start = len(prefix) + 1
    return {p[start:]: data for p, data in double.files(ZONE).items() if p.startswith(prefix + "/")}


def local_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def methods(double: BunnyDouble) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in double.requests:
        counts[record.method] = counts.get(record.method, 0) + 1
    return counts


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory, shared_double):
    """A 1,000-file site uploaded once: the site's directory and the double's state after."""
    shared_double.restore({ZONE: ({}, set())})
    site = make_site(tmp_path_factory.mktemp("uploaded") / "site")
    storage = BunnyStorage(ZONE, KEY, shared_double.storage_host, scheme="http", policy=FAST)
    first = BunnyCDN(storage, workers=WORKERS).sync_release(SITE, site)
    storage.close()
    return (
        site,
        first,
        shared_double.requests,
        shared_double.max_in_flight,
        shared_double.snapshot(),
    )


def test_a_first_sync_uploads_every_file_exactly_once(uploaded, double):
    site, first, requests, max_in_flight, snapshot = uploaded
    assert first == SyncResult(
        uploaded=1000,
        skipped=0,
        deleted=0,
        bytes_uploaded=sum(len(d) for d in local_tree(site).values()),
    )
    assert [r.method for r in requests].count("PUT") == 1000
    assert [r.method for r in requests].count("GET") == 1  # the empty prefix's listing
    assert len(requests) == 1001
    assert len({r.path for r in requests if r.method == "PUT"}) == 1000  # each file once
    assert 2 <= max_in_flight <= WORKERS  # parallel, and bounded by the workers
    double.restore(snapshot)
    assert remote_tree(double) == local_tree(site)


@pytest.fixture
def live_site(tmp_path, uploaded, double):
    """A private copy of the uploaded site, with the double back in the uploaded state."""
    site, _, _, _, snapshot = uploaded
    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    double.restore(snapshot)
    return copy


LISTINGS = 1 + 10  # the prefix and each of its ten directories, one GET each


def test_an_unchanged_site_sends_only_listings(double, cdn, live_site):
    result = cdn.sync_release(SITE, live_site)
    assert result == SyncResult(uploaded=0, skipped=1000, deleted=0, bytes_uploaded=0)
    assert methods(double) == {"GET": LISTINGS}


def test_one_changed_file_sends_exactly_one_put(double, cdn, live_site):
    changed = live_site / "blog/2024/naïve café/page 0003.html"
    changed.write_bytes(b"<p>new</p>")

    result = cdn.sync_release(SITE, live_site)

    assert result == SyncResult(uploaded=1, skipped=999, deleted=0, bytes_uploaded=10)
    assert methods(double) == {"GET": LISTINGS, "PUT": 1}
    [put] = double.matching("PUT")
    assert put.path == f"/{ZONE}/{SITE}/blog/2024/naïve café/page 0003.html"
    assert remote_tree(double) == local_tree(live_site)


def test_stale_files_are_deleted_only_after_every_new_file_is_in_place(double, cdn, live_site):
    for directory in ("", "css", "js/vendor", "blog/2024/naïve café", "docs/ü#?%"):
        sorted((live_site / directory).glob("*.html"))[-1].write_bytes(b"changed")
    (live_site / "new dir").mkdir()
    (live_site / "new dir/fresh.html").write_bytes(b"fresh")
    (live_site / "css/page 0001.html").unlink()
    (live_site / "page 0000.html").unlink()
    for path in (live_site / "img/a b").iterdir():  # img/ loses all its 166 files
        path.unlink()

    result = cdn.sync_release(SITE, live_site)

    assert result == SyncResult(uploaded=6, skipped=827, deleted=168, bytes_uploaded=5 * 7 + 5)
    deletes = double.matching("DELETE")
    assert sorted(r.path for r in deletes) == [
        f"/{ZONE}/{SITE}/css/page 0001.html",
        f"/{ZONE}/{SITE}/img/",  # the emptied directory: one recursive DELETE
        f"/{ZONE}/{SITE}/page 0000.html",
    ]
    puts = double.matching("PUT")
    assert len(puts) == 6 and all(p.status == 201 for p in puts)
    assert min(d.seq for d in deletes) > max(p.applied for p in puts)
    assert methods(double) == {"GET": LISTINGS, "PUT": 6, "DELETE": 3}
    assert remote_tree(double) == local_tree(live_site)


def test_injected_5xx_timeouts_and_drops_are_retried_to_a_correct_tree(tmp_path, double, cdn):
    site = make_site(tmp_path / "site", count=300)
    # Each fault names one file, so no file meets more failures than its retries absorb.
    for n in range(5):
        double.fail("PUT", f"*/page {n:04d}.html", times=2, status=503)
    for n in range(10, 15):
        double.fail("PUT", f"*/page {n:04d}.html", times=1, status=429)
    double.stall("PUT", "*/page 0020.html", times=1, seconds=1.5)
    for n in range(30, 34):
        double.drop("PUT", f"*/page {n:04d}.html", times=1)
    double.drop("PUT", "*/page 0040.html", times=1, after_apply=True)  # a lost response

    result = cdn.sync_release(SITE, site)

    assert result.uploaded == 300
    assert len(double.matching("PUT")) == 300 + 10 + 5 + 1 + 4 + 1
    assert remote_tree(double) == local_tree(site)


def test_faults_outlasting_the_retries_fail_cleanly_and_delete_nothing(double, cdn, live_site):
    before = remote_tree(double)
    (live_site / "css/page 0001.html").write_bytes(b"v2")
    (live_site / "js/vendor/page 0002.html").write_bytes(b"v2")
    (live_site / "page 0000.html").unlink()  # stale: must survive the failed sync
    double.fail("PUT", f"/{ZONE}/{SITE}/css/page 0001.html", times=99, status=503)

    with pytest.raises(SyncError) as caught:
        cdn.sync_release(SITE, live_site)

    error = caught.value
    assert isinstance(error, PublishError) and error.path == "css/page 0001.html"
    message = str(error)
    assert "upload of css/page 0001.html failed" in message and "HTTP 503" in message
    assert "after 3 attempts" in message and "Nothing was deleted" in message
    assert KEY not in message
    assert error.replaced in (0, 1)  # the other change may or may not have gone first
    assert double.matching("DELETE") == []
    after = remote_tree(double)
    assert after.keys() == before.keys()  # every previously live file is still there
    assert after["page 0000.html"] == before["page 0000.html"]
    assert after["css/page 0001.html"] == before["css/page 0001.html"]
    assert len(double.matching("PUT", "*/css/page 0001.html")) == FAST.attempts


def test_a_failed_upload_cancels_the_uploads_not_yet_started(tmp_path, double, storage):
    site = make_site(tmp_path / "site", count=200)
    double.fail("PUT", "*", times=10_000, status=500)
    with pytest.raises(SyncError, match="HTTP 500"):
        sync_tree(storage, scan_directory(site), SITE, workers=2)
    # only the files the two workers had picked up by then were tried, not all 200
    attempted = {r.path for r in double.matching("PUT")}
    assert len(attempted) <= 6
    assert len(double.matching("PUT")) == len(attempted) * FAST.attempts
    assert double.files(ZONE) == {}


def test_a_wrong_key_is_a_clear_sync_error(tmp_path, double, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = BunnyStorage(ZONE, "bad-SECRET", double.storage_host, scheme="http", policy=FAST)
    site = make_site(tmp_path / "site", count=3)
    with pytest.raises(SyncError, match="could not list .* wrong password") as caught:
        BunnyCDN(wrong, workers=4).sync_release(SITE, site)
    assert caught.value.replaced == 0
    assert "bad-SECRET" not in str(caught.value) + caplog.text
    assert [r.method for r in double.requests] == ["GET"]


def test_the_key_never_appears_in_logs(tmp_path, double, cdn, caplog):
    caplog.set_level(logging.DEBUG)
    site = make_site(tmp_path / "site", count=20)
    double.fail("PUT", "*", times=5, status=502)
    cdn.sync_release(SITE, site)
    assert any("retried" in r.getMessage() for r in caplog.records)
    everything = caplog.text + "".join(str(r.__dict__) for r in caplog.records) + repr(cdn)
    assert KEY not in everything


def test_symlinks_and_empty_sites_are_refused_before_any_request(tmp_path, double, cdn):
    site = make_site(tmp_path / "site", count=3)
    os.symlink("/etc/passwd", site / "leak.html")
    with pytest.raises(SyncError, match="leak.html is a symlink"):
        cdn.sync_release(SITE, site)
    (site / "leak.html").unlink()
    os.symlink(tmp_path, site / "loop")
    with pytest.raises(SyncError, match="loop is a symlink"):
        cdn.sync_release(SITE, site)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SyncError, match="no files"):
        cdn.sync_release(SITE, empty)
    with pytest.raises(SyncError, match="not a directory"):
        cdn.sync_release(SITE, tmp_path / "missing")
    assert double.requests == []


# -- the backend --------------------------------------------------------------------------


def test_bunny_cdn_publishes_directories_and_file_lists_into_the_site_prefix(tmp_path, double, cdn):
    assert isinstance(cdn, CDNBackend)
    site = make_site(tmp_path / "site", count=12)
    other = cdn.publish("other-site", ["other.example.com"], "r1", [SourceFile("x", b"1")])
    assert other == PublishResult(file_count=1, bytes=1)

    result = cdn.publish(SITE, ["blog.example.com"], "r1", site)
    assert result == PublishResult(
        file_count=12, bytes=sum(len(d) for d in local_tree(site).values())
    )
    assert remote_tree(double) == local_tree(site)

    files = [SourceFile("index.html", b"<h1>v2</h1>"), SourceFile("a/b.css", b"b{}")]
    assert cdn.publish(SITE, ["blog.example.com"], "r2", files) == PublishResult(2, 14)
    assert remote_tree(double) == {"index.html": b"<h1>v2</h1>", "a/b.css": b"b{}"}
    assert remote_tree(double, "other-site") == {"x": b"1"}  # never touched
    writes = [r.path for r in double.requests if r.method in ("PUT", "DELETE")]
    # other's file; the site's 12; then 2 new files, 2 stale root files and the 5 stale
    # directories (css, js, blog, img, docs), each in one recursive DELETE
    assert len(writes) == 1 + 12 + 2 + 2 + 5
    assert all(path.startswith(f"/{ZONE}/{SITE}/") for path in writes[1:])


@pytest.mark.parametrize(
    "site_id, hostnames, release, files, match",
    [
        ("../up", ["a.example.com"], "r1", [SourceFile("x", b"")], "invalid site id"),
        (SITE, ["a.example.com"], "a/b", [SourceFile("x", b"")], "invalid release id"),
        (SITE, ["Not A Host"], "r1", [SourceFile("x", b"")], "invalid hostname"),
        (SITE, ["a.example.com"], "r1", [SourceFile("../x", b"")], "invalid file path"),
        (SITE, ["a.example.com"], "r1", [SourceFile("x", b""), SourceFile("x", b"")], "twice"),
    ],
)
def test_publish_refuses_bad_input_before_any_request(
    double, cdn, site_id, hostnames, release, files, match
):
    with pytest.raises(PublishError, match=match):
        cdn.publish(site_id, hostnames, release, files)
    assert double.requests == []


def test_bunny_cdn_checks_its_pool_and_hides_the_key(storage):
    with pytest.raises(ValueError, match="pool_size"):
        BunnyCDN(storage, workers=WORKERS + 1)
    assert KEY not in repr(BunnyCDN(storage, workers=2))


# -- the plan, as a property ----------------------------------------------------------------

names = st.sampled_from(["a", "b", "c d", "ü", "index.html"])
paths = st.lists(names, min_size=1, max_size=3).map("/".join)
checksums = st.sampled_from(["AA", "BB", "CC"])


def parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


def trees(min_size: int = 0, values=checksums) -> st.SearchStrategy[dict[str, str]]:
    """A file tree: no path is also a directory of another path."""
    return st.dictionaries(paths, values, min_size=min_size, max_size=12).filter(
        lambda tree: not any(d in tree for path in tree for d in parents(path))
    )


def apply(plan, local: dict[str, str], remote: dict[str, str]) -> dict[str, str]:
    """What storage holds after the plan ran: a model of Bunny's file semantics."""
    after = {
        path: checksum
        for path, checksum in remote.items()
        if path not in plan.delete_files
        and not any(path.startswith(d + "/") for d in plan.delete_dirs)
    }
    after.update({path: local[path] for path in plan.uploads})
    return after


@settings(max_examples=200, deadline=None)
@given(local=trees(), remote=trees(values=checksums | st.none()))  # None: Bunny sent none
def test_applying_the_plan_makes_the_remote_equal_the_local_tree(local, remote):
    plan = plan_sync(local, remote)

    assert apply(plan, local, remote) == local
    assert set(plan.uploads) | set(plan.unchanged) == set(local)
    assert not set(plan.uploads) & set(plan.unchanged)
    assert all(remote.get(p) == local[p] for p in plan.unchanged)  # nothing re-sent needlessly
    assert set(plan.stale) == set(remote) - set(local)
    assert all(d and not any(p.startswith(d + "/") for p in local) for d in plan.delete_dirs)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(local=trees(min_size=1), remote=trees())
def test_a_sync_makes_the_double_hold_the_local_tree(double, storage, local, remote):
    prefix = f"p-{uuid.uuid4().hex[:12]}"  # a fresh prefix per example
    content = {
        path: hashlib.sha256(path.encode() + c.encode()).digest() for path, c in local.items()
    }
    for path, checksum in remote.items():  # same bytes where the checksum letter agrees
        data = hashlib.sha256(path.encode() + checksum.encode()).digest()
        storage.put(f"{prefix}/{path}", data)

    sources = [SourceFile(path, data) for path, data in content.items()]
    result = sync_tree(storage, files_from_sources(sources), prefix, workers=4)

    assert remote_tree(double, prefix) == content
    assert result.uploaded + result.skipped == len(local)
    assert result.deleted == len(set(remote) - set(local))
