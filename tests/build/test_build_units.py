"""Unit tests of the pieces that do not need bubblewrap."""

import os
from pathlib import Path

import pytest
from build_kit import write_tree

from services.build.bwrap import Sandbox, build_argv, check_paths, environment_for
from services.build.limits import BuildLimits
from services.build.lines import LineSplitter
from services.build.workspace import PublishProblem, check_publish, prepare, tree_usage


def test_lines_split_across_chunks_and_decode_utf8():
    split = LineSplitter(max_chars=100)
    assert split.feed(b"hel") == []
    assert split.feed(b"lo\r\nw\xc3") == ["hello"]
    assert split.feed(b"\xa9rld\nbad \xff\n") == ["wérld", "bad \ufffd"]
    assert split.feed(b"tail") == []
    assert split.close() == ["tail"]
    assert split.close() == []


def test_lines_longer_than_the_cap_are_split_even_without_newline():
    split = LineSplitter(max_chars=4)
    assert split.feed(b"abcdefghij") == ["abcd", "efgh"]
    assert split.feed(b"\n") == ["ij"]
    assert split.feed(b"0123456789\n") == ["0123", "4567", "89"]


def test_prepare_copies_links_as_links_and_refuses_existing(tmp_path):
    source = write_tree(tmp_path / "src", {"a/b.txt": "x"})
    (source / "link").symlink_to("/etc/passwd")
    work = tmp_path / "work"
    prepare(source, work, uid=None)
    assert (work / "a/b.txt").read_text() == "x"
    assert os.readlink(work / "link") == "/etc/passwd"
    with pytest.raises(FileExistsError):
        prepare(source, work, uid=None)


def test_prepare_hands_the_copy_to_the_build_uid(tmp_path):
    source = write_tree(tmp_path / "src", {"a/b.txt": "x"})
    prepare(source, tmp_path / "work", uid=200_123)
    owners = {p.lstat().st_uid for p in [tmp_path / "work", *(tmp_path / "work").rglob("*")]}
    assert owners == {200_123}


def test_tree_usage_counts_without_following_links(tmp_path):
    write_tree(tmp_path, {"a": "12345", "d/b": "123"})
    (tmp_path / "l").symlink_to("/usr")
    size, entries = tree_usage(tmp_path, 1000)
    assert entries == 4 and size >= 8


def test_check_publish_limits(tmp_path):
    write_tree(tmp_path, {"out/a.html": "x" * 10, "out/b/c.html": "y"})
    assert check_publish(tmp_path, "out", 100, 10) == tmp_path / "out"
    with pytest.raises(PublishProblem) as info:
        check_publish(tmp_path, "out", 5, 10)
    assert info.value.reason == "output_too_large"
    with pytest.raises(PublishProblem, match="more than 1 files"):
        check_publish(tmp_path, "out", 100, 1)
    with pytest.raises(PublishProblem, match="did not create the directory 'nope'"):
        check_publish(tmp_path, "nope", 100, 10)


def test_argv_shape():
    sandbox = Sandbox(toolchains=(Path("/opt/venv"),))
    argv = build_argv(
        "hugo --minify",
        Path("/srv/work/1"),
        sandbox=sandbox,
        uid=200_001,
        environment={"PATH": "/usr/bin", "A": "b c"},
        rlimits=BuildLimits().rlimits(),
        fds={"status": 5, "passwd": 6, "group": 7},
    )
    assert argv[:1] == ["prlimit"] and "--nproc=256" in argv and "--core=0" in argv
    # As root, bwrap mounts first and setpriv drops to the slot uid inside the sandbox.
    i = argv.index("setpriv")
    assert argv.index("bwrap") < i and argv[i - 1] == "--"
    expected = ["setpriv", "--reuid=200001", "--regid=200001", "--clear-groups"]
    assert argv[i : i + 4] == expected
    for flag in ("--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"):
        assert flag in argv[i:]
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert "--clearenv" in argv and "--unshare-user" not in argv
    assert argv[-4:] == ["--", "/bin/sh", "-c", "hugo --minify"]
    assert ["--setenv", "A", "b c"] == argv[argv.index("A") - 1 : argv.index("A") + 2]
    assert ["--ro-bind", "/opt/venv", "/opt/venv"] == argv[argv.index("/opt/venv") - 1 :][:3]
    assert ["--bind", "/srv/work/1", "/build"] == argv[argv.index("/srv/work/1") - 1 :][:3]
    assert "/etc" not in argv and "--share-net" not in argv


def test_argv_without_root_has_no_setpriv():
    argv = build_argv(
        "true",
        Path("/w"),
        sandbox=Sandbox(),
        uid=None,
        environment={},
        rlimits={},
        fds={"status": 5, "passwd": 6, "group": 7},
    )
    assert "setpriv" not in argv and "--unshare-all" in argv and "--cap-add" not in argv


def test_environment_is_fixed_plus_user(tmp_path):
    (tmp_path / "bin").mkdir()
    env = environment_for(Sandbox(toolchains=(tmp_path,)), {"NODE_ENV": "production"})
    assert env["PATH"] == f"{tmp_path}/bin:/usr/local/bin:/usr/bin:/bin"
    assert env["HOME"] == "/build-home" and env["CI"] == "true" and env["NODE_ENV"] == "production"
    assert not any(name.startswith("ECSTATIC_") for name in env)


def test_check_paths(tmp_path):
    home = tmp_path / "home"
    (home / "venv").mkdir(parents=True)

    def check(toolchain):
        return check_paths(tmp_path / "w", Sandbox(toolchains=(toolchain,), hidden=(home,)), None)

    assert "overlaps" in check(home / "venv")  # inside the hidden path
    assert "overlaps" in check(tmp_path)  # above it
    assert check(tmp_path / "other") is None
    # As root the slot uid needs the toolchain itself (not its parents) and its workdir.
    (tmp_path / "w").mkdir()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    message = check_paths(tmp_path / "w", Sandbox(toolchains=(private,)), 200_000)
    assert message is not None and "not readable by the build uid 200000" in message
    message = check_paths(tmp_path / "w", Sandbox(), 200_000)
    assert message is not None and "does not belong to the build uid 200000" in message


def test_build_is_a_leaf_library():
    import ast
    import sys

    import services.build as package

    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            # The Kubernetes backend alone talks to the API, through the official client.
            allowed = {"kubernetes", "urllib3"} if path.name == "kube_run.py" else set()
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names | allowed or name.startswith(
                    "services.build"
                ), f"{path.name} imports {name}"
        assert len(path.read_text().splitlines()) < 300, path.name
