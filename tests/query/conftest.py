"""Fixtures for the query room: fake authorizer and store, and one chDB engine per session."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from falcon import testing
from prometheus_client import CollectorRegistry
from query_fakes import OTHER_SITE, SITE, TOKEN, FakeAuthorizer, FakeStore, FixedClock

from services.core import storage as core_storage
from services.core.metrics import HttpMetrics
from services.core.schema import migrate
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
def chdb_url(tmp_path_factory) -> str:
    """The one chDB data path of this test process, opened and migrated once.

    chDB refuses a second data path in a process. If another room's fixture opened one
    first in this session, share it: tests isolate themselves by distinct site ids.
    """
    # NOTE(query): reads storage's private registry; a shared fixture in tests/conftest.py
    # would make this unnecessary (asked of the lead).
    opened = [url for url in core_storage._opened if url.startswith("chdb://")]
    url = opened[0] if opened else "chdb://" + str(tmp_path_factory.mktemp("ch"))
    migrate(core_storage.open_storage(url))
    return url


@pytest.fixture(scope="session")
def ch_storage(chdb_url):
    return core_storage.open_storage(chdb_url)
