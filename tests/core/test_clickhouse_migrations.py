"""ClickHouse migrations: a database made by the previous release upgrades in place."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

# Runs in its own process: chDB allows one data path per process, and this test needs
# a fresh one laid out as the first release left it.
SCRIPT = textwrap.dedent(
    r"""
    import json, shutil, sys
    from pathlib import Path
    from services.core.storage import open_storage
    from services.core.schema import MIGRATIONS_DIR, insert_ingest, migrate

    data, scratch = sys.argv[1], Path(sys.argv[2])
    storage = open_storage("chdb://" + data)
    # The first release: its statements ran at every start, with no bookkeeping.
    for statement in (MIGRATIONS_DIR / "001_requests_and_salts.sql").read_text().split(";"):
        if statement.strip():
            storage.command(statement)
    storage.command(
        "INSERT INTO requests (site_id, ts, host, method, path, status, status_class, bytes,"
        " file_type, is_page, referrer_host, browser, os, device, country, is_bot, bot_reason,"
        " visitor_id, log_source, request_id) VALUES ('old', '2026-01-02 03:04:05', 'o.example',"
        " 'GET', '/', 200, '2xx', 1, 'page', 1, '', 'Firefox', 'Linux', 'desktop', 'DE', 0, '',"
        " 7, 'caddy', '')"
    )
    storage.command("INSERT INTO visitor_salts (day, salt) VALUES ('2026-01-02', 'abc')")
    report = {"first": migrate(storage), "again": migrate(storage)}
    row = ["new", 1767323045000, "n.example", "GET", "/docs/a.PDF?x=1#f", 206, 9,
           "https://www.example.org/p", "Firefox", "Linux", "desktop", False, "", "DE", 8,
           "bunny", "r1", True]
    for _ in range(2):  # the intake's own insert, through the Null table's view, twice
        insert_ingest(storage, json.dumps(row).encode(), token="batch-1")
    report["ingest_rows"] = storage.rows("SELECT count() AS n FROM requests_ingest")
    report["rows"] = storage.rows(
        "SELECT site_id, toString(ts) AS ts, path, status_class, file_type, is_page,"
        " referrer_host FROM requests ORDER BY site_id")
    report["salts"] = storage.rows("SELECT toString(day) AS day, salt FROM visitor_salts")
    report["salt_partition"] = storage.rows(
        "SELECT partition_key FROM system.tables WHERE name = 'visitor_salts'"
        " AND database = currentDatabase()")[0]["partition_key"]
    # A released migration edited afterwards is refused, not silently re-run.
    edited = scratch / "migrations"
    shutil.copytree(MIGRATIONS_DIR, edited)
    (edited / "002_derive_on_insert.sql").write_text("SELECT 1;")
    try:
        migrate(storage, edited)
        report["edited"] = "applied"
    except Exception as exc:
        report["edited"] = type(exc).__name__
    print(json.dumps(report, default=str))
    """
)


def test_a_first_release_database_upgrades_to_the_current_schema(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data"), str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=str(tmp_path.parent.parent),
        env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["first"] == [1, 2, 3, 4] and report["again"] == []
    new, old = report["rows"]  # the batch sent twice is stored once
    assert report["ingest_rows"] == [{"n": 0}]  # the Null table keeps nothing
    assert old["site_id"] == "old" and old["path"] == "/"  # kept as it was
    assert new == {
        "site_id": "new", "ts": "2026-01-02 03:04:05.000", "path": "/docs/a.PDF",
        "status_class": "2xx", "file_type": "document", "is_page": False,
        "referrer_host": "www.example.org",
    }  # fmt: skip
    assert report["salts"] == [{"day": "2026-01-02", "salt": "abc"}]
    assert report["salt_partition"] == "day"
    assert report["edited"] == "MigrationException"
