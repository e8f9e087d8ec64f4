"""ClickHouse access: one client factory for the embedded engine and for a server.

``chdb:///path`` opens ClickHouse in-process through clickhouse-connect's chDB interface;
``http(s)://user:password@host:port/database`` talks to a ClickHouse server. Both return the
same ``Storage`` wrapper, so the rooms run the same SQL on either.

chDB allows one engine per process and one process per data path, so ``open_storage``
keeps one ``Storage`` per URL per process. The embedded engine runs one call at a time,
and it is shared by the intake and the query room: a ``PriorityGate`` lets waiting
inserts go before waiting analytics queries, and a query's ``Budget`` bounds how long it
waits and what it may cost once it runs. A ClickHouse server needs no gate (it runs
queries side by side and enforces the same budget settings itself).
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect

__all__ = [
    "Storage",
    "open_storage",
    "Budget",
    "Lane",
    "PriorityGate",
    "EngineBusy",
    "OVER_BUDGET_CODES",
]

_opened: dict[str, Storage] = {}
_opened_lock = threading.Lock()


class Lane(enum.IntEnum):
    """Who goes first on the embedded engine: a lower lane always does."""

    INTAKE = 0  # inserts, migrations, the intake's own reads: new data must land
    QUERY = 1  # analytics for the dashboard and the API: they wait for inserts


class EngineBusy(Exception):  # noqa: N818 - reads as what happened
    """A query's whole budget went by while the engine served others."""


class PriorityGate:
    """One holder at a time; waiters enter by lane, then in arrival order."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._waiting = {lane: deque() for lane in Lane}

    def _turn(self, lane: Lane, ticket: object) -> bool:
        if self._held or self._waiting[lane][0] is not ticket:
            return False
        return not any(self._waiting[other] for other in Lane if other < lane)

    def acquire(self, lane: Lane, timeout: float | None = None) -> bool:
        """Wait for the gate (at most ``timeout`` seconds); True once held."""
        ticket = object()
        with self._cond:
            self._waiting[lane].append(ticket)
            try:
                if not self._cond.wait_for(lambda: self._turn(lane, ticket), timeout):
                    return False
                self._held = True
                return True
            finally:
                self._waiting[lane].remove(ticket)
                # The next in line (of this lane or a higher one) may be waiting on us.
                self._cond.notify_all()

    def release(self) -> None:
        """Let the next waiter in."""
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def waiting(self, lane: Lane) -> int:
        """How many callers of ``lane`` are waiting now."""
        with self._cond:
            return len(self._waiting[lane])


@dataclass(frozen=True)
class Budget:
    """What one analytics query may cost: engine memory, wall time and result size.

    ``max_seconds`` covers waiting for the embedded engine plus running: the engine gets
    what is left of it as ``max_execution_time``, so a query never holds the engine past
    its deadline. ClickHouse enforces the limits and fails the query (never the process)
    with one of ``OVER_BUDGET_CODES``.
    """

    max_memory_bytes: int
    max_seconds: float
    max_result_rows: int = 10_000

    def settings(self, seconds: float) -> dict[str, Any]:
        """The ClickHouse settings for a query allowed to run ``seconds``."""
        return {
            "max_memory_usage": self.max_memory_bytes,
            "max_execution_time": round(seconds, 3),
            "timeout_overflow_mode": "throw",
            "max_result_rows": self.max_result_rows,
            "result_overflow_mode": "throw",
        }


# ClickHouse error codes of a query stopped by its budget: MEMORY_LIMIT_EXCEEDED,
# TIMEOUT_EXCEEDED, TOO_SLOW, TOO_MANY_ROWS, TOO_MANY_BYTES, TOO_MANY_ROWS_OR_BYTES.
OVER_BUDGET_CODES = {241: "memory", 159: "time", 160: "time", 158: "rows", 307: "rows", 396: "rows"}
_MIN_RUN_SECONDS = 0.05  # max_execution_time=0 would mean no limit at all


class Storage:
    """A thin query/insert wrapper; SQL takes user values only as bound parameters."""

    def __init__(self, client: Any, serialise: bool, clock: Callable[[], float] = time.monotonic):
        self._client = client
        # The chDB engine is one shared in-process object: one call at a time, by lane.
        self._gate = PriorityGate() if serialise else None
        self._clock = clock

    @property
    def gate(self) -> PriorityGate | None:
        """The embedded engine's gate (None for a ClickHouse server)."""
        return self._gate

    @contextmanager
    def _engine(self, lane: Lane, timeout: float | None) -> Iterator[None]:
        if self._gate is None:
            yield
            return
        if not self._gate.acquire(lane, timeout):
            raise EngineBusy(f"the engine stayed busy for {timeout:g} s")
        try:
            yield
        finally:
            self._gate.release()

    def _call(self, fn, *args, **kwargs):
        with self._engine(Lane.INTAKE, None):
            return fn(*args, **kwargs)

    def _budgeted(self, budget: Budget, fn, *args, **kwargs):
        deadline = self._clock() + budget.max_seconds
        with self._engine(Lane.QUERY, budget.max_seconds):
            left = deadline - self._clock()
            if left < _MIN_RUN_SECONDS:
                raise EngineBusy(f"the engine stayed busy for {budget.max_seconds:g} s")
            return fn(*args, settings=budget.settings(left), **kwargs)

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """Run a statement that returns no rows (DDL, settings)."""
        return self._call(self._client.command, sql, parameters=parameters)

    def rows(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        budget: Budget | None = None,
    ) -> list[dict[str, Any]]:
        """Run a SELECT and return its rows as dicts.

        With a ``budget`` it is an analytics query: it waits behind inserts and runs
        under the budget's limits. It raises ``EngineBusy`` when the budget ran out
        before its turn, and ClickHouse's ``DatabaseError`` (code in
        ``OVER_BUDGET_CODES``) when the query itself outgrew the budget.
        """
        if budget is None:
            result = self._call(self._client.query, sql, parameters=parameters)
        else:
            result = self._budgeted(budget, self._client.query, sql, parameters=parameters)
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
