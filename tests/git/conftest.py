"""Fixtures for the git room's tests."""

import pytest
from dulwich.object_store import MemoryObjectStore
from git_kit import FakeAuthorizer


@pytest.fixture
def store():
    return MemoryObjectStore()


@pytest.fixture
def authorizer():
    return FakeAuthorizer()
