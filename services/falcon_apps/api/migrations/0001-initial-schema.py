"""Release 0.1.0's schema, exactly as ``db.SCHEMA`` created it.

Every statement says IF NOT EXISTS, so on a database made before migrations existed this
step changes nothing and only records that 0001 is applied.
"""

from yoyo import step

step("""
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
)""")
step("""
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used_at TEXT
)""")
step("""
CREATE TABLE IF NOT EXISTS sites (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL
)""")
step("CREATE INDEX IF NOT EXISTS sites_by_user ON sites(user_id)")
step("""
CREATE TABLE IF NOT EXISTS hostnames (
    hostname TEXT PRIMARY KEY,
    site_id TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE
)""")
step("CREATE INDEX IF NOT EXISTS hostnames_by_site ON hostnames(site_id)")
step("""
CREATE TABLE IF NOT EXISTS deploys (
    -- seq orders deploys by insertion: the newest recorded deploy is the live one,
    -- whatever the wall clock did in between.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    site_id TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    commit_sha TEXT NOT NULL,
    release TEXT NOT NULL,
    file_count INTEGER NOT NULL CHECK (file_count >= 0),
    bytes INTEGER NOT NULL CHECK (bytes >= 0),
    status TEXT NOT NULL,
    created_at TEXT NOT NULL
)""")
step("CREATE INDEX IF NOT EXISTS deploys_by_site ON deploys(site_id, seq)")
