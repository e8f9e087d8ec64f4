"""ClickHouse schema: every table in one place, applied idempotently at start-up.

Migrations are an ordered list of statements; each one must be safe to run again
(``IF NOT EXISTS``), so every process that owns storage runs them all when it starts.
"""

from __future__ import annotations

from .storage import Storage

__all__ = ["REQUEST_COLUMNS", "MIGRATIONS", "migrate"]

# One row per access-log line. Never a raw IP or a raw user agent: visitor_id is a
# keyed hash with a daily salt (see intake.visitor), browser/os/device are parsed.
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

MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS requests (
        site_id LowCardinality(String),
        ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
        host LowCardinality(String),
        method LowCardinality(String),
        path String CODEC(ZSTD(3)),
        status UInt16,
        status_class LowCardinality(String),
        bytes UInt64,
        file_type LowCardinality(String),
        is_page Bool,
        referrer_host String CODEC(ZSTD(3)),
        browser LowCardinality(String),
        os LowCardinality(String),
        device LowCardinality(String),
        country LowCardinality(String),
        is_bot Bool,
        bot_reason LowCardinality(String),
        visitor_id UInt64,
        log_source LowCardinality(String),
        request_id String
    )
    ENGINE = MergeTree
    PARTITION BY toYYYYMM(ts)
    ORDER BY (site_id, toDate(ts), is_bot, is_page, visitor_id, ts)
    """,
    """
    CREATE TABLE IF NOT EXISTS visitor_salts (
        day Date,
        salt String,
        created DateTime64(6, 'UTC') DEFAULT now64(6)
    )
    -- Plain MergeTree: concurrent writers may each insert a salt for a day, and every
    -- reader picks the earliest one, so no merge may ever drop rows here.
    ENGINE = MergeTree
    ORDER BY day
    """,
)


def migrate(storage: Storage) -> None:
    """Apply every migration; safe to call from any number of start-ups."""
    for statement in MIGRATIONS:
        storage.command(statement)
