"""Fixtures shared by every room's tests."""

from __future__ import annotations

import pytest

from services.core.schema import migrate
from services.core.storage import open_storage


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory) -> str:
    """The one chDB data path of this test process, opened and migrated once.

    chDB allows one engine per process and one data path per engine, so every test that
    needs the real engine shares this one and isolates itself by distinct site ids.
    """
    url = "chdb://" + str(tmp_path_factory.mktemp("clickhouse"))
    migrate(open_storage(url))
    return url


@pytest.fixture(scope="session")
def chdb_storage(chdb_url):
    """The shared embedded ClickHouse storage (see ``chdb_url``)."""
    return open_storage(chdb_url)
