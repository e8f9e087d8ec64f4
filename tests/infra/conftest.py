"""Fixtures of the infra tests (mocks and helpers live in ``infra_mocks``).

Mocks are set here, before any test module imports a component, and again per test by
the ``pulumi_mocks`` fixture so each test sees only its own resources.
"""

from __future__ import annotations

import asyncio

import pulumi
import pytest

from tests.infra.infra_mocks import PROJECT, InfraMocks, example_config, set_config

pulumi.runtime.set_mocks(InfraMocks(), project=PROJECT, stack="example", preview=False)


@pytest.fixture
def pulumi_mocks() -> InfraMocks:
    """Fresh recording mocks and the example stack's config, for one test."""
    mocks = InfraMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack="example", preview=False)
    set_config(example_config())
    yield mocks
    set_config({})


@pytest.fixture(autouse=True)
def _current_event_loop():
    """Leave a current event loop behind: the Pulumi SDK asks for one outside coroutines.

    ``asyncio.run`` (the SSH tests) unsets it when it finishes, which would break every
    Pulumi test that runs after it in the same process.
    """
    yield
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
