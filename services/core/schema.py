"""ClickHouse schema: numbered migrations in ``clickhouse/``, applied at start-up.

``clickhouse-migrations`` keeps the record of applied versions (table ``schema_versions``)
and refuses a changed or missing migration; it reaches the engine through ``Storage``,
so the same files migrate the embedded engine and a ClickHouse server. A database made
by the first release (no bookkeeping yet) is at version 1: its statements were
``IF NOT EXISTS`` and migration 001 is exactly them, so upgrading it just runs 002 on.

The ``requests`` table (001, 002): one row per access-log line, never a raw IP or a raw
user agent (``visitor_id`` is a keyed hash with a daily salt; browser, OS and device are
parsed). ORDER BY (site_id, toDate(ts), is_bot, is_page, visitor_id, ts): every query is
one site's time range, usually of human page views, often counting distinct visitors,
so that prefix is what a query reads; partitions are months, so the TTL drops whole
parts.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from clickhouse_migrations.connection import Connection
from clickhouse_migrations.migration import MigrationStorage
from clickhouse_migrations.migrator import Migrator

from .storage import Storage

__all__ = [
    "INGEST_COLUMNS",
    "INGEST_SETTINGS",
    "INGEST_TABLE",
    "MIGRATIONS_DIR",
    "REQUEST_COLUMNS",
    "apply_ttl",
    "insert_ingest",
    "migrate",
]

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).with_name("clickhouse")

# Every stored column, in table order (tests and tools insert whole rows with these).
REQUEST_COLUMNS = (
    "site_id",
    "ts",
    "host",
    "method",
    "path",
    "status",
    "status_class",
    "bytes",
    "file_type",
    "is_page",
    "referrer_host",
    "browser",
    "os",
    "device",
    "country",
    "is_bot",
    "bot_reason",
    "visitor_id",
    "log_source",
    "request_id",
)

# What the intake sends per line (JSONCompactEachRow, in this order) to INGEST_TABLE, a
# Null table whose view feeds requests (migration 004). The engine derives ts, path,
# status_class, file_type, is_page and referrer_host from these on insert (migration
# 002); ts_ms, raw_path, referrer and range_request are never stored.
INGEST_TABLE = "requests_ingest"
INGEST_SETTINGS = {
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    # A batch is at most a few tens of MB: splitting it over parser threads bought
    # nothing but hand-offs on a box whose cores the intake already keeps busy (bench/
    # intake: about 7% more lines/s and a fifth less insert time without it).
    "input_format_parallel_parsing": 0,
}
INGEST_COLUMNS = (
    "site_id",
    "ts_ms",
    "host",
    "method",
    "raw_path",
    "status",
    "bytes",
    "referrer",
    "browser",
    "os",
    "device",
    "is_bot",
    "bot_reason",
    "country",
    "visitor_id",
    "log_source",
    "request_id",
    "range_request",
)

_migrate_lock = threading.Lock()


class _StorageConnection(Connection):
    """clickhouse-migrations' connection seam, over our one storage client."""

    def __init__(self, storage: Storage):
        self._storage = storage

    def command(self, statement: str, log_statement: str | None = None) -> None:
        self._storage.command(statement)

    def query(self, statement: str) -> list[dict]:
        return self._storage.rows(statement)

    def insert(self, table: str, rows: list[dict]) -> None:
        columns = list(rows[0])
        self._storage.insert(table, [[row[name] for name in columns] for row in rows], columns)

    def __enter__(self) -> _StorageConnection:
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        return None


def insert_ingest(storage: Storage, data: bytes, token: str) -> None:
    """Insert the intake's encoded rows (``INGEST_COLUMNS``, JSONCompactEachRow) once.

    ``token`` deduplicates: the same batch sent again is stored once.
    """
    storage.insert_raw(
        INGEST_TABLE,
        INGEST_COLUMNS,
        data,
        fmt="JSONCompactEachRow",
        settings={**INGEST_SETTINGS, "insert_deduplication_token": token},
    )


def migrate(storage: Storage, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply every pending migration in order; returns the versions applied.

    Raises:
        clickhouse_migrations.exceptions.MigrationException: an applied migration was
            changed or removed (never edit a released migration: add the next one).
    """
    with _migrate_lock:
        migrator = Migrator(_StorageConnection(storage))
        migrator.init_schema()
        applied = migrator.apply_migration(
            MigrationStorage(directory).migrations(), multi_statement=True
        )
    versions = [migration.version for migration in applied]
    if versions:
        log.info("clickhouse migrated", extra={"versions": versions})
    return versions


def apply_ttl(storage: Storage, days: int) -> None:
    """Drop rows older than ``days`` (0: keep everything). A setting, not a migration:
    operators change it through config, and applying the same value again is free."""
    if days:
        storage.command(
            f"ALTER TABLE requests MODIFY TTL toDateTime(ts) + INTERVAL {int(days)} DAY"
        )
    elif "TTL" in _create_statement(storage, "requests"):
        storage.command("ALTER TABLE requests REMOVE TTL")


def _create_statement(storage: Storage, table: str) -> str:
    found = storage.rows(
        "SELECT create_table_query FROM system.tables"
        " WHERE database = currentDatabase() AND name = {table:String}",
        {"table": table},
    )
    return found[0]["create_table_query"] if found else ""
