"""Object sizes from headers (``packs.ObjectSizes``) and the quota the plan enforces with them.

Real packs made by the git CLI: whole objects, deltas against an offset (OFS) or a sha
(REF), and loose objects; every size must equal ``git cat-file -s``.
"""

from __future__ import annotations

import os
import random
import subprocess

import pytest
from dulwich.repo import Repo
from push_kit import commit, make_git, new_work

from services.git import packs
from services.git.checkout import DeployRejected, Limits, plan_checkout
from services.git.packs import ObjectSizes


@pytest.fixture
def git(tmp_path):
    return make_git(tmp_path)


@pytest.fixture(autouse=True)
def _fresh_size_cache():
    packs._SIZES.clear()  # each test reads the headers, not what an earlier one read
    yield
    packs._SIZES.clear()


def _text(seed: int, size: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("abcdefgh \n") for _ in range(size))


def _blobs(git, work, rev="HEAD") -> dict[bytes, int]:
    listing = git("ls-tree", "-r", "-l", rev, cwd=work).stdout.splitlines()
    out = {}
    for line in listing:
        meta, _path = line.split("\t", 1)
        _mode, _kind, sha, size = meta.split()
        out[sha.encode()] = int(size)
    return out


def _kinds(work) -> set[str]:
    packs_dir = work / ".git" / "objects" / "pack"
    kinds = set()
    for idx in packs_dir.glob("*.idx"):
        out = subprocess.run(
            ["git", "verify-pack", "-v", str(idx)], capture_output=True, text=True, check=True
        ).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 7 and parts[1] == "blob":
                kinds.add("delta")
            elif len(parts) >= 5 and parts[1] == "blob":
                kinds.add("whole")
    return kinds


@pytest.mark.parametrize("ofs", [True, False], ids=["ofs-delta", "ref-delta"])
def test_packed_sizes_whole_and_deltified_match_git(git, tmp_path, ofs):
    work = new_work(git, tmp_path / "w")
    base = _text(1, 200_000)
    for n in range(4):  # near-identical versions: git stores most of them as deltas
        commit(git, work, {"page.html": base + f"\nversion {n}\n", f"other-{n}.txt": _text(n, 50)})
    config = [] if ofs else ["-c", "repack.useDeltaBaseOffset=false"]
    git(*config, "repack", "-a", "-d", "-f", "-q", "--depth=10", "--window=10", cwd=work)
    assert _kinds(work) == {"whole", "delta"}
    expected = {}
    for rev in ("HEAD", "HEAD~1", "HEAD~2", "HEAD~3"):
        expected.update(_blobs(git, work, rev))

    store = Repo(str(work)).object_store
    with ObjectSizes(store) as sizes:
        assert {sha: sizes.size(sha) for sha in expected} == expected
        assert sizes.size(b"0" * 40) is None


def test_loose_sizes_match_git(git, tmp_path):
    work = new_work(git, tmp_path / "w")
    commit(git, work, {"a.bin": os.urandom(70_000), "b.txt": "tiny", "e": ""})
    assert not list((work / ".git" / "objects" / "pack").glob("*.pack"))
    expected = _blobs(git, work)

    with ObjectSizes(Repo(str(work)).object_store) as sizes:
        assert {sha: sizes.size(sha) for sha in expected} == expected


def test_the_plan_refuses_a_tree_over_the_byte_quota_without_reading_a_blob(
    git, tmp_path, monkeypatch
):
    work = new_work(git, tmp_path / "w")
    sha = commit(git, work, {f"f{i}.bin": os.urandom(40_000) for i in range(5)})
    git("gc", "-q", cwd=work)
    store = Repo(str(work)).object_store

    def no_inflating(*args, **kwargs):
        raise AssertionError("a blob was inflated")

    monkeypatch.setattr(packs, "stream_blob", no_inflating)
    monkeypatch.setattr(type(store), "__getitem__", _trees_only(type(store).__getitem__))
    with pytest.raises(DeployRejected) as info:
        plan_checkout(store, sha.encode(), Limits(max_files=10, max_bytes=150_000))
    assert "the files add up to more than 146.5 KiB, this site's limit" in info.value.message
    plan = plan_checkout(store, sha.encode(), Limits(max_files=10, max_bytes=250_000))
    assert plan.planned_bytes == 200_000 and sorted(plan.sizes) == [40_000] * 5


def _trees_only(getitem):
    def get(self, sha):
        obj = getitem(self, sha)
        assert obj.type_name != b"blob", "a blob was loaded whole"
        return obj

    return get


def test_a_blob_reader_streams_each_blob_as_stream_blob_does_from_one_open_file(
    git, tmp_path, monkeypatch
):
    work = new_work(git, tmp_path / "w")
    files = {f"f{i}.bin": os.urandom(3_000 + 97 * i) for i in range(30)}
    files["big.bin"] = os.urandom(3 * 2**20)  # several steps of 1 MiB
    commit(git, work, files)
    git("gc", "-q", cwd=work)
    store = Repo(str(work)).object_store
    shas = list(_blobs(git, work))
    expected = {sha: b"".join(packs.stream_blob(store, sha)[1]) for sha in shas}
    opened = []
    real_open = open
    monkeypatch.setattr(
        packs, "open", lambda *a, **k: (opened.append(a[0]), real_open(*a, **k))[1], raising=False
    )

    with packs.BlobReader(store) as reader:
        got = {}
        for sha in shas:
            size, chunks = reader.stream(sha)
            got[sha] = b"".join(chunks)
            assert size == len(got[sha])
        assert reader.stream(b"0" * 40) is None
    assert got == expected
    assert len(opened) == 1  # one pack, opened once for all of them
