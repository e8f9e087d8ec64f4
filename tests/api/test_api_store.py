"""MetadataStore on a real SQLite file in a tmp directory."""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
import threading
from datetime import timedelta

import pytest

from services.core.auth import hash_token
from services.core.errors import BadRequest, Conflict, NotFound, Unavailable
from services.falcon_apps.api.store import MetadataStore

SHA = "0123456789abcdef0123456789abcdef01234567"


def deploy(store, user, site, release="r1", **overrides):
    fields = {"commit_sha": SHA, "release": release, "file_count": 3, "bytes": 1234, **overrides}
    return store.record_deploy(user["id"], site["id"], **fields)


def db_bytes(path):
    # WAL mode keeps recent writes in side files until a checkpoint: read them all.
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_create_user_returns_user_and_working_token(store):
    user, token = store.create_user("alice")
    assert re.fullmatch(r"[0-9a-f]{16}", user["id"])
    assert user["name"] == "alice"
    assert user["created_at"] == "2024-05-01T12:00:01.000Z"
    assert store.user_for_token(token) == user


def test_unknown_tokens_find_no_user(store, alice):
    assert store.user_for_token(alice["token"] + "x") is None
    assert store.user_for_token("") is None
    assert store.user_for_token("' OR 1=1 --") is None


def test_token_is_stored_only_as_its_hash(config, store):
    user, token = store.create_user("alice")
    store.user_for_token(token)
    store.close()
    content = db_bytes(config.api_db)
    assert hash_token(token).encode() in content  # proves we read the right bytes
    assert token.encode() not in content
    assert token.removeprefix("ecs_").encode() not in content


def test_database_file_is_private(config, store):
    assert config.api_db.stat().st_mode & 0o077 == 0


def test_default_tokens_are_fresh_and_prefixed(tmp_path):
    store = MetadataStore(tmp_path / "db.sqlite3")
    _, first = store.create_user("alice")
    _, second = store.create_user("bob")
    assert first.startswith("ecs_") and second.startswith("ecs_") and first != second
    assert store.user_for_token(second)["name"] == "bob"


@pytest.mark.parametrize(
    "name", ["", "Alice", "-x", "_x", "a" * 65, "a b", "alice\n", "ålice", "a/b"]
)
def test_invalid_user_names_are_rejected(store, name):
    with pytest.raises(BadRequest):
        store.create_user(name)


@pytest.mark.parametrize("name", ["a", "0", "a.b_c-d", "a" * 64])
def test_valid_user_names_are_accepted(store, name):
    assert store.create_user(name)[0]["name"] == name


def test_duplicate_user_name_conflicts_and_keeps_first(store, alice):
    with pytest.raises(Conflict):
        store.create_user("alice")
    assert store.user_for_token(alice["token"])["id"] == alice["id"]


def test_create_token_adds_a_second_working_token(store, alice):
    token = store.create_token(alice["id"])
    assert token != alice["token"]
    assert store.user_for_token(token)["id"] == alice["id"]
    with pytest.raises(NotFound):
        store.create_token("0000000000000000")


def test_last_used_at_is_touched_at_most_once_a_minute(config, store, clock, alice):
    def last_used():
        with sqlite3.connect(config.api_db) as conn:
            return conn.execute("SELECT last_used_at FROM tokens").fetchone()[0]

    store.user_for_token(alice["token"])
    first = last_used()
    assert first is not None
    store.user_for_token(alice["token"])
    assert last_used() == first
    clock.now += timedelta(minutes=2)
    store.user_for_token(alice["token"])
    assert last_used() > first


def test_sites_belong_to_their_owner(store, alice, bob):
    site = store.create_site(alice["id"], "blog", "blog.example.test")
    assert site["name"] == "blog" and site["live_deploy"] is None and site["previews"] == []
    assert store.get_site(alice["id"], site["id"]) == site
    assert store.list_sites(alice["id"]) == [site]
    assert store.list_sites(bob["id"]) == []
    with pytest.raises(NotFound):
        store.get_site(bob["id"], site["id"])
    with pytest.raises(NotFound):
        store.get_site(alice["id"], "ffffffffffffffff")


def test_list_sites_oldest_first(store, alice):
    names = ["zeta", "alpha", "mid"]
    for name in names:
        store.create_site(alice["id"], name, f"{name}.example.test")
    assert [s["name"] for s in store.list_sites(alice["id"])] == names


def test_site_names_are_globally_unique(store, alice, bob):
    store.create_site(alice["id"], "blog", "blog.example.test")
    with pytest.raises(Conflict, match="site name"):
        store.create_site(bob["id"], "blog", "other.example.test")
    with pytest.raises(Conflict, match="hostname"):
        store.create_site(bob["id"], "other", "blog.example.test")
    # Neither failed attempt left a half-created site behind.
    assert store.list_sites(bob["id"]) == []
    assert store.hostmap() == {"blog.example.test": store.list_sites(alice["id"])[0]["id"]}


