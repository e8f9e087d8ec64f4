"""A push starts from the site's spare checkout (its last one, linked again from the
cache) and touches only the files that changed, yet ends with exactly the tree a full
checkout writes: no stale file, no stale directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dulwich.repo import MemoryRepo
from git_kit import build_commit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_steps import SITE_ID, Env

from services.cdn.local import remove_tree
from services.git.checkout import Limits, link_spare, write_checkout
from services.git.pipeline import Pipeline
from services.git.steps import Checkout

LIMITS = Limits(max_files=1000, max_bytes=10_000_000)


def listing(root: Path) -> dict[str, bytes | None]:
    """Every directory (None) and file (its bytes) under ``root``, by relative path."""
    found: dict[str, bytes | None] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(top, name), root)] = None
        for name in files:
            path = os.path.join(top, name)
            found[os.path.relpath(path, root)] = Path(path).read_bytes()
    return found


def spare_of(tmp: Path, before: dict, after: dict):
    """Commits of ``before`` then ``after``; ``before`` checked out into ``tmp/old`` with
    a cache, and its spare linked: ``(store, after's sha, cache, spare)``."""
    store = MemoryRepo().object_store
    first, second = build_commit(store, before), build_commit(store, after)
    cache = tmp / "cache"
    old = write_checkout(store, first, LIMITS, tmp / "old", cache=cache)
    return store, second, cache, link_spare(old.files, cache, tmp / "spare")


names = st.sampled_from(["a", "b", "c", "index.html"])
trees = st.recursive(
    st.sampled_from([b"one", b"two", b"three"]),
    lambda children: st.dictionaries(names, children, max_size=4),
    max_leaves=12,
).filter(lambda spec: isinstance(spec, dict))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=trees, after=trees)
def test_a_checkout_from_a_spare_is_exactly_a_full_checkout(tmp_path_factory, before, after):
    tmp = tmp_path_factory.mktemp("spare")
    store, second, cache, spare = spare_of(tmp, before, after)
    assert listing(spare.path) == listing(tmp / "old")

    updated = write_checkout(store, second, LIMITS, tmp / "new", cache=cache, spare=spare)
    full = write_checkout(store, second, LIMITS, tmp / "full")

    assert listing(tmp / "new") == listing(tmp / "full")
    assert not spare.path.exists()  # used up: renamed into place
    assert (updated.file_count, updated.bytes) == (full.file_count, full.bytes)
    # Only what the spare did not hold already was linked or written.
    changed = {p for p, sha in updated.files if spare.files.get(p) != sha}
    assert {p for p, _ in updated.written} <= changed


def test_a_spare_that_does_not_match_falls_back_to_a_full_checkout(tmp_path):
    store = MemoryRepo().object_store
    first = build_commit(store, {"old": {"x.html": "x"}, "index.html": "1"})
    second = build_commit(store, {"index.html": "2"})
    cache = tmp_path / "cache"
    old = write_checkout(store, first, LIMITS, tmp_path / "old", cache=cache)
    spare = link_spare(old.files, cache, tmp_path / "spare")
    (spare.path / "old" / "stray").write_text("not in the manifest")  # rmdir will fail

    write_checkout(store, second, LIMITS, tmp_path / "new", cache=cache, spare=spare)

    assert listing(tmp_path / "new") == {"index.html": b"2"}


@pytest.fixture
def cached_env(tmp_path):
    env = Env(tmp_path, limits=LIMITS)
    env.checkout = Checkout(LIMITS, cache_root=tmp_path / "checkouts")
    env.steps[0] = env.checkout
    env.pipeline = Pipeline(env.steps, env.api, env.metrics, env.work_root)
    return env


def test_a_one_file_change_links_one_file(cached_env, monkeypatch):
    env = cached_env
    site = {f"d{n}": {f"p{i}.html": f"{n}-{i}" for i in range(50)} for n in range(4)}
    assert env.deploy({"index.html": "v1", **site})[0] == "live"
    assert (env.tmp_path / "checkouts" / f"{SITE_ID}.spare").is_dir()

    links = []
    real_link, real_run = os.link, env.checkout.run

    def counting_run(job):
        monkeypatch.setattr(os, "link", lambda *a, **k: (links.append(a), real_link(*a, **k)))
        try:
            real_run(job)
        finally:
            monkeypatch.setattr(os, "link", real_link)

    monkeypatch.setattr(env.checkout, "run", counting_run)
    outcome, job = env.deploy({"index.html": "v2", **site})

    assert outcome == "live" and env.live() == "v2"
    assert len(links) <= 2  # the new file into the checkout, and into the cache
    release = env.cdn.release_path(SITE_ID, job.release)
    assert len(listing(release)) == 1 + 4 + 200
    assert (job.file_count, env.live("d3/p49.html")) == (201, "3-49")


def test_a_restart_forgets_spares(tmp_path):
    root = tmp_path / "checkouts"
    (root / "abc.spare" / "x").mkdir(parents=True)
    (root / "abc").mkdir()
    Checkout(LIMITS, cache_root=root)
    assert sorted(p.name for p in root.iterdir()) == ["abc"]
    remove_tree(root)
