"""End to end: the real git CLI pushing to the real api and git rooms on 127.0.0.1."""

import os

import pytest
from push_kit import ThreadedRoom, commit, make_git, new_work

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    room = ThreadedRoom(
        tmp_path_factory.mktemp("gitroom"), max_deploy_files=1000, max_deploy_bytes=5_000_000
    )
    yield room
    room.stop()


@pytest.fixture
def git(tmp_path):
    return make_git(tmp_path)


@pytest.fixture
def work(tmp_path, git):
    return new_work(git, tmp_path / "work")


def test_push_deploys_and_shows_the_live_url(room, git, work):
    site_id, token = room.new_site("first")
    sha = commit(git, work, {"index.html": "<h1>first</h1>", "css/site.css": "h1{}"})

    result = git("push", room.url(site_id, token), "main", cwd=work)

    assert "remote: live at http://first.localhost:8080/" in result.stderr
    assert f"remote: checked out {sha[:7]} (2 files, 18 B)" in result.stderr
    [deploy] = room.deploys(token, site_id)
    assert f"remote: published 2 files (18 B) as release {deploy['release']}" in result.stderr
    assert deploy["release"] == f"{deploy['number']:08d}-{deploy['id']}"
    assert (room.live("first.localhost") / "index.html").read_text() == "<h1>first</h1>"
    assert (room.live("first.localhost") / "css" / "site.css").read_text() == "h1{}"
    assert (deploy["commit_sha"], deploy["file_count"], deploy["state"]) == (sha, 2, "live")
    assert (deploy["context"], deploy["branch"], deploy["author"]) == (
        "production",
        "main",
        "Pusher",
    )
    assert room.site(token, site_id)["live_deploy"]["id"] == deploy["id"]
    assert room.cdn.live_release("first.localhost") == (site_id, deploy["release"])


def test_clone_gets_what_was_pushed(room, git, work, tmp_path):
    site_id, token = room.new_site("clone")
    commit(git, work, {"index.html": "cloned"})
    git("push", "-q", room.url(site_id, token), "main", cwd=work)

    git("clone", "-q", room.url(site_id, token), str(tmp_path / "copy"))

    assert (tmp_path / "copy" / "index.html").read_text() == "cloned"


