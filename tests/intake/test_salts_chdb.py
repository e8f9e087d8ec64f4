"""Salt destruction on the real embedded engine: an old day's salt is gone from the
data directory's bytes (decompressed, so LZ4 cannot hide one), not only from query
results, and today's keeps working."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.intake.salts import SaltStore
from tests.disk_bytes import files_holding

pytestmark = pytest.mark.integration


def stored(storage, salts: dict[date, str]) -> None:
    storage.insert("visitor_salts", list(salts.items()), ("day", "salt"))


def test_old_salts_are_destroyed_on_disk(chdb_url, chdb_storage):
    root = Path(urlsplit(chdb_url).path)
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    old = {today - timedelta(days=n): os.urandom(32).hex() for n in (2, 3, 40)}
    stored(chdb_storage, old)
    for salt in old.values():
        assert files_holding(root, salt.encode()), "the grep must see a stored salt first"

    store = SaltStore(chdb_storage)  # its first call sweeps
    current, kept = store.salt(today), store.salt(yesterday)

    for day, salt in old.items():
        assert files_holding(root, salt.encode()) == [], day
        assert chdb_storage.rows(
            "SELECT count() AS n FROM visitor_salts WHERE day = {d:Date}", {"d": day}
        ) == [{"n": 0}]
    # Detaching leaves an empty covering part (no rows) for a minute; no part with rows.
    rows_left = chdb_storage.rows(
        "SELECT sum(rows) AS n FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'visitor_salts' AND partition_id < {cut:String}",
        {"cut": yesterday.strftime("%Y%m%d")},
    )
    assert rows_left == [{"n": 0}]
    detached = chdb_storage.rows(
        "SELECT name FROM system.detached_parts WHERE database = currentDatabase() "
        "AND table = 'visitor_salts'"
    )
    assert detached == []
    assert files_holding(root, current.hex().encode())
    assert SaltStore(chdb_storage).salt(today) == current
    assert SaltStore(chdb_storage).salt(yesterday) == kept
    late = store.salt(today - timedelta(days=2))  # a line past its grace: still hashed
    assert len(late) == 32 and late.hex() not in old.values()

    # Later sweeps (each midnight, or on demand) destroy what was stored since.
    again = {today - timedelta(days=5): os.urandom(32).hex()}
    stored(chdb_storage, again)
    assert store.destroy_expired() == list(again)
    assert files_holding(root, next(iter(again.values())).encode()) == []
    assert store.salt(today) == current
