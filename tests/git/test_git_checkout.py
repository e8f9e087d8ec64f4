import pytest
from dulwich.objects import Blob, Tag
from git_kit import EXEC, Link, Raw, Submodule, build_commit, build_tree

from services.git.checkout import (
    DeployRejected,
    Limits,
    format_bytes,
    iter_files,
    plan_checkout,
)

LIMITS = Limits(max_files=100, max_bytes=1_000_000)


def publish(store, sha, limits=LIMITS) -> dict[str, bytes]:
    plan = plan_checkout(store, sha, limits)
    return {f.path: f.data for f in iter_files(store, plan, limits)}


def rejected(store, spec, limits=LIMITS) -> str:
    sha = build_commit(store, spec)
    with pytest.raises(DeployRejected) as info:
        publish(store, sha, limits)
    return info.value.message


def test_plain_tree_is_published_with_nested_paths(store):
    sha = build_commit(
        store, {"index.html": "home", "css": {"site.css": "a{}"}, "a": {"b": {"c.txt": "deep"}}}
    )
    assert publish(store, sha) == {
        "index.html": b"home",
        "css/site.css": b"a{}",
        "a/b/c.txt": b"deep",
    }


def test_plan_knows_the_commit(store):
    sha = build_commit(store, {"index.html": "x"})
    plan = plan_checkout(store, sha, LIMITS)
    assert plan.commit == sha.decode() and plan.publish_dir == "" and plan.notes == []


def test_executable_files_are_published_as_files(store):
    blob = Blob.from_string(b"#!/bin/sh\n")
    store.add_object(blob)
    sha = build_commit(store, {"run.sh": Raw(EXEC, blob.id)})
    assert publish(store, sha) == {"run.sh": b"#!/bin/sh\n"}


@pytest.mark.parametrize("where", [["link"], ["dir", "link"]])
def test_symlinks_are_rejected(store, where):
    spec: dict = {"index.html": "x"}
    node = spec
    for part in where[:-1]:
        node = node.setdefault(part, {})
    node[where[-1]] = Link("/etc/passwd")
    message = rejected(store, spec)
    assert "symlink" in message and "/".join(where) in message


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (b"..", "invalid file name"),
        (b".", "invalid file name"),
        (b"", "invalid file name"),
        (b"a/b", "contains '/'"),
        (b".git", ".git entry"),
        (b".GIT", ".git entry"),
        (b".Git", ".git entry"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"n" * 256, "too long"),
    ],
)
def test_unsafe_names_are_rejected(store, name, reason):
    # NUL cannot occur: it ends a name in the tree format itself.
    message = rejected(store, {"index.html": "x", "sub": {name: "evil"}})
    assert reason in message and "sub/" in message


def test_unsafe_directory_names_are_rejected(store):
    assert ".git" in rejected(store, {"index.html": "x", ".git": {"config": "[core]"}})
    assert rejected(store, {"..": {"escape.html": "x"}})


def test_submodules_are_skipped_with_a_note(store):
    sha = build_commit(store, {"index.html": "x", "vendor": {"lib": Submodule()}})
    plan = plan_checkout(store, sha, LIMITS)
    assert [path for path, _ in plan.files] == ["index.html"]
    assert any("submodule" in note and "vendor/lib" in note for note in plan.notes)


def test_unsupported_modes_are_rejected(store):
    blob = Blob.from_string(b"x")
    store.add_object(blob)
    assert "mode" in rejected(store, {"odd": Raw(0o010644, blob.id)})


def test_file_count_limit(store):
    limits = Limits(max_files=3, max_bytes=1000)
    ok = build_commit(store, {"a": "1", "b": "2", "d": {"c": "3"}})
    assert len(publish(store, ok, limits)) == 3
    assert "more than 3 files" in rejected(
        store, {"a": "1", "b": "2", "d": {"c": "3", "e": "4"}}, limits
    )


def test_directory_count_limit(store):
    limits = Limits(max_files=2, max_bytes=1000)
    assert "directories" in rejected(store, {"a": {"b": {"c": {"f": "x"}}}}, limits)


def test_byte_limit_is_enforced_while_streaming(store):
    limits = Limits(max_files=10, max_bytes=10)
    exact = build_commit(store, {"a": "12345", "b": "67890"})
    assert publish(store, exact, limits) == {"a": b"12345", "b": b"67890"}
    assert "10 B" in rejected(store, {"a": "12345", "b": "678901"}, limits)


def test_a_single_oversized_blob_is_rejected(store):
    limits = Limits(max_files=10, max_bytes=1024)
    assert "1.0 KiB" in rejected(store, {"big.bin": b"x" * 1025}, limits)


def test_missing_objects_are_rejected(store):
    dangling = b"2" * 40
    assert "missing" in rejected(store, {"gone.html": Raw(0o100644, dangling)})
    assert "missing" in rejected(store, {"gone": Raw(0o040000, dangling)})
    with pytest.raises(DeployRejected, match="missing"):
        plan_checkout(store, b"3" * 40, LIMITS)


