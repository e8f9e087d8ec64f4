-- The schema of the first release, unchanged, so a database made by it is at version 1.
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
ORDER BY (site_id, toDate(ts), is_bot, is_page, visitor_id, ts);

CREATE TABLE IF NOT EXISTS visitor_salts (
    day Date,
    salt String,
    created DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
ORDER BY day;
