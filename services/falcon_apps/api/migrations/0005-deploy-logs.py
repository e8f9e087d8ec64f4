"""Build logs: the lines kept per deploy (head and tail) and their running totals."""

from yoyo import step

__depends__ = {"0004-deploy-credentials"}

step("""
CREATE TABLE deploy_logs (
    deploy_id TEXT PRIMARY KEY REFERENCES deploys(id) ON DELETE CASCADE,
    next_n INTEGER NOT NULL DEFAULT 0,
    lines INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    head_lines INTEGER NOT NULL DEFAULT 0,
    head_bytes INTEGER NOT NULL DEFAULT 0,
    head_closed INTEGER NOT NULL DEFAULT 0,
    omitted INTEGER NOT NULL DEFAULT 0
)""")
step("""
CREATE TABLE deploy_log_lines (
    deploy_id TEXT NOT NULL REFERENCES deploy_logs(deploy_id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    size INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (deploy_id, n)
)""")
