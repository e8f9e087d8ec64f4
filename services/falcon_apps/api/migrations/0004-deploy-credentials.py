"""Short-lived push credentials: hashed, scoped to one site, with an expiry."""

from yoyo import step

__depends__ = {"0003-previews"}

step("""
CREATE TABLE deploy_credentials (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
)""")
step("CREATE INDEX deploy_credentials_by_expiry ON deploy_credentials(expires_at)")
