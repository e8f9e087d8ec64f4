"""The check of a pushed tree remembers directories it checked (by tree sha, per object
store): a later push walks only what changed, and a remembered directory is still held
to every limit where it now sits."""

from __future__ import annotations

import pytest
from dulwich.repo import MemoryRepo
from git_kit import Submodule, build_commit
from hypothesis import given, settings
from hypothesis import strategies as st
from test_spare_checkout import trees

from services.git import checkout
from services.git.checkout import DeployRejected, Limits, plan_checkout

LIMITS = Limits(max_files=1000, max_bytes=10_000_000, max_depth=4)
SECTION = {f"p{i}.html": f"page {i}" for i in range(20)}


def section(name: str) -> dict:
    return {path: f"{name}: {text}" for path, text in SECTION.items()}


@pytest.fixture(autouse=True)
def fresh_memo():
    checkout._SUBTREES.clear()
    yield
    checkout._SUBTREES.clear()


@pytest.fixture
def loads(monkeypatch):
    """The trees each check loads from the store, by sha."""
    seen: list[bytes] = []
    real = checkout._load

    def counting(store, sha, kind, what):
        if kind is checkout.Tree:
            seen.append(sha)
        return real(store, sha, kind, what)

    monkeypatch.setattr(checkout, "_load", counting)
    return seen


def plain(plan):
    return sorted(zip(plan.files, plan.sizes, strict=True)), plan.planned_bytes, sorted(plan.notes)


def test_a_one_file_change_loads_only_the_changed_directories(loads):
    store = MemoryRepo().object_store
    site = {"index.html": "v1", "blog": {"2024": section("a"), "2025": section("b")}}
    site["docs"] = section("c")
    first = build_commit(store, site)
    second = build_commit(store, {**site, "index.html": "v2"})
    third = build_commit(store, {**site, "blog": {**site["blog"], "2025": {"new.html": "n"}}})

    plan_checkout(store, first, LIMITS, whole_tree=True)
    assert len(loads) == 5  # root, blog, blog/2024, blog/2025, docs
    loads.clear()
    again = plan_checkout(store, second, LIMITS, whole_tree=True)
    assert len(loads) == 1  # the root only
    loads.clear()
    moved = plan_checkout(store, third, LIMITS, whole_tree=True)
    assert len(loads) == 3  # root, blog, blog/2025
    assert len(again.files) == 61 and len(moved.files) == 42
    assert "blog/2025/new.html" in dict(moved.files)
    assert "blog/2025/p0.html" not in dict(moved.files)


def test_a_remembered_directory_moved_deeper_is_refused_for_its_depth():
    store = MemoryRepo().object_store
    nested = {"a": {"b": {"c.html": "x"}}}  # two levels of directories
    plan_checkout(store, build_commit(store, {"n": nested}), LIMITS)  # remembered: fits
    deep = build_commit(store, {"x": {"y": {"n": nested}}})

    with pytest.raises(DeployRejected, match="nested more than 4 deep"):
        plan_checkout(store, deep, LIMITS)


def test_a_remembered_directory_still_counts_toward_the_totals():
    store = MemoryRepo().object_store
    limits = Limits(max_files=30, max_bytes=10_000_000)
    plan_checkout(store, build_commit(store, {"s": SECTION}), limits)

    with pytest.raises(DeployRejected, match="more than 30 files"):
        plan_checkout(store, build_commit(store, {"s": SECTION, "t": SECTION}), limits)
    tight = Limits(max_files=1000, max_bytes=100)
    with pytest.raises(DeployRejected, match="add up to more than"):
        plan_checkout(store, build_commit(store, {"s": SECTION}), tight)
    small_files = Limits(max_files=1000, max_bytes=10_000_000, max_file_bytes=5)
    with pytest.raises(DeployRejected, match="limit per file"):
        plan_checkout(store, build_commit(store, {"s": SECTION}), small_files)


def test_a_path_that_grows_too_long_under_a_remembered_directory_is_refused():
    store = MemoryRepo().object_store
    inner = {"d" * 200: {"f" * 200: "x"}}
    plan_checkout(store, build_commit(store, {"i": inner}), LIMITS)
    long = {"p" * 250: {"q" * 250: {"r" * 250: {"i": inner}}}}
    limits = Limits(max_files=1000, max_bytes=10_000_000, max_depth=32)
    for n in range(14):  # 241 bytes of prefix per level, 4,000 in all
        long = {f"{n}" + "z" * 240: long}

    with pytest.raises(DeployRejected, match="path too long"):
        plan_checkout(store, build_commit(store, long), limits)


def test_one_store_never_takes_another_stores_directories():
    ours, theirs = MemoryRepo().object_store, MemoryRepo().object_store
    plan_checkout(theirs, build_commit(theirs, {"s": SECTION}), LIMITS)
    # Our store holds the root tree naming "s", but not "s" itself nor its files.
    from dulwich.objects import Commit, Tree

    tree = Tree()
    tree.add(b"s", 0o040000, theirs[theirs[build_commit(theirs, {"s": SECTION})].tree][b"s"][1])
    ours.add_object(tree)
    commit = Commit()
    commit.tree, commit.author = tree.id, b"T <t@example.com>"
    commit.committer, commit.message = commit.author, b"c"
    commit.author_time = commit.commit_time = 1_700_000_000
    commit.author_timezone = commit.commit_timezone = 0
    ours.add_object(commit)

    with pytest.raises(DeployRejected, match="missing from the pushed objects"):
        plan_checkout(ours, commit.id, LIMITS)


def test_submodules_in_a_remembered_directory_are_still_noted():
    store = MemoryRepo().object_store
    spec = {"vendor": {"lib": Submodule(b"1" * 40), "a.js": "a"}}
    first = plan_checkout(store, build_commit(store, spec), LIMITS)
    second = plan_checkout(store, build_commit(store, {**spec, "index.html": "i"}), LIMITS)
    assert (
        first.notes
        == second.notes
        == ["skipped submodule 'vendor/lib': its files are not in this repository"]
    )


@settings(max_examples=80, deadline=None)
@given(commits=st.lists(trees, min_size=1, max_size=4))
def test_remembering_never_changes_a_plan(commits):
    store = MemoryRepo().object_store
    shas = [build_commit(store, spec) for spec in commits]
    remembered = [plain(plan_checkout(store, sha, LIMITS, whole_tree=True)) for sha in shas]
    for sha, plan in zip(shas, remembered, strict=True):
        checkout._SUBTREES.clear()
        assert plain(plan_checkout(store, sha, LIMITS, whole_tree=True)) == plan


def test_remembered_directories_hold_names_not_paths():
    # A deep tree of long names: were each summary to keep its files' paths, the memo
    # would hold every path once per level above it (quadratic in the depth).
    store = MemoryRepo().object_store
    spec: dict = {f"f{i}.html": "x" for i in range(50)}
    for level in range(30):
        spec = {f"{level:02d}" + "d" * 120: spec}
    limits = Limits(max_files=1000, max_bytes=10_000_000, max_depth=32)
    plan = plan_checkout(store, build_commit(store, spec), limits)

    held = sum(
        len(entry[1]) for summary in checkout._SUBTREES.values() for entry in summary.entries
    )
    # The 29 directory names under the outermost one, and the 50 file names.
    names = 29 * 122 + sum(len(f"f{i}.html") for i in range(50))
    assert len(checkout._SUBTREES) == 30  # every directory below the top
    assert held == names  # each name once, whatever its depth
    assert len(plan.files) == 50 and len(plan.files[0][0]) > 30 * 122
