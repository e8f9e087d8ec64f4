"""Push limits end to end: the real git client against the real api and git rooms."""

import os
import threading

import pytest
from push_kit import (
    ThreadedRoom,
    bomb_body,
    commit,
    make_git,
    new_work,
    pack_of,
    post_pack,
)

pytestmark = pytest.mark.integration

MiB = 1 << 20


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    room = ThreadedRoom(
        tmp_path_factory.mktemp("intake"),
        max_deploy_files=1000,
        max_deploy_bytes=3 * MiB,
        max_file_bytes=MiB,
        max_tree_depth=32,
        git_max_push_bytes=8 * MiB,
        git_min_rate=1000,
        git_body_grace_seconds=5,
    )
    yield room
    room.stop()


@pytest.fixture
def git(tmp_path):
    return make_git(tmp_path)


def repo_dir(room, site_id):
    return room.repo_dir(site_id)


def leftovers(room, site_id):
    return sorted(p.name for p in (repo_dir(room, site_id) / "objects").glob("tmp_pack_*"))


def remote_main(git, url):
    out = git("ls-remote", url, "refs/heads/main").stdout.split()
    return out[0] if out else None


def test_file_over_the_per_file_limit_is_refused_before_inflating(room, git, tmp_path):
    site_id, token = room.new_site("big")
    url = room.url(site_id, token)
    work = new_work(git, tmp_path / "w")
    good = commit(git, work, {"index.html": "ok"})
    git("push", "-q", url, "main", cwd=work)
    commit(git, work, {"big.bin": os.urandom(2 * MiB)})

    result = git("push", url, "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "remote: error: push refused: a file of 2.0 MiB is larger than the 1.0 MiB limit" in (
        result.stderr
    )
    assert remote_main(git, url) == good
    assert (room.live("big.localhost") / "index.html").read_text() == "ok"
    assert leftovers(room, site_id) == []


