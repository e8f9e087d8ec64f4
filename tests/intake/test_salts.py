"""SaltStore's lifetime rules against a small fake storage: which days hash with a stored
salt, which with a process-local one, and what a failing sweep does."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

from services.intake.salts import GRACE_DAYS, SaltStore

TODAY = date(2026, 3, 10)


def at(day: date, hour: int = 12) -> float:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, day: date):
        self.now = at(day)

    def __call__(self) -> float:
        return self.now


class FakeStorage:
    """Salts by day; no DDL at all, so every sweep fails (and must not matter)."""

    def __init__(self):
        self.salts: dict[date, str] = {}
        self.sweeps = 0

    def rows(self, sql, parameters=None):
        if parameters is None:
            self.sweeps += 1
            raise ConnectionError("no system tables here")
        salt = self.salts.get(parameters["day"])
        return [{"salt": salt}] if salt else []

    def insert(self, table, rows, columns):
        for day, salt in rows:
            self.salts.setdefault(day, salt)


def counter_bytes():
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def test_the_grace_is_the_next_utc_day():
    assert GRACE_DAYS == 1
    storage = FakeStorage()
    store = SaltStore(storage, clock=Clock(TODAY))
    for day in (TODAY - timedelta(days=1), TODAY, TODAY + timedelta(days=1)):
        assert store.salt(day) == bytes.fromhex(storage.salts[day])
    assert set(storage.salts) == {TODAY - timedelta(days=1), TODAY, TODAY + timedelta(days=1)}


def test_a_day_past_its_grace_hashes_with_a_salt_that_is_never_stored():
    storage = FakeStorage()
    old = TODAY - timedelta(days=2)
    one = SaltStore(storage, random_bytes=counter_bytes(), clock=Clock(TODAY))
    salt = one.salt(old)
    assert len(salt) == 32 and one.salt(old) == salt  # stable within the process
    assert old not in storage.salts
    far_future = TODAY + timedelta(days=2)
    assert one.salt(far_future) != salt and far_future not in storage.salts
    assert storage.salts == {}


def test_midnight_forgets_the_salt_of_the_day_before_yesterday():
    storage = FakeStorage()
    clock = Clock(TODAY)
    store = SaltStore(storage, clock=clock)
    salt = store.salt(TODAY)
    clock.now = at(TODAY + timedelta(days=1), hour=0)
    assert store.salt(TODAY) == salt  # still within its grace
    clock.now = at(TODAY + timedelta(days=2), hour=0)
    late = store.salt(TODAY)
    assert late != salt and len(late) == 32


def test_a_failing_sweep_never_stops_salts_and_is_retried_a_minute_later():
    storage = FakeStorage()
    clock = Clock(TODAY)
    store = SaltStore(storage, clock=clock)
    store.salt(TODAY)
    assert storage.sweeps == 1
    store.salt(TODAY)
    clock.now += 30
    store.salt(TODAY)
    assert storage.sweeps == 1
    clock.now += 31
    store.salt(TODAY)
    assert storage.sweeps == 2
