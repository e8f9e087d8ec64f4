"""Fixtures for the api room: a real SQLite store on a tmp file, a deterministic clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from falcon import testing
from prometheus_client import CollectorRegistry

from services.core.config import Config
from services.core.metrics import HttpMetrics
from services.falcon_apps.api.app import create_app
from services.falcon_apps.api.store import MetadataStore


class FakeClock:
    """Starts at a fixed instant and moves one second per reading (or as told)."""

    def __init__(self, start: datetime = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)):
        self.now = start
        self.step = timedelta(seconds=1)

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


@pytest.fixture
def config(tmp_path):
    return Config.from_env({"ECSTATIC_HOME": str(tmp_path)})


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(config, clock):
    tokens = (f"ecs_test-token-{n:04d}-{'x' * 20}" for n in itertools.count())
    store = MetadataStore(config.api_db, clock=clock, token_factory=lambda: next(tokens))
    yield store
    store.close()


@pytest.fixture
def registry():
    return CollectorRegistry()


class RecordingPurger:
    """Remembers the sites it was asked to purge."""

    def __init__(self):
        self.sites = []

    def purge(self, site):
        self.sites.append(site)


@pytest.fixture
def purger():
    return RecordingPurger()


@pytest.fixture
def client(store, config, registry, purger):
    return testing.TestClient(create_app(store, config, HttpMetrics(registry), purger=purger))


@pytest.fixture
def alice(store):
    user, token = store.create_user("alice")
    return {**user, "token": token, "headers": {"Authorization": f"Bearer {token}"}}


@pytest.fixture
def bob(store):
    user, token = store.create_user("bob")
    return {**user, "token": token, "headers": {"Authorization": f"Bearer {token}"}}
