"""Deploy records with a state machine, and an explicit production live pointer.

SQLite cannot relax NOT NULL in place, so ``deploys`` is rebuilt: a queued deploy has no
release or counts yet. Old rows become production deploys in state ``live``, numbered
per site in insertion order, served on the site's hostname; each site's pointer goes to
the deploy that was current under 0.1.0 (the newest recorded one).
"""

from yoyo import step

__depends__ = {"0001-initial-schema"}

step("""
CREATE TABLE deploys_v2 (
    id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    number INTEGER NOT NULL CHECK (number >= 1),
    context TEXT NOT NULL CHECK (context IN ('production', 'preview')),
    branch TEXT,
    hostname TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    author TEXT,
    message TEXT,
    state TEXT NOT NULL CHECK (
        state IN ('queued', 'building', 'publishing', 'live', 'failed', 'superseded')
    ),
    step TEXT CHECK (step IN ('checkout', 'build', 'publish', 'activate', 'record')),
    reason TEXT,
    step_seconds TEXT NOT NULL DEFAULT '{}',
    file_count INTEGER CHECK (file_count >= 0),
    bytes INTEGER CHECK (bytes >= 0),
    generator TEXT,
    release TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    duration_seconds REAL CHECK (duration_seconds >= 0),
    UNIQUE (site_id, number)
)""")
step("""
INSERT INTO deploys_v2 (
    id, site_id, number, context, branch, hostname, commit_sha, state, step,
    file_count, bytes, release, created_at, finished_at
)
SELECT
    d.id,
    d.site_id,
    (SELECT COUNT(*) FROM deploys e WHERE e.site_id = d.site_id AND e.seq <= d.seq),
    'production',
    NULL,
    COALESCE((SELECT MIN(h.hostname) FROM hostnames h WHERE h.site_id = d.site_id), ''),
    d.commit_sha,
    CASE d.status WHEN 'live' THEN 'live' ELSE 'failed' END,
    'record',
    d.file_count,
    d.bytes,
    d.release,
    d.created_at,
    d.created_at
FROM deploys d
ORDER BY d.seq""")
step("DROP TABLE deploys")
step("ALTER TABLE deploys_v2 RENAME TO deploys")
step("CREATE INDEX deploys_by_site_context ON deploys(site_id, context, number)")
step("ALTER TABLE sites ADD COLUMN live_deploy_id TEXT REFERENCES deploys(id) ON DELETE SET NULL")
step("""
UPDATE sites SET live_deploy_id = (
    SELECT d.id FROM deploys d WHERE d.site_id = sites.id ORDER BY d.number DESC LIMIT 1
)""")
