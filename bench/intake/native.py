"""Baseline (a): the embedded engine's own ingestion of the same records from a file.

Runs in its own process (chDB allows one engine per process and per data path), on a
fresh data path: creates a MergeTree table with the Bunny fields, then times one
``INSERT INTO ... SELECT ... FROM file(..., JSONEachRow)`` of the records' JSON lines
and checks the row count. Prints one JSON object on stdout.

    python -m bench.intake.native LINES.jsonl DATA_DIR
"""

from __future__ import annotations

import json
import sys
import time

__all__ = ["CREATE", "INSERT", "measure"]

# The Bunny fields, typed as in the intake's own table (LowCardinality for the small
# sets, the millisecond timestamp as DateTime64(3)), ordered by host like its site id.
CREATE = """
CREATE TABLE bench.bunny (
    ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    ServerId UInt32, IsValid Bool, PullZoneId UInt64, IsSSL Bool,
    Host LowCardinality(String), Protocol LowCardinality(String), Scheme LowCardinality(String),
    UserAgent String, RequestId String, HeaderRange String, Country LowCardinality(String),
    PathAndQuery String CODEC(ZSTD(3)), ServerZone LowCardinality(String), Status UInt16,
    BytesSent UInt64, BodyBytesSent UInt64, GzipRatio Float32, Cached Bool,
    RemoteIp String, Referer String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (Host, toDate(ts), ts)
"""

# The file's structure is given, so no schema-inference pass is timed.
INSERT = """
INSERT INTO bench.bunny
SELECT fromUnixTimestamp64Milli(Timestamp, 'UTC') AS ts, ServerId, IsValid, PullZoneId, IsSSL,
       Host, Protocol, Scheme, UserAgent, RequestId, HeaderRange, Country, PathAndQuery,
       ServerZone, Status, BytesSent, BodyBytesSent, GzipRatio, Cached, RemoteIp, Referer
FROM file('{path}', 'JSONEachRow',
  'ServerId UInt32, IsValid Bool, PullZoneId UInt64, IsSSL Bool, Host String,
   Protocol String, Scheme String, UserAgent String, RequestId String, HeaderRange String,
   Country String, PathAndQuery String, ServerZone String, Status UInt16, BytesSent UInt64,
   BodyBytesSent UInt64, Timestamp Int64, GzipRatio Float32, Cached Bool, RemoteIp String,
   Referer String')
"""


def measure(jsonl: str, data_dir: str) -> dict:
    """Create the table, time the insert of every line, count the rows."""
    from chdb import session

    s = session.Session(data_dir)
    try:
        s.query("CREATE DATABASE IF NOT EXISTS bench")
        s.query(CREATE)
        statement = INSERT.format(path=jsonl.replace("'", "\\'"))
        started = time.perf_counter()
        cpu = time.process_time()
        s.query(statement)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu
        rows = int(str(s.query("SELECT count() FROM bench.bunny", "CSV")).strip())
        distinct = int(str(s.query("SELECT uniqExact(RequestId) FROM bench.bunny", "CSV")).strip())
    finally:
        s.close()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "rows": rows,
        "distinct_request_ids": distinct,
        "create": " ".join(CREATE.split()),
        "statement": " ".join(statement.split()),
    }


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2])))