def test_wrong_object_types_are_rejected(store):
    blob = Blob.from_string(b"not a tree")
    store.add_object(blob)
    assert "not a tree" in rejected(store, {"dir": Raw(0o040000, blob.id)})
    with pytest.raises(DeployRejected, match="not a commit"):
        plan_checkout(store, blob.id, LIMITS)


def test_annotated_tags_are_peeled(store):
    commit = build_commit(store, {"index.html": "tagged"})
    tag = Tag()
    tag.name = b"v1"
    tag.object = (type(store[commit]), commit)
    tag.tagger = b"Test <t@example.com>"
    tag.tag_time = 1_700_000_000
    tag.tag_timezone = 0
    tag.message = b"v1"
    store.add_object(tag)
    assert publish(store, tag.id) == {"index.html": b"tagged"}


# -- ecstatic.toml ---------------------------------------------------------------------


@pytest.mark.parametrize("publish_dir", ["public", "public/", "./public", "/public/".lstrip("/")])
def test_publish_dir_is_the_site_root(store, publish_dir):
    sha = build_commit(
        store,
        {
            "ecstatic.toml": f'publish = "{publish_dir}"\n',
            "src": {"draft.md": "no", "link": Link("/etc/passwd")},  # outside: never looked at
            "public": {"index.html": "pub", "img": {"a.png": "png"}},
        },
    )
    plan = plan_checkout(store, sha, LIMITS)
    assert plan.publish_dir == "public"
    assert publish(store, sha) == {"index.html": b"pub", "img/a.png": b"png"}


def test_nested_publish_dir(store):
    sha = build_commit(
        store, {"ecstatic.toml": 'publish = "site/out"', "site": {"out": {"i.html": "x"}}}
    )
    assert publish(store, sha) == {"i.html": b"x"}


def test_root_config_file_is_not_published(store):
    sha = build_commit(store, {"ecstatic.toml": 'publish = "."', "index.html": "x"})
    assert publish(store, sha) == {"index.html": b"x"}


def test_config_without_publish_publishes_the_root(store):
    sha = build_commit(store, {"ecstatic.toml": "[build]\n", "index.html": "x"})
    plan = plan_checkout(store, sha, LIMITS)
    assert plan.publish_dir == ""
    assert publish(store, sha) == {"index.html": b"x"}


def test_unknown_keys_are_refused_not_noted(store):
    # ecstatic.toml is parsed by services.build.parse_config: a typo is a clear refusal.
    assert "unknown key 'foo'" in rejected(store, {"ecstatic.toml": "foo = 1\n", "i.html": "x"})
    assert "build must be a table, not a string" in rejected(
        store, {"ecstatic.toml": 'build = "make"\n', "i.html": "x"}
    )
    assert "unknown key 'build.cmd'" in rejected(
        store, {"ecstatic.toml": '[build]\ncmd = "make"\n', "i.html": "x"}
    )


@pytest.mark.parametrize(
    "value",
    ["../outside", "/etc", "a/../../b", "a/..", "..", ".git", "public\\\\..\\\\x"],
)
def test_escaping_publish_dirs_are_rejected(store, value):
    message = rejected(
        store, {"ecstatic.toml": f'publish = "{value}"', "a": {"x": "y"}, "public": {"i": "x"}}
    )
    assert "ecstatic.toml" in message and "inside the repository" in message


def test_publish_dir_must_exist_and_be_a_directory(store):
    assert "does not exist" in rejected(store, {"ecstatic.toml": 'publish = "dist"', "i.html": "x"})
    assert "not a directory" in rejected(
        store, {"ecstatic.toml": 'publish = "i.html"', "i.html": "x"}
    )
    assert "not a directory" in rejected(
        store, {"ecstatic.toml": 'publish = "out"', "out": Link("/"), "i.html": "x"}
    )
    assert "not a directory" in rejected(
        store, {"ecstatic.toml": 'publish = "out"', "out": Submodule(), "i.html": "x"}
    )


def test_bad_config_files_are_rejected(store):
    assert "not valid TOML" in rejected(store, {"ecstatic.toml": "publish = ", "i.html": "x"})
    assert "is not UTF-8" in rejected(store, {"ecstatic.toml": b"\xff\xfe", "i.html": "x"})
    assert "must be a string" in rejected(store, {"ecstatic.toml": "publish = 3", "i.html": "x"})
    assert "regular file" in rejected(store, {"ecstatic.toml": Link("/etc/passwd"), "i.html": "x"})
    assert "regular file" in rejected(store, {"ecstatic.toml": {"x": "y"}, "i.html": "x"})
    assert "larger than" in rejected(store, {"ecstatic.toml": "#" * 70_000, "i.html": "x"})


def test_tree_entries_named_by_bytes_are_checked_under_the_publish_dir(store):
    tree = build_tree(store, {"ok.html": "x"})
    sha = build_commit(store, {"ecstatic.toml": 'publish = "p"', "p": Raw(0o040000, tree)})
    assert publish(store, sha) == {"ok.html": b"x"}


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (512, "512 B"), (1536, "1.5 KiB"), (3 * 2**20, "3.0 MiB"), (5 * 2**30, "5.0 GiB")],
)
def test_format_bytes(count, text):
    assert format_bytes(count) == text
