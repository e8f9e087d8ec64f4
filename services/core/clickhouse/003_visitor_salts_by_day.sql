-- One partition per day, so an expired day's salt can be removed from disk on its own
-- (services/intake/salts.py detaches and drops it); outdated parts go after a minute.
-- The copy and the exchange are atomic for readers; run once, like every migration.
CREATE TABLE IF NOT EXISTS visitor_salts_by_day (
    day Date,
    salt String,
    created DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY day
SETTINGS old_parts_lifetime = 60;

INSERT INTO visitor_salts_by_day SELECT day, salt, created FROM visitor_salts;

EXCHANGE TABLES visitor_salts AND visitor_salts_by_day;

DROP TABLE visitor_salts_by_day SYNC;
