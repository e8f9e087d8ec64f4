"""Numbered migrations: a 0.1.0 database upgrades in place, and opening is safe to repeat."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from services.core.errors import Unavailable
from services.falcon_apps.api import migrate
from services.falcon_apps.api.db import Database
from services.falcon_apps.api.store import MetadataStore

FIXTURE = Path(__file__).with_name("fixtures") / "release-0.1.0.sql"
# What the fixture holds (made by 0.1.0's MetadataStore, dumped with sqlite3 .dump).
ALICE = "a11ce00000000001"
TOKENS = ("ecs_fixture-token-alice-0000000000000000", "ecs_fixture-token-alice-1111111111111111")
BLOG, SHOP = "a11ce00000000004", "a11ce00000000005"
DEPLOYS = {
    "a11ce00000000006": ("0123456789abcdef0123456789abcdef01234567", "r-0001", 3, 1024),
    "a11ce00000000007": ("89abcdef0123456789abcdef0123456789abcdef", "r-0002", 5, 2048),
}
SHA = "fedcba9876543210fedcba9876543210fedcba98"


def load_release_0_1_0(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    conn.executescript(FIXTURE.read_text())
    rows = {table: rows_of(conn, table) for table in ("users", "tokens", "sites", "hostnames")}
    conn.close()
    return rows


def rows_of(conn, table):
    return sorted(conn.execute(f"SELECT * FROM {table}").fetchall())  # noqa: S608 - fixed names


def applied(path):
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT migration_id FROM _yoyo_migration")]


def test_migration_ids_are_numbered_in_order():
    ids = [m.id for m in migrate.migrations()]
    assert ids == sorted(ids) and ids[0] == "0001-initial-schema"
    assert [int(i[:4]) for i in ids] == list(range(1, len(ids) + 1))


def test_a_0_1_0_database_upgrades_and_keeps_every_row(tmp_path):
    path = tmp_path / "ecstatic.sqlite3"
    before = load_release_0_1_0(path)
    store = MetadataStore(path)

    with sqlite3.connect(path) as conn:
        for table, rows in before.items():
            kept = [row[: len(rows[0])] for row in rows_of(conn, table)]
            assert kept == rows, table
    for token in TOKENS:
        assert store.user_for_token(token)["id"] == ALICE
    sites = {s["id"]: s for s in store.list_sites(ALICE)}
    assert set(sites) == {BLOG, SHOP}
    # The deploy that was current under 0.1.0 (the newest) is the explicit pointer now.
    assert sites[BLOG]["live_deploy"]["id"] == "a11ce00000000007"
    assert sites[SHOP]["live_deploy"] is None
    history = store.list_deploys(ALICE, BLOG)
    assert [d["number"] for d in history] == [2, 1]
    for deploy in history:
        assert (deploy["commit_sha"], deploy["release"], deploy["file_count"], deploy["bytes"]) == (
            DEPLOYS[deploy["id"]]
        )
        assert (deploy["state"], deploy["context"], deploy["hostname"]) == (
            "live",
            "production",
            "blog.localhost",
        )
    assert store.hostmap() == {"blog.localhost": BLOG, "shop.localhost": SHOP}
    assert applied(path) == [m.id for m in migrate.migrations()]


def test_new_features_work_on_an_upgraded_database(tmp_path):
    path = tmp_path / "ecstatic.sqlite3"
    load_release_0_1_0(path)
    store = MetadataStore(path)
    # Restore: the older 0.1.0 deploy is live, so it can be activated again.
    store.deploys.activate(ALICE, BLOG, "a11ce00000000006")
    assert store.get_site(ALICE, BLOG)["live_deploy"]["id"] == "a11ce00000000006"
    fields = {"context": "preview", "branch": "feature/x", "commit_sha": SHA}
    preview = store.deploys.create(
        ALICE, BLOG, {**fields, "author": None, "message": None}, "localhost"
    )
    assert (preview["number"], preview["hostname"]) == (3, "feature-x--blog.localhost")
    assert store.has_hostname("feature-x--blog.localhost")
    credential, _ = store.credentials.issue(ALICE, BLOG, 900)
    assert store.credentials.resolve(credential).site_id == BLOG
    store.logs.append(ALICE, BLOG, preview["id"], ["hello"])
    assert store.logs.read(ALICE, BLOG, preview["id"])["lines"] == ["hello"]


def test_opening_twice_is_idempotent(tmp_path):
    path = tmp_path / "ecstatic.sqlite3"
    load_release_0_1_0(path)
    assert migrate.apply(path) == [m.id for m in migrate.migrations()]
    assert migrate.apply(path) == []
    MetadataStore(path).close()
    MetadataStore(path).close()
    assert applied(path) == [m.id for m in migrate.migrations()]
    assert len(MetadataStore(path).list_deploys(ALICE, BLOG)) == 2


def _open(path, start, queue):
    start.wait(10)
    try:
        store = MetadataStore(path)
        store.create_user(f"user{multiprocessing.current_process().pid}")
        queue.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(repr(exc))


@pytest.mark.parametrize("fixture", [False, True])
def test_processes_opening_at_once_migrate_exactly_once(tmp_path, fixture):
    path = tmp_path / "ecstatic.sqlite3"
    if fixture:
        load_release_0_1_0(path)
    ctx = multiprocessing.get_context("spawn")
    start, queue = ctx.Event(), ctx.Queue()
    children = [ctx.Process(target=_open, args=(path, start, queue)) for _ in range(3)]
    for child in children:
        child.start()
    start.set()
    results = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=10)
    assert results == ["ok"] * 3
    assert applied(path) == [m.id for m in migrate.migrations()]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM yoyo_lock").fetchone()[0] == 0


def _held_after_migrating(path: Path, monkeypatch) -> sqlite3.Connection:
    # A migrated file still in rollback-journal mode, another connection holding its
    # write lock as a migrating process does, and this process's migration run done.
    migrate.apply(path)
    monkeypatch.setattr(migrate, "apply", lambda *args, **kwargs: [])
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=DELETE")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE held_by_another_process (x)")
    return writer


def test_opening_while_another_process_writes_waits_for_the_wal_switch(tmp_path, monkeypatch):
    # SQLite refuses a journal-mode switch at once, without a busy wait, while another
    # connection holds the write lock: the open must wait for it instead of failing.
    path = tmp_path / "ecstatic.sqlite3"
    load_release_0_1_0(path)
    writer = _held_after_migrating(path, monkeypatch)
    releaser = threading.Timer(0.5, writer.execute, ("COMMIT",))
    releaser.start()
    try:
        store = MetadataStore(path)
        store.create_user("waited")
    finally:
        releaser.join()
        writer.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_write_lock_held_past_the_busy_timeout_is_unavailable_not_a_crash(
    tmp_path, monkeypatch
):
    path = tmp_path / "ecstatic.sqlite3"
    writer = _held_after_migrating(path, monkeypatch)
    try:
        with pytest.raises(Unavailable):
            Database(path, busy_timeout=0.3)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
