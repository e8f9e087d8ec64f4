"""Push limits against the real api and git rooms under gunicorn (gthread) in a subprocess.

What only a separate process shows: its peak memory during a large push and a gzip
bomb, its thread pool under slow bodies, kill -9 mid-push, and what it writes to stderr.
"""

import base64
import os
import socket
import subprocess
import threading
import time

import pytest
import requests
from push_kit import ProcessRoom, bomb_body, commit, make_git, new_work, post_pack, rss_peak_kib

pytestmark = pytest.mark.integration

MiB = 1 << 20
SETTINGS = {
    "max_deploy_files": 1000,
    "max_deploy_bytes": 200 * MiB,
    "git_min_rate": 1000,
    "git_body_grace_seconds": 2.0,
    "git_pushes_per_user": 2,
    "threads": 8,
}


@pytest.fixture
def git(tmp_path):
    return make_git(tmp_path)


@pytest.fixture
def rooms():
    started = []

    def start(root, **over):
        room = ProcessRoom(root, **{**SETTINGS, **over}).start()
        started.append(room)
        return room

    yield start
    for room in started:
        room.stop()


@pytest.fixture(scope="session")
def bomb_2g(request, tmp_path_factory):
    # Deflating 2 GiB of zeros takes a while: build it once, in pytest's cache if it has one.
    from push_kit import gzip_bytes

    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("ecstatic-git") if cache else tmp_path_factory.mktemp("ecstatic-git")
    path = folder / "bomb-2g.gz"
    if not path.exists():
        path.write_bytes(gzip_bytes(bomb_body(2 << 30)))
    return path.read_bytes()


def test_peak_memory_of_a_100_mb_push_and_a_2_gib_gzip_bomb(rooms, git, tmp_path, bomb_2g):
    room = rooms(tmp_path / "room")
    site = room.new_site("mem")
    work = new_work(git, tmp_path / "w")
    commit(git, work, {"index.html": "warm up"})
    git("push", "-q", room.url(*site), "main", cwd=work)
    worker = room.worker()
    baseline = worker.memory_info().rss // 1024

    commit(git, work, {"big.bin": os.urandom(100_000_000)})
    result = git("push", room.url(*site), "main", cwd=work)
    push_peak = rss_peak_kib(worker)

    assert "remote: live at" in result.stderr
    assert (room.live("mem.localhost") / "big.bin").stat().st_size == 100_000_000

    response = requests.post(
        f"http://127.0.0.1:{room.port}/git/{site[0]}.git/git-receive-pack",
        data=bomb_2g,
        auth=("x", site[1]),
        headers={
            "Content-Type": "application/x-git-receive-pack-request",
            "Content-Encoding": "gzip",
        },
        timeout=60,
    )
    bomb_peak = rss_peak_kib(worker)

    assert len(bomb_2g) < 8000
    assert b"a file of 2.0 GiB is larger than the 100.0 MiB limit" in response.content
    print(
        f"\nworker rss baseline {baseline / 1024:.0f} MiB; peak after 100 MB push "
        f"{push_peak / 1024:.0f} MiB (+{(push_peak - baseline) / 1024:.0f}); after 2 GiB "
        f"gzip bomb {bomb_peak / 1024:.0f} MiB (+{(bomb_peak - push_peak) / 1024:.0f})"
    )
    assert push_peak - baseline < 300 * 1024
    assert bomb_peak - push_peak < 50 * 1024  # the bomb adds next to nothing