def test_push_over_the_push_limit_is_refused_with_a_message(room, git, tmp_path):
    site_id, token = room.new_site("huge")
    url = room.url(site_id, token)
    work = new_work(git, tmp_path / "w")
    files = {f"f{i}.bin": os.urandom(MiB - 4096) for i in range(10)}  # 10 MB > 8 MiB
    commit(git, work, files)

    result = git("push", url, "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "push refused: the push is larger than 8.0 MiB, the limit" in result.stderr
    assert remote_main(git, url) is None
    assert not room.live("huge.localhost").exists()


def test_gzip_bomb_is_refused_from_its_header(room):
    site_id, token = room.new_site("bomb")
    response = post_pack(room.port, site_id, token, bomb_body(256 * MiB), True)

    assert response.status_code == 200  # the answer is in the git protocol
    assert b"push refused: a file of 256.0 MiB is larger than the 1.0 MiB limit" in (
        response.content
    )
    assert b"unpack push refused" in response.content
    objects = repo_dir(room, site_id) / "objects"
    assert list((objects / "pack").iterdir()) == []
    assert leftovers(room, site_id) == []


def test_site_over_its_byte_quota_is_refused_before_the_branch_moves(room, git, tmp_path):
    site_id, token = room.new_site("quota")
    url = room.url(site_id, token)
    work = new_work(git, tmp_path / "w")
    commit(git, work, {"index.html": "v1"})
    git("push", "-q", url, "main", cwd=work)
    # 4 files of ~1 MiB (each under the per-file limit): over the 3 MiB quota together.
    commit(git, work, {f"f{i}.bin": os.urandom(MiB - 4096) for i in range(4)})

    result = git("push", url, "main", cwd=work, check=False)

    # Refused by the update hook, from the objects' headers: the ref never moved.
    assert result.returncode != 0
    assert (
        "remote: error: deploy rejected: the files add up to more than 3.0 MiB, this site's"
        " limit (max_deploy_bytes)" in result.stderr
    )
    assert remote_main(git, url) == git("rev-parse", "HEAD~1", cwd=work).stdout.strip()
    [deploy] = room.deploys(token, site_id)  # only the first push's
    assert deploy["state"] == "live"
    assert (room.live("quota.localhost") / "index.html").read_text() == "v1"


def test_site_over_its_file_quota_is_refused_before_the_branch_moves(room, git, tmp_path):
    site_id, token = room.new_site("many")
    url = room.url(site_id, token)
    work = new_work(git, tmp_path / "w")
    commit(git, work, {f"p/{i}.html": str(i) for i in range(1001)})

    result = git("push", url, "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "remote: error: deploy rejected: more than 1000 files, the limit" in result.stderr
    assert remote_main(git, url) is None
    assert room.deploys(token, site_id) == []


def test_tree_deeper_than_the_limit_is_refused_and_the_branch_stays(room, git, tmp_path):
    site_id, token = room.new_site("deep")
    url = room.url(site_id, token)
    work = new_work(git, tmp_path / "w")
    commit(git, work, {"/".join(["d"] * 40) + "/index.html": "deep"})

    result = git("push", url, "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "remote: error: deploy rejected: directories nested more than 32 deep" in result.stderr
    assert remote_main(git, url) is None


def test_config_nested_five_thousand_deep_is_a_clear_rejection(room, git, tmp_path):
    site_id, token = room.new_site("toml")
    url = room.url(site_id, token)
    work = new_work(git, tmp_path / "w")
    commit(git, work, {"ecstatic.toml": "x = " + "[" * 5000 + "]" * 5000, "index.html": "x"})

    result = git("push", url, "main", cwd=work, check=False)

    assert result.returncode != 0
    assert (
        "remote: error: deploy rejected: ecstatic.toml nests arrays or tables 5000 deep"
        in result.stderr
    )
    assert "internal error" not in result.stderr
    assert len(result.stderr) < 2000
    assert remote_main(git, url) is None


def test_symlink_is_refused_and_nothing_is_deployed(room, git, tmp_path):
    site_id, token = room.new_site("link")
    url = room.url(site_id, token)
    work = new_work(git, tmp_path / "w")
    (work / "passwd").symlink_to("/etc/passwd")
    commit(git, work, {"index.html": "x"})

    result = git("push", url, "main", cwd=work, check=False)

    assert "remote: error: deploy rejected: symlink 'passwd' is not allowed" in result.stderr
    assert remote_main(git, url) is None
    assert not room.live("link.localhost").exists()


def test_two_pushes_to_one_site_at_once_are_serialized(room, git, tmp_path):
    site_id, token = room.new_site("race")
    url = room.url(site_id, token)
    works = [new_work(git, tmp_path / f"w{i}") for i in range(2)]
    for i, work in enumerate(works):
        commit(git, work, {"index.html": f"version {i}", "pad.bin": os.urandom(300_000)})
    results = [None, None]

    def push(i):
        results[i] = git("push", url, "main", cwd=works[i], check=False)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    winners = [i for i in range(2) if results[i].returncode == 0]
    assert len(winners) == 1, [r.stderr for r in results]
    loser = results[1 - winners[0]]
    assert "rejected" in loser.stderr  # git names why: fetch first / failed to write
    assert "remote: live at http://race.localhost:8080/" in results[winners[0]].stderr
    live = (room.live("race.localhost") / "index.html").read_text()
    assert live == f"version {winners[0]}"
    assert len(room.cdn.releases(site_id)) == 1


def test_a_whole_pack_whose_body_then_stalls_moves_no_ref(git, tmp_path):
    # dulwich reads the pack while the body arrives (BodyGuard's early start). Here the
    # pack arrives whole and valid, but the declared body never does: the watchdog cuts
    # it. The branch must not move and nothing may deploy, as when dulwich waited for
    # the whole body before reading any of it.
    import base64
    import socket

    # A fast minimum rate and a short grace: the stall is cut within about a second.
    room = ThreadedRoom(tmp_path / "room", git_min_rate=1 << 20, git_body_grace_seconds=1)
    try:
        site_id, token = room.new_site("stall")
        work = new_work(git, tmp_path / "w")
        sha = commit(git, work, {"index.html": "never live", "big.bin": os.urandom(200_000)})
        pack = pack_of(git, work, sha)
        # The server reads bodies 64 KiB at a time: a body of whole 64 KiB blocks reaches
        # the spool, and dulwich, entire, while the server waits for the rest. The
        # agent capability pads the ref command to that length.
        command = f"{'0' * 40} {sha} refs/heads/main\0 report-status side-band-64k agent=".encode()
        pad = -(len(command) + 4 + 4 + len(pack)) % (64 << 10)
        command += b"x" * pad
        body = b"%04x" % (len(command) + 4) + command + b"0000" + pack
        assert len(body) % (64 << 10) == 0 and len(command) + 4 <= 65520
        auth = base64.b64encode(f"x:{token}".encode()).decode()
        with socket.create_connection(("127.0.0.1", room.port), timeout=30) as sock:
            sock.sendall(
                (
                    f"POST /git/{site_id}.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Basic {auth}\r\n"
                    "Content-Type: application/x-git-receive-pack-request\r\n"
                    f"Content-Length: {len(body) + 1000}\r\n\r\n"
                ).encode()
                + body
            )
            sock.recv(4096)  # the answer, once the watchdog has cut the body
        path = f"/git/{site_id}.git/git-receive-pack"
        # What the app answered (the stdlib server cannot send 408's Connection header).
        assert ("POST", path, 408) in room.statuses
        assert remote_main(git, room.url(site_id, token)) is None
        assert room.deploys(token, site_id) == []
        assert not room.live("stall.localhost").exists()
    finally:
        room.stop()
