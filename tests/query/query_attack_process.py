"""``ecstatic serve intake,query`` plus a steady insert stream, for the attack test.

Runs the real process (gunicorn gthread worker, the intake and query rooms, one chDB
engine) and, in the same worker, a thread that inserts a batch through the process's
``Storage`` every ``ECSTATIC_TEST_INSERT_EVERY`` seconds and appends each insert's
latency to ``$ECSTATIC_HOME/inserts.jsonl``: the intake's own write path, timed from
inside, without depending on a log source. Run as ``python tests/query/query_attack_process.py``.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.core.config import Config  # noqa: E402
from services.core.runtime import Context  # noqa: E402
from services.core.schema import REQUEST_COLUMNS  # noqa: E402
from services.server import ProcessServer  # noqa: E402

ROWS_PER_BATCH = 200


def batch(site: str) -> list[list]:
    now = datetime.now(UTC)
    row = {
        "site_id": site, "ts": now, "host": "attack.localhost", "method": "GET", "path": "/",
        "status": 200, "status_class": "2xx", "bytes": 1, "file_type": "page", "is_page": True,
        "referrer_host": "", "browser": "Chrome", "os": "Linux", "device": "desktop",
        "country": "DE", "is_bot": False, "bot_reason": "", "visitor_id": 0,
        "log_source": "caddy", "request_id": "",
    }  # fmt: skip
    rows = []
    for n in range(ROWS_PER_BATCH):
        row.update(visitor_id=n, request_id=secrets.token_hex(8))
        rows.append([row[column] for column in REQUEST_COLUMNS])
    return rows


def insert_forever(config: Config, site: str, every: float, out: Path) -> None:
    storage = Context(config).storage()
    with out.open("a", buffering=1) as log:
        while True:
            rows = batch(site)
            started = time.perf_counter()
            storage.insert("requests", rows, REQUEST_COLUMNS)
            took = time.perf_counter() - started
            log.write(json.dumps({"at": time.time(), "seconds": took, "rows": len(rows)}) + "\n")
            time.sleep(max(0.0, every - took))


class AttackedServer(ProcessServer):
    """The real server, with the insert stream started in the worker beside the rooms."""

    def load(self):
        app = super().load()
        thread = threading.Thread(
            target=insert_forever,
            args=(
                self.config,
                os.environ["ECSTATIC_TEST_INSERT_SITE"],
                float(os.environ.get("ECSTATIC_TEST_INSERT_EVERY", "0.2")),
                self.config.home / "inserts.jsonl",
            ),
            daemon=True,
        )
        thread.start()
        return app


if __name__ == "__main__":
    AttackedServer(["intake", "query"], Config.from_env()).run()
