"""Shared fixtures of the intake tests."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from services.core.metrics import IntakeMetrics


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry) -> IntakeMetrics:
    return IntakeMetrics(registry)


@pytest.fixture
def sample(registry):
    """Read a metric value (0 when the series does not exist yet)."""

    def read(name: str, **labels) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    return read