def test_wrong_token_fails_with_401(room, git, work):
    site_id, _token = room.new_site("locked")
    commit(git, work, {"index.html": "x"})

    result = git("push", room.url(site_id, "not-the-token"), "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "remote: invalid token: check your Ecstatic API token" in result.stderr
    assert "Authentication failed" in result.stderr
    statuses = {s for m, p, s in room.statuses if p.startswith(f"/git/{site_id}.git/")}
    assert statuses == {401}
    assert not room.repo_dir(site_id).exists()


def test_site_the_token_cannot_see_is_not_found(room, git, work):
    _mine, token = room.new_site("mine")
    theirs, _ = room.new_site("theirs")
    commit(git, work, {"index.html": "x"})

    result = git("push", room.url(theirs, token), "main", cwd=work, check=False)

    assert result.returncode != 0
    assert f"remote: site {theirs} not found, or it is not yours" in result.stderr
    assert "not found" in result.stderr.splitlines()[-1]
    assert not room.live("theirs.localhost").exists()


def test_second_push_switches_the_release(room, git, work):
    site_id, token = room.new_site("twice")
    url = room.url(site_id, token)
    commit(git, work, {"index.html": "v1", "old.html": "gone soon"})
    git("push", url, "main", cwd=work)
    first = os.readlink(room.live("twice.localhost"))

    commit(git, work, {"index.html": "v2"}, remove=["old.html"])
    result = git("push", url, "main", cwd=work)

    second = os.readlink(room.live("twice.localhost"))
    newest = room.deploys(token, site_id)[0]
    assert second != first and second.endswith(newest["release"])
    assert newest["number"] == 2 and newest["release"].startswith("00000002-")
    assert (room.live("twice.localhost") / "index.html").read_text() == "v2"
    assert not (room.live("twice.localhost") / "old.html").exists()
    assert (room.cdn.live_dir / first).is_dir()  # the previous release is kept
    assert "remote: live at http://twice.localhost:8080/" in result.stderr


def test_symlink_push_is_rejected_and_the_live_site_stays(room, git, work):
    site_id, token = room.new_site("safe")
    url = room.url(site_id, token)
    good = commit(git, work, {"index.html": "safe"})
    git("push", "-q", url, "main", cwd=work)
    before = os.readlink(room.live("safe.localhost"))
    (work / "passwd").symlink_to("/etc/passwd")
    commit(git, work, {"index.html": "hacked"})

    result = git("push", url, "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "remote: error: deploy rejected: symlink 'passwd' is not allowed" in result.stderr
    assert "[remote rejected] main -> main" in result.stderr
    assert os.readlink(room.live("safe.localhost")) == before
    assert (room.live("safe.localhost") / "index.html").read_text() == "safe"
    remote_main = git("ls-remote", url, "refs/heads/main").stdout.split()[0]
    assert remote_main == good  # the branch did not move either
    assert len(room.deploys(token, site_id)) == 1  # and no deploy was even queued


def test_other_branches_deploy_to_their_preview_not_production(room, git, work):
    site_id, token = room.new_site("branches")
    url = room.url(site_id, token)
    commit(git, work, {"index.html": "draft"})
    git("checkout", "-q", "-b", "draft", cwd=work)

    result = git("push", url, "draft", cwd=work)

    assert "remote: draft: deploy queued" in result.stderr
    assert "remote: draft: live at http://draft--branches.localhost:8080/" in result.stderr
    assert not room.live("branches.localhost").exists()
    assert (room.live("draft--branches.localhost") / "index.html").read_text() == "draft"


def test_publish_dir_from_ecstatic_toml(room, git, work):
    site_id, token = room.new_site("built")
    commit(
        git,
        work,
        {
            "ecstatic.toml": 'publish = "public"\n',
            "src/page.md": "# hi",
            "public/index.html": "built",
        },
    )

    git("push", "-q", room.url(site_id, token), "main", cwd=work)

    assert sorted(p.name for p in room.live("built.localhost").iterdir()) == ["index.html"]


def test_large_push_sent_in_chunks(room, git, work):
    site_id, token = room.new_site("large")
    blob = os.urandom(300_000)  # incompressible, so the body exceeds the post buffer
    commit(git, work, {"index.html": "big", "data.bin": blob})

    result = git("-c", "http.postBuffer=8192", "push", room.url(site_id, token), "main", cwd=work)

    assert "remote: live at http://large.localhost:8080/" in result.stderr
    assert (room.live("large.localhost") / "data.bin").read_bytes() == blob


def test_a_ref_lock_left_by_a_killed_receiver_does_not_block_later_pushes(room, git, work):
    # kill -9 between dulwich taking refs/heads/main.lock and renaming it leaves the
    # file behind; dulwich alone would then refuse every later push of the branch.
    site_id, token = room.new_site("stalelock")
    commit(git, work, {"index.html": "one"})
    git("push", "-q", room.url(site_id, token), "main", cwd=work)
    repo = room.config.git_root / f"{site_id}.git"
    stale = [repo / "refs/heads/main.lock", repo / "packed-refs.lock"]
    for path in stale:
        path.write_bytes(b"0" * 40 + b"\n")

    commit(git, work, {"index.html": "two"})
    result = git("push", room.url(site_id, token), "main", cwd=work)

    assert "remote: live at" in result.stderr
    assert (room.live("stalelock.localhost") / "index.html").read_text() == "two"
    assert [path for path in stale if path.exists()] == []


def test_an_internal_error_mid_push_reaches_the_pusher_as_a_remote_line(
    room, git, work, monkeypatch
):
    from dulwich.server import ReceivePackHandler

    site_id, token = room.new_site("boom")
    commit(git, work, {"index.html": "one"})
    git("push", "-q", room.url(site_id, token), "main", cwd=work)

    def broken(self, refs):
        raise RuntimeError("disk on fire")
        yield  # pragma: no cover - a generator, like dulwich's

    monkeypatch.setattr(ReceivePackHandler, "_apply_pack", broken)
    commit(git, work, {"index.html": "two"})
    result = git("push", room.url(site_id, token), "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "remote: error: the server failed while receiving this push" in result.stderr
    assert "disk on fire" not in result.stderr  # details go to the log, not the pusher
    assert (room.live("boom.localhost") / "index.html").read_text() == "one"
