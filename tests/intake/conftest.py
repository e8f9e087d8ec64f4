"""Shared fixtures of the intake tests."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from services.core import storage as storage_module
from services.core.metrics import IntakeMetrics
from services.core.schema import migrate


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry) -> IntakeMetrics:
    return IntakeMetrics(registry)


@pytest.fixture(scope="session")
def chdb_storage(tmp_path_factory):
    """The one chDB engine of this test process (chDB allows one per process).

    NOTE(intake): reuses an engine another room's fixture already opened, since a
    second data path in the same process would fail; a root conftest should own this.
    """
    for url, opened in list(storage_module._opened.items()):
        if url.startswith("chdb://"):
            migrate(opened)
            return opened
    opened = storage_module.open_storage("chdb://" + str(tmp_path_factory.mktemp("ch")))
    migrate(opened)
    return opened


@pytest.fixture
def sample(registry):
    """Read a metric value (0 when the series does not exist yet)."""

    def read(name: str, **labels) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    return read
