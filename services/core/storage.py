"""ClickHouse access: one client factory for the embedded engine and for a server.

``chdb:///path`` opens ClickHouse in-process through clickhouse-connect's chDB interface;
``http(s)://user:password@host:port/database`` talks to a ClickHouse server. Both return the
same ``Storage`` wrapper, so the rooms run the same SQL on either.

chDB allows one engine per process and one process per data path, so ``open_storage``
keeps one ``Storage`` per URL per process and serialises calls to the embedded engine.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect

__all__ = ["Storage", "open_storage"]

_opened: dict[str, Storage] = {}
_opened_lock = threading.Lock()


class Storage:
    """A thin query/insert wrapper; SQL takes user values only as bound parameters."""

    def __init__(self, client: Any, serialise: bool):
        self._client = client
        # The chDB engine is one shared in-process object: one call at a time.
        self._lock = threading.Lock() if serialise else None

    def _call(self, fn, *args, **kwargs):
        if self._lock is None:
            return fn(*args, **kwargs)
        with self._lock:
            return fn(*args, **kwargs)

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """Run a statement that returns no rows (DDL, settings)."""
        return self._call(self._client.command, sql, parameters=parameters)

    def rows(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a SELECT and return its rows as dicts."""
        result = self._call(self._client.query, sql, parameters=parameters)
        names = result.column_names
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        """Insert rows (each a sequence in ``columns`` order) in one batch."""
        if rows:
            self._call(self._client.insert, table, rows, column_names=list(columns))

    def insert_raw(
        self,
        table: str,
        columns: Sequence[str],
        data: bytes,
        fmt: str = "JSONEachRow",
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert rows already encoded in ``fmt`` (no Python-side encoding at all).

        ``settings`` carries e.g. ``insert_deduplication_token``, so a batch sent twice
        is stored once.
        """
        if data:
            self._call(
                self._client.raw_insert,
                table,
                list(columns),
                data,
                settings=dict(settings or {}),
                fmt=fmt,
            )

    def ping(self) -> bool:
        """True when the engine answers a trivial query."""
        try:
            return self.rows("SELECT 1 AS ok")[0]["ok"] == 1
        except Exception:  # noqa: BLE001 - health checks report, never raise
            return False


def _connect(url: str) -> Storage:
    parts = urlsplit(url)
    if parts.scheme == "chdb":
        path = unquote(parts.netloc + parts.path)
        client = clickhouse_connect.get_client(interface="chdb", path=path)
        return Storage(client, serialise=True)
    client = clickhouse_connect.get_client(
        interface=parts.scheme,
        host=parts.hostname or "localhost",
        port=parts.port or (8443 if parts.scheme == "https" else 8123),
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=parts.path.strip("/") or "default",
    )
    return Storage(client, serialise=False)


def open_storage(url: str) -> Storage:
    """The process's ``Storage`` for ``url``, opened on first use."""
    with _opened_lock:
        if url not in _opened:
            _opened[url] = _connect(url)
        return _opened[url]
