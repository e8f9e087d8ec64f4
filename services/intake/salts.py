"""One random salt per UTC day, shared through ClickHouse's ``visitor_salts``.

Salts are random, never derived from the date, so nobody can recompute a visitor
hash. The day is the request's, not the clock's: late or backfilled lines hash with
the salt of the day they happened. When two writers create a salt for the same day
at once, both then read the earliest-created one back, so they converge.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import date

from services.core.storage import Storage

from .model import RetryLater

__all__ = ["SaltStore", "SaltUnavailable"]

log = logging.getLogger(__name__)
SALT_BYTES = 32

_SELECT = (
    "SELECT salt FROM visitor_salts WHERE day = {day:Date} ORDER BY created ASC, salt ASC LIMIT 1"
)


class SaltUnavailable(RetryLater):
    """ClickHouse could not be asked for (or given) the day's salt."""


class SaltStore:
    """Daily salts, read from or created in ClickHouse, cached in memory."""

    def __init__(
        self,
        storage: Storage,
        random_bytes: Callable[[int], bytes] = os.urandom,
        cache_days: int = 16,
    ):
        self._storage = storage
        self._random = random_bytes
        self._cache_days = cache_days
        self._cache: OrderedDict[date, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def salt(self, day: date) -> bytes:
        """The salt of UTC ``day``, created if the day has none yet.

        Raises:
            SaltUnavailable: ClickHouse failed; the caller should retry later.
        """
        with self._lock:
            salt = self._cache.get(day)
            if salt is None:
                salt = self._fetch_or_create(day)
                self._cache[day] = salt
                while len(self._cache) > self._cache_days:
                    self._cache.popitem(last=False)
            return salt

    def _fetch_or_create(self, day: date) -> bytes:
        try:
            found = self._storage.rows(_SELECT, {"day": day})
            if not found:
                # Stored as hex: the column is a String and clients decode it as text.
                self._storage.insert(
                    "visitor_salts", [(day, self._random(SALT_BYTES).hex())], ("day", "salt")
                )
                found = self._storage.rows(_SELECT, {"day": day})
                log.info("salt created", extra={"day": day.isoformat()})
            return bytes.fromhex(found[0]["salt"])
        except Exception as exc:  # noqa: BLE001 - storage errors of any client flavour
            raise SaltUnavailable(f"salt for {day}: {type(exc).__name__}") from exc
