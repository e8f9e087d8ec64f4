"""Preview branches: one hostname and one live pointer per (site, branch)."""

from yoyo import step

__depends__ = {"0002-deploy-records"}

step("""
CREATE TABLE previews (
    site_id TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    branch TEXT NOT NULL,
    hostname TEXT NOT NULL UNIQUE REFERENCES hostnames(hostname),
    live_deploy_id TEXT REFERENCES deploys(id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (site_id, branch)
)""")
