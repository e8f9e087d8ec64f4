-- The intake inserts into requests_ingest (schema.INGEST_COLUMNS, in that order), a Null
-- table that stores nothing: its view hands each block on to requests, whose DEFAULTs
-- derive the stored columns from the raw ones (002). Why not insert into requests
-- directly: parsing text into LowCardinality columns costs about 2 µs a row more than
-- into String (measured on chDB 26.9), while the view converts whole columns at once.
-- Deduplication by insert_deduplication_token happens at requests, through the view
-- (the intake sets deduplicate_blocks_in_dependent_materialized_views).
CREATE TABLE IF NOT EXISTS requests_ingest (
    site_id String,
    ts_ms UInt64,
    host String,
    method String,
    raw_path String,
    status UInt16,
    bytes UInt64,
    referrer String,
    browser String,
    os String,
    device String,
    is_bot Bool,
    bot_reason String,
    country String,
    visitor_id UInt64,
    log_source String,
    request_id String,
    range_request Bool
)
ENGINE = Null;

-- The engine expands SELECT * when the view is made: a migration that adds an ingest
-- column must also drop and recreate this view.
CREATE MATERIALIZED VIEW IF NOT EXISTS requests_ingest_to_requests TO requests
AS SELECT * FROM requests_ingest;
