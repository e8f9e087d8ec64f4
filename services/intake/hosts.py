"""Hostname -> site id, from the api's ``GET /internal/hostmap``.

The map is cached in memory and on disk (so a restart works while the api is down)
and refreshed on a miss at most every ``min_refresh_seconds``. A miss has two
meanings, and telling them apart is what keeps lines from being lost:

- the map was just fetched and the host is not in it: not an Ecstatic site, the
  line is dropped (``None``);
- the map could not be fetched: the host may belong to a site created since the last
  fetch, so ``HostsUnavailable`` tells the caller to keep the line and retry later.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from .model import RetryLater
from .parse import clean_host

__all__ = ["HostResolver", "HostsUnavailable"]

log = logging.getLogger(__name__)


class HostsUnavailable(RetryLater):
    """The host is unknown and the host map cannot be refreshed right now."""


class HostResolver:
    """Thread-safe, cached view of the api's host map."""

    def __init__(
        self,
        api_url: str,
        state_dir: Path,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_refresh_seconds: float = 2.0,
        max_age_seconds: float = 60.0,
        timeout: float = 2.0,
    ):
        self._url = api_url.rstrip("/") + "/internal/hostmap"
        self._file = Path(state_dir) / "hostmap.json"
        self._session = session or requests.Session()
        self._clock = clock
        self._min_refresh = min_refresh_seconds
        self._max_age = max_age_seconds
        self._timeout = timeout
        self._lock = threading.Lock()
        self._hosts: dict[str, str] | None = None
        self._last_attempt: float | None = None
        self._last_ok = False
        self._fetched_at: float | None = None

    def stale(self) -> bool:
        """True when ``known`` would fetch the map first (never loaded, or old)."""
        with self._lock:
            return self._hosts is None or self._due(self._max_age)

    def known(self) -> dict[str, str]:
        """The current map (clean host -> site id), refreshed when it is old.

        For the hot path: look hosts up here, and call ``site_id`` only on a miss.
        """
        with self._lock:
            if self._hosts is None:
                self._hosts = self._load()
            if self._due(self._max_age):
                self._refresh()
            return self._hosts

    def site_id(self, host: str, since: float | None = None) -> str | None:
        """The site serving ``host``, or None when a map fetched after ``since`` (this
        clock's time the line arrived; default now) lacks it: a site created a moment
        before its first line is never mistaken for a stranger.

        Raises:
            HostsUnavailable: unknown host, and no map fetched since it arrived (the map
                cannot be fetched, or was fetched too recently to ask again): retry later.
        """
        host = clean_host(host)
        since = self._clock() if since is None else since
        with self._lock:
            if self._hosts is None:
                self._hosts = self._load()
            site = self._hosts.get(host)
            # A hit refreshes now and then (sites go away); a miss refreshes soon.
            if self._due(self._min_refresh if site is None else self._max_age):
                self._refresh()
                site = self._hosts.get(host)
            if site is not None:
                return site
            if self._last_ok and self._fetched_at is not None and self._fetched_at >= since:
                return None
            raise HostsUnavailable(host)

    def _due(self, interval: float) -> bool:
        return self._last_attempt is None or self._clock() - self._last_attempt >= interval

    def _refresh(self) -> None:
        started = self._last_attempt = self._clock()
        try:
            response = self._session.get(self._url, timeout=self._timeout)
            response.raise_for_status()
            hosts = response.json()["hosts"]
            if not isinstance(hosts, dict):
                raise ValueError("hosts is not an object")
            fresh = {clean_host(str(name)): str(site) for name, site in hosts.items()}
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            if self._last_ok or self._fetched_at is None:
                log.warning("hostmap refresh failed", extra={"error": type(exc).__name__})
            self._last_ok = False
            return
        if not self._last_ok:
            log.info("hostmap refreshed", extra={"hosts": len(fresh)})
        self._last_ok = True
        self._fetched_at = started  # a site made during the fetch may be missing from it
        if fresh != self._hosts:
            self._hosts = fresh
            self._save(fresh)

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self._file.read_text())
            return {str(name): str(site) for name, site in data["hosts"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            log.warning("saved hostmap unreadable, ignoring it", extra={"file": str(self._file)})
            return {}

    def _save(self, hosts: dict[str, str]) -> None:
        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._file.with_name(self._file.name + ".tmp")
            tmp.write_text(json.dumps({"hosts": hosts}, sort_keys=True))
            os.replace(tmp, self._file)
        except OSError as exc:
            log.warning("hostmap not saved", extra={"error": str(exc)})