def test_create_site_checks_name_and_user(store, alice):
    with pytest.raises(BadRequest):
        store.create_site(alice["id"], "Not-A-Label", "x.example.test")
    with pytest.raises(NotFound):
        store.create_site("0000000000000000", "blog", "blog.example.test")


def test_record_deploy_becomes_current(store, alice):
    site = store.create_site(alice["id"], "blog", "blog.example.test")
    first = deploy(store, alice, site, "r1")
    assert first["state"] == "live" and first["site_id"] == site["id"] and first["current"]
    assert store.get_site(alice["id"], site["id"])["live_deploy"] == first
    second = deploy(store, alice, site, "r2", file_count=0, bytes=0)
    assert store.get_site(alice["id"], site["id"])["live_deploy"] == second
    assert store.list_sites(alice["id"])[0]["live_deploy"] == second
    assert store.list_deploys(alice["id"], site["id"]) == [second, {**first, "current": False}]


def test_order_is_the_number_not_the_clock(store, clock, alice):
    site = store.create_site(alice["id"], "blog", "blog.example.test")
    deploy(store, alice, site, "r1")
    clock.now -= timedelta(hours=1)
    latest = deploy(store, alice, site, "r2")
    assert latest["number"] == 2
    assert store.get_site(alice["id"], site["id"])["live_deploy"]["release"] == "r2"
    assert store.list_deploys(alice["id"], site["id"])[0] == latest


def test_other_user_cannot_deploy_to_a_site(store, alice, bob):
    site = store.create_site(alice["id"], "blog", "blog.example.test")
    with pytest.raises(NotFound):
        deploy(store, bob, site)
    with pytest.raises(NotFound):
        store.record_deploy(
            alice["id"], "ffffffffffffffff", commit_sha=SHA, release="r", file_count=0, bytes=0
        )
    with pytest.raises(NotFound):
        store.list_deploys(bob["id"], site["id"])
    assert store.list_deploys(alice["id"], site["id"]) == []


def test_hostmap_lists_every_site(store, alice, bob):
    a = store.create_site(alice["id"], "blog", "blog.example.test")
    b = store.create_site(bob["id"], "shop", "shop.example.test")
    assert store.hostmap() == {"blog.example.test": a["id"], "shop.example.test": b["id"]}


def test_schema_creation_is_idempotent_and_data_survives(config, store, alice):
    site = store.create_site(alice["id"], "blog", "blog.example.test")
    store.close()
    reopened = MetadataStore(config.api_db)
    assert reopened.user_for_token(alice["token"])["name"] == "alice"
    assert reopened.get_site(alice["id"], site["id"])["name"] == "blog"


def test_wal_mode(config, store):
    with sqlite3.connect(config.api_db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ping(config, store):
    assert store.ping() is True
    store.close()
    for side in config.api_db.parent.glob(config.api_db.name + "*"):
        side.unlink()
    config.api_db.write_bytes(b"this is not a database" * 100)
    assert store.ping() is False


def test_a_long_foreign_write_lock_reads_as_unavailable_not_a_crash(config, clock):
    store = MetadataStore(config.api_db, clock=clock, busy_timeout=0.1)
    user, token = store.create_user("alice")
    other = sqlite3.connect(config.api_db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process mid-write, for longer than we wait
    try:
        with pytest.raises(Unavailable):
            store.create_site(user["id"], "blog", "blog.example.test")
        # WAL readers are not blocked, and the skipped last_used_at touch is not an error.
        clock.now += timedelta(minutes=5)
        assert store.user_for_token(token)["id"] == user["id"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.create_site(user["id"], "blog", "blog.example.test")["name"] == "blog"


def test_threads_and_a_second_process_handle_share_the_file(config, store, alice):
    cli = MetadataStore(config.api_db)  # what `ecstatic admin create-user` opens
    errors = []

    def create_sites(prefix):
        try:
            for n in range(15):
                store.create_site(alice["id"], f"{prefix}{n}", f"{prefix}{n}.example.test")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def create_users():
        try:
            for n in range(15):
                cli.create_user(f"user{n}")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=create_sites, args=(p,)) for p in "abc"]
    threads.append(threading.Thread(target=create_users))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list_sites(alice["id"])) == 45
    assert len(store.hostmap()) == 45
    cli.close()


def _child_creates_user(store, queue):
    try:
        queue.put(store.create_user("forked")[1])
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(repr(exc))


def test_store_keeps_working_across_fork(store, alice):
    # gunicorn may build the app, then fork: parent and child both keep working.
    assert store.list_sites(alice["id"]) == []
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_creates_user, args=(store, queue))
    child.start()
    try:
        token = queue.get(timeout=30)
    finally:
        child.join(timeout=10)
    assert token.startswith("ecs_"), token
    assert store.user_for_token(token)["name"] == "forked"
    assert store.create_site(alice["id"], "after", "after.example.test")["name"] == "after"
