"""One random salt per UTC day, shared through ClickHouse's ``visitor_salts``, destroyed
after its day.

Salts are random, never derived from the date, so nobody can recompute a visitor
hash. The day is the request's, not the clock's: late or backfilled lines hash with
the salt of the day they happened. When two writers create a salt for the same day
at once, both then read the earliest-created one back, so they converge.

**Lifetime.** Day D's salt lives until the end of UTC day D + ``grace_days`` (default 1:
the end of the next day), so lines that arrive late (a Bunny forwarder catching up, an
intake restarted after midnight) still hash with their day's salt. After that it is
destroyed, on disk as in memory: ``visitor_salts`` is partitioned by day (ClickHouse
migration 003), and a day's
partition is detached and its detached parts dropped, which removes the part
directories at once (``ALTER TABLE ... DROP PARTITION`` or ``DELETE`` would leave the
old parts on disk for ``old_parts_lifetime``, 8 minutes by default). The store sweeps
when it first runs and again at each UTC midnight it sees; ``destroy_expired`` runs a
sweep on demand.

**A line whose day's salt is gone** (older than the grace, or dated more than
``grace_days`` ahead) is still stored: it is hashed with a random salt kept only in
this process's memory for that day and never written anywhere. It still counts as a
visitor, distinct per (site, IP, user agent) within this process and UTC day, and can
never be linked to a visitor hashed with a real salt, nor recomputed later.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, timedelta

from services.core.storage import Storage

from .model import RetryLater

__all__ = ["GRACE_DAYS", "SaltStore", "SaltUnavailable"]

log = logging.getLogger(__name__)
SALT_BYTES = 32
GRACE_DAYS = 1
_SWEEP_RETRY_SECONDS = 60.0
_EPOCH = date(1970, 1, 1)

_SELECT = (
    "SELECT salt FROM visitor_salts WHERE day = {day:Date} ORDER BY created ASC, salt ASC LIMIT 1"
)
_PARTITIONS = (
    "SELECT DISTINCT partition_id FROM system.parts "
    "WHERE database = currentDatabase() AND table = 'visitor_salts' AND active"
)
_DETACHED = (
    "SELECT DISTINCT partition_id FROM system.detached_parts "
    "WHERE database = currentDatabase() AND table = 'visitor_salts'"
)


class SaltUnavailable(RetryLater):
    """ClickHouse could not be asked for (or given) the day's salt."""


def _partition_day(partition_id: str) -> date | None:
    # A Date partition's id is YYYYMMDD; anything else is not ours to drop (and the
    # id goes into a statement, so it must be exactly digits).
    if len(partition_id) != 8 or not partition_id.isdigit():
        return None
    try:
        return date(int(partition_id[:4]), int(partition_id[4:6]), int(partition_id[6:8]))
    except ValueError:
        return None


class SaltStore:
    """Daily salts, read from or created in ClickHouse, cached in memory, destroyed
    ``grace_days`` after their day."""

    def __init__(
        self,
        storage: Storage,
        random_bytes: Callable[[int], bytes] = os.urandom,
        cache_days: int = 16,
        grace_days: int = GRACE_DAYS,
        clock: Callable[[], float] = time.time,
    ):
        self._storage = storage
        self._random = random_bytes
        self._cache_days = cache_days
        self._grace = timedelta(days=grace_days)
        self._clock = clock
        self._cache: OrderedDict[date, bytes] = OrderedDict()
        self._ephemeral: OrderedDict[date, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._swept_day = -1  # days since the epoch of the last complete sweep
        self._next_try = 0.0

    def salt(self, day: date) -> bytes:
        """The salt of UTC ``day``: its stored salt (created if the day has none yet)
        while the day is live, else a process-local one (see the module docstring).

        Raises:
            SaltUnavailable: ClickHouse failed; the caller should retry later.
        """
        with self._lock:
            today = self._maybe_sweep()
            if not today - self._grace <= day <= today + self._grace:
                return self._remember(self._ephemeral, day, lambda: self._random(SALT_BYTES))
            return self._remember(self._cache, day, lambda: self._fetch_or_create(day))

    def destroy_expired(self) -> list[date]:
        """Destroy every stored salt whose day is past its grace; the days destroyed.

        Raises:
            SaltUnavailable: ClickHouse failed; nothing is lost, the next sweep retries.
        """
        with self._lock:
            return self._sweep(self._today())

    def _today(self) -> date:
        return _EPOCH + timedelta(days=int(self._clock() // 86400))

    def _remember(self, cache: OrderedDict, day: date, make: Callable[[], bytes]) -> bytes:
        salt = cache.get(day)
        if salt is None:
            salt = cache[day] = make()
            while len(cache) > self._cache_days:
                cache.popitem(last=False)
        return salt

    def _maybe_sweep(self) -> date:
        now = self._clock()
        today = _EPOCH + timedelta(days=int(now // 86400))
        if (today - _EPOCH).days != self._swept_day and now >= self._next_try:
            try:
                self._sweep(today)
            except SaltUnavailable as exc:
                # Salts keep working; the old ones are only destroyed a little later.
                self._next_try = now + _SWEEP_RETRY_SECONDS
                log.warning("salt sweep failed", extra={"error": str(exc)})
        return today

    def _sweep(self, today: date) -> list[date]:
        cutoff = today - self._grace
        for cache in (self._cache, self._ephemeral):
            for day in [d for d in cache if d < cutoff]:
                del cache[day]  # the last reference this process holds
        try:
            destroyed = self._drop_partitions_before(cutoff)
        except Exception as exc:  # noqa: BLE001 - storage errors of any client flavour
            raise SaltUnavailable(f"salt sweep: {type(exc).__name__}") from exc
        self._swept_day = (today - _EPOCH).days
        if destroyed:
            log.info("salts destroyed", extra={"days": [d.isoformat() for d in destroyed]})
        return destroyed

    def _drop_partitions_before(self, cutoff: date) -> list[date]:
        active = {row["partition_id"] for row in self._storage.rows(_PARTITIONS)}
        expired = sorted(
            pid for pid in active if (day := _partition_day(pid)) is not None and day < cutoff
        )
        for pid in expired:
            self._storage.command(f"ALTER TABLE visitor_salts DETACH PARTITION ID '{pid}'")
        # Also what an earlier sweep detached but could not drop (a crash in between).
        detached = {row["partition_id"] for row in self._storage.rows(_DETACHED)}
        for pid in sorted(detached):
            day = _partition_day(pid)
            if day is not None and day < cutoff:
                self._storage.command(
                    f"ALTER TABLE visitor_salts DROP DETACHED PARTITION ID '{pid}' "
                    "SETTINGS allow_drop_detached = 1"
                )
        return [d for d in map(_partition_day, expired) if d is not None]

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
