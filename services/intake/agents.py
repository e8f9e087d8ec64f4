"""User agent -> browser, OS, device and bot verdict, with a cache in front.

device-detector (Matomo's data) names browsers, systems and devices and knows many
bots; crawler-user-agents (the monperrus list) catches crawlers and HTTP libraries it
does not. device-detector is slow the first time it sees a UA (tens of milliseconds),
and real traffic repeats a few thousand UAs, so an LRU cache keyed on the UA string
sits in front. The cache is saved at stop and loaded at start (``agents.json`` in the
intake's state, owner-only; user agents, no addresses), so a restart does not pay
every known UA again; a saved cache from other parser versions is ignored.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import astuple, dataclass
from importlib.metadata import version
from pathlib import Path

import crawleruseragents
from cachetools import LRUCache
from device_detector import DeviceDetector

__all__ = ["Agent", "AgentParser"]

log = logging.getLogger(__name__)

# Real UAs stay well under this; parsing attacker-sized ones would only burn CPU.
PARSE_CHARS = 1024
_NAME_CHARS = 64


@dataclass(frozen=True)
class Agent:
    """What a user agent tells us, ready for the ``requests`` columns."""

    browser: str
    os: str
    device: str
    is_bot: bool
    bot_reason: str


def _detect(user_agent: str):
    return DeviceDetector(user_agent).parse()


def _value(item) -> str:
    # device-detector returns enums or plain strings depending on the code path.
    return str(getattr(item, "value", item) or "")


class AgentParser:
    """Parses user agents; thread-safe, cached."""

    def __init__(
        self,
        cache_size: int = 20_000,
        is_crawler: Callable[[str], bool] = crawleruseragents.is_crawler,
        detect: Callable[[str], object] = _detect,
    ):
        self._is_crawler = is_crawler
        self._detect = detect
        # device-detector shares parser objects between calls: one parse at a time.
        self._lock = threading.Lock()
        # Two layers: every line asks functools' LRU (in C, thread-safe: a fraction of a
        # microsecond), and its misses ask ``_known``, the UAs parsed or loaded lately,
        # which is what ``save`` writes.
        self._known: LRUCache[str, Agent] = LRUCache(maxsize=cache_size)
        self._known_lock = threading.Lock()  # LRUCache reorders on every get
        self._lookup = functools.lru_cache(maxsize=cache_size)(self._recall)
        self.misses = 0  # UAs actually parsed

    @property
    def hits(self) -> int:
        """Lookups answered without parsing."""
        info = self._lookup.cache_info()
        return info.hits + info.misses - self.misses

    @property
    def cached(self) -> Callable[[str], Agent]:
        """``parse`` without its call, for user agents of at most ``PARSE_CHARS``
        characters (the hot path's own check): the cache itself."""
        return self._lookup

    def parse(self, user_agent: str) -> Agent:
        """The browser, OS, device and bot verdict of a user agent."""
        # Only the first characters are parsed, so only they key the cache: a client
        # sending huge distinct user agents cannot make the cache hold them whole.
        return self._lookup(user_agent[:PARSE_CHARS])

    def _recall(self, sample: str) -> Agent:
        with self._known_lock:
            agent = self._known.get(sample)
        if agent is None:
            self.misses += 1
            agent = self._parse(sample)
            with self._known_lock:
                self._known[sample] = agent
        return agent

    def save(self, path: Path) -> None:
        """Write the cache (owner-only, atomically) for the next process."""
        with self._known_lock:
            entries = [[sample, *astuple(agent)] for sample, agent in self._known.items()]
        data = json.dumps({"versions": _versions(), "agents": entries})
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(data)
        os.replace(tmp, path)

    def load(self, path: Path) -> int:
        """Fill the cache from ``save``'s file; returns how many entries were taken."""
        try:
            data = json.loads(path.read_text())
            if data.get("versions") != _versions():
                return 0  # other parser data: parse afresh
            with self._known_lock:
                for sample, *fields in data["agents"][: self._known.maxsize]:
                    self._known[str(sample)[:PARSE_CHARS]] = Agent(*fields)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, TypeError, KeyError):
            log.warning("saved user agents unreadable, ignoring them")
            return 0
        return len(self._known)

    def _parse(self, sample: str) -> Agent:
        with self._lock:
            found = self._detect(sample)
            dd_bot = bool(found.is_bot())
            if dd_bot:
                browser = str(found.all_details.get("bot", {}).get("name") or found.client_name())
            elif _value(found.client_type()) == "generic":
                # "generic" is device-detector guessing a name from the UA text itself:
                # unbounded junk, not a browser.
                browser = ""
            else:
                browser = found.client_name()
            os_name = found.os_name()
            device = _value(found.device_type()) or "unknown"
        crawler = bool(sample) and self._is_crawler(sample)
        reason = "crawler-list" if crawler else "device-detector" if dd_bot else ""
        return Agent(
            browser=(browser or "")[:_NAME_CHARS],
            os=(os_name or "")[:_NAME_CHARS],
            device=device[:_NAME_CHARS],
            is_bot=crawler or dd_bot,
            bot_reason=reason,
        )

    def warm_up(self) -> None:
        """Load device-detector's rule files now (seconds) instead of on the first line."""
        self._parse("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36")


def _versions() -> dict[str, str]:
    return {name: version(name) for name in ("device_detector", "crawler-user-agents")}