def slow_body(port, site_id, token, declared=10_000_000):
    sock = socket.create_connection(("127.0.0.1", port))
    auth = base64.b64encode(f"x:{token}".encode()).decode()
    sock.sendall(
        (
            f"POST /git/{site_id}.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Basic {auth}\r\n"
            "Content-Type: application/x-git-receive-pack-request\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        ).encode()
    )
    return sock


def test_slow_bodies_of_one_user_do_not_starve_others(rooms, tmp_path):
    # The api in its own process, as the default layout runs it: with api and git in one
    # gunicorn, every held git request also waits on an api call from the same 8 threads.
    room = rooms(tmp_path / "room", split=True)
    slow, other = room.new_site("slow"), room.new_site("other")
    socks = [slow_body(room.port, *slow) for _ in range(12)]
    stop = threading.Event()

    def trickle():  # one byte per second on every connection
        while not stop.wait(1.0):
            for sock in socks:
                try:
                    sock.send(b"0")
                except OSError:
                    pass

    threading.Thread(target=trickle, daemon=True).start()
    latencies = []
    try:
        time.sleep(0.5)
        for _ in range(6):
            started = time.monotonic()
            response = requests.get(
                f"http://127.0.0.1:{room.port}/git/{other[0]}.git/info/refs",
                params={"service": "git-receive-pack"},
                auth=("x", other[1]),
                timeout=10,
            )
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200
            time.sleep(0.4)
        statuses = []
        for sock in socks:
            sock.settimeout(10)
            statuses.append(sock.recv(4096).split(b" ", 2)[1].decode())
    finally:
        stop.set()
        for sock in socks:
            sock.close()
    print(f"\ninfo/refs under 12 slow bodies: max {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 1.0
    assert sorted(statuses) == ["408"] * 2 + ["429"] * 10


def test_kill_9_mid_push_keeps_the_old_version_and_the_next_push_works(rooms, git, tmp_path):
    root = tmp_path / "room"
    room = rooms(root)
    site = room.new_site("kill")
    work = new_work(git, tmp_path / "w")
    commit(git, work, {"index.html": "v1", "a.bin": os.urandom(1000)})
    git("push", "-q", room.url(*site), "main", cwd=work)
    live = room.live("kill.localhost")
    home = room.config.home
    previous = ("v1", 1000)
    for n, delay in enumerate([0.15, 0.5, 1.0]):  # packing, sending/indexing, deploying
        version = (f"v{n + 2}", 8 * MiB + n)
        commit(git, work, {"index.html": version[0], "a.bin": os.urandom(version[1])})
        push = subprocess.Popen(
            ["git", "-c", "credential.helper=", "push", "-q", room.url(*site), "main"],
            cwd=work,
            env=git.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        room.kill9()
        push.wait(30)
        # Whole releases only: the old one, or the new one if the kill came after the switch.
        shown = ((live / "index.html").read_text(), (live / "a.bin").stat().st_size)
        assert shown in {previous, version}
        room = rooms(root)  # restart: the sweeps clear what the kill left
        leftovers = list(room.config.git_root.glob("*.git/objects/tmp_pack_*"))
        leftovers += list(room.config.cdn_root.glob("releases/*/.*"))
        leftovers += list((room.config.git_root / ".work").glob("*"))
        assert leftovers == [], home
        commit(git, work, {"index.html": f"{version[0]} again"})
        result = git("push", "-f", room.url(*site), "main", cwd=work, check=False)
        assert result.returncode == 0, result.stderr + "\n--- the rooms' stderr:\n" + room.stderr()
        assert "remote: live at" in result.stderr
        assert (live / "index.html").read_text() == f"{version[0]} again"
        previous = (f"{version[0]} again", version[1])


def test_no_token_reaches_the_server_log(rooms, git, tmp_path):
    room = rooms(tmp_path / "room")
    token = room.create_user("logs")
    site = (room.create_site(token, "logs")["id"], "logs", token)
    assert token.startswith("ecs_")
    base = f"http://127.0.0.1:{room.port}/git/{site[0]}.git"
    work = new_work(git, tmp_path / "w")
    commit(git, work, {"index.html": "x"})
    git(
        "push",
        "-q",
        f"http://{token}:{token}@127.0.0.1:{room.port}/git/{site[0]}.git",
        "main",
        cwd=work,
    )
    git(
        "push",
        f"http://{token}:wrong@127.0.0.1:{room.port}/git/{site[0]}.git",
        "main",
        cwd=work,
        check=False,
    )
    for query in (f"token={token}", f"access_token={token}"):
        requests.get(f"{base}/info/refs?service=git-upload-pack&{query}", timeout=5)
    requests.get(f"{base}/nothing/{token}", auth=(token, token), timeout=5)
    post_pack(room.port, site[0], token, b"garbage" + token.encode())
    time.sleep(0.3)
    room.stop()

    log = room.stderr()
    assert log.strip(), "the server wrote no log at all"
    basic = base64.b64encode(f"{token}:{token}".encode()).decode()
    assert token not in log and token[4:20] not in log and basic not in log
