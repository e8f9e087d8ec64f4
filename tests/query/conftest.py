"""Fixtures for the query room: fake authorizer and store, and one chDB engine per session."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from falcon import testing
from prometheus_client import CollectorRegistry
from query_fakes import OTHER_SITE, SITE, TOKEN, FakeAuthorizer, FakeStore, FixedClock

from services.core.metrics import HttpMetrics
from services.falcon_apps.query.app import create_app


@pytest.fixture
def store():
    return FakeStore()


@pytest.fixture
def authorizer():
    return FakeAuthorizer({TOKEN: "alice", "ecs_bob": "bob"}, {SITE: "alice", OTHER_SITE: "bob"})


@pytest.fixture
def clock():
    return FixedClock(datetime(2026, 10, 26, 10, 0, tzinfo=UTC))


@pytest.fixture
def client(store, authorizer, clock):
    app = create_app(store, authorizer, HttpMetrics(CollectorRegistry()), clock=clock)
    return testing.TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture(scope="session")
def ch_storage(chdb_storage):
    return chdb_storage
