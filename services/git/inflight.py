"""Deploys in flight, on disk: after a crash, the next git process tells the api which died.

``DeployStarter`` enters each deploy once the api has its record, and the queue leaves
it once the record is final. An entry is a small file holding what the api needs to mark
the deploy (its site, id and short-lived credential), kept under an exclusive ``flock``
while its process lives: the kernel drops the lock when the process dies however it
dies, so ``recover`` (at git's start) tells a dead receiver's entries from those of a
live one (another gunicorn worker) without guessing from pids or ages.

A recovered deploy is marked ``failed`` with reason ``interrupted``; what the site
serves and the api's live pointer are left alone (the previous live deploy stays live).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from services.core.errors import EcstaticError, Unavailable

from .deploy_api import DeployApi

__all__ = ["INTERRUPTED", "InFlight"]

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"
_SUFFIX = ".deploy"
_LINES = [
    "error: deploy failed: the git process running it stopped (a crash or a kill)",
    "error: the live site was not changed by this deploy; push again to deploy it",
]


class InFlight:
    """Entries of the deploys this machine's git processes are running."""

    def __init__(self, directory: Path):
        """Keep the entries in ``directory`` (owner-only: they hold credentials)."""
        self._directory = Path(directory)
        self._held: dict[str, int] = {}  # deploy id -> the locked descriptor

    def enter(self, site_id: str, deploy_id: str, credential: str) -> None:
        """Record a deploy as running here; a failure only costs the crash report."""
        try:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self._path(deploy_id)
            # Locked and written under a name recovery ignores, then renamed: a recovery
            # running at that moment never finds it unlocked or empty.
            temp = path.with_suffix(".tmp")
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            body = {"site_id": site_id, "deploy_id": deploy_id, "credential": credential}
            os.write(fd, json.dumps(body).encode())
            os.rename(temp, path)
        except OSError:
            log.warning("in-flight deploy not recorded", extra={"deploy": deploy_id})
            return
        self._held[deploy_id] = fd

    def leave(self, deploy_id: str) -> None:
        """The deploy's record is final: forget it."""
        fd = self._held.pop(deploy_id, None)
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._path(deploy_id))
        os.close(fd)

    def recover(self, api: DeployApi) -> int:
        """Mark the deploys of dead git processes ``failed`` (``interrupted``).

        Entries still locked belong to a live process and are left alone; an entry the
        api could not be reached for stays, for the next attempt.

        Returns:
            How many entries wait for the api (0: nothing left to do).
        """
        try:
            paths = sorted(self._directory.glob(f"*{_SUFFIX}"))
        except OSError:
            return 0
        waiting = 0
        for path in paths:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive and running it
                entry = _read(fd)
                if entry is not None and not _mark(api, entry):
                    waiting += 1
                    continue
                with contextlib.suppress(OSError):
                    os.unlink(path)
            finally:
                os.close(fd)
        return waiting

    def recover_in_background(self, api: DeployApi, seconds: float = 300.0) -> threading.Thread:
        """``recover`` now and, while the api is unreachable (starting too), every second."""
        retrying = Retrying(
            stop=stop_after_delay(seconds),
            wait=wait_fixed(1.0),
            retry=retry_if_result(lambda waiting: waiting > 0),
            retry_error_callback=lambda state: state.outcome.result(),
        )

        def run() -> None:
            try:
                left = retrying(self.recover, api)
            except Exception:  # noqa: BLE001 - a report of a crash must not crash git
                log.exception("interrupted deploys not recovered")
                return
            if left:
                log.warning("interrupted deploys left unmarked", extra={"deploys": left})

        thread = threading.Thread(target=run, name="inflight-recover", daemon=True)
        thread.start()
        return thread

    def _path(self, deploy_id: str) -> Path:
        return self._directory / f"{deploy_id}{_SUFFIX}"


def _read(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 1 << 16, 0)
        entry = json.loads(data)
        if all(isinstance(entry.get(k), str) for k in ("site_id", "deploy_id", "credential")):
            return entry
    except (OSError, ValueError, AttributeError):
        pass
    log.warning("unreadable in-flight deploy entry dropped")
    return None


def _mark(api: DeployApi, entry: dict[str, Any]) -> bool:
    """Mark one deploy; False when the api could not be reached (try again later)."""
    site_id, deploy_id, credential = entry["site_id"], entry["deploy_id"], entry["credential"]
    extra = {"site_id": site_id, "deploy": deploy_id}
    try:
        deploy = api.get(credential, site_id, deploy_id)
        if deploy.get("state") in ("live", "failed", "superseded"):
            return True  # finished after all (or a newer push superseded it)
        with contextlib.suppress(EcstaticError):  # the log is best effort; the state is not
            api.append_log(credential, site_id, deploy_id, _LINES)
        api.update(credential, site_id, deploy_id, {"state": "failed", "reason": INTERRUPTED})
    except Unavailable:
        return False
    except EcstaticError as exc:
        # An expired credential (the process stayed down longer than its lifetime)
        # leaves the record as it was: a newer push of the branch supersedes it.
        log.warning("interrupted deploy not marked", extra={**extra, "reason": str(exc)})
        return True
    log.info("interrupted deploy marked failed", extra=extra)
    return True
