"""The embedded engine's gate: inserts before queries, arrival order within a lane, budgets."""

from __future__ import annotations

import threading
import time

import pytest

from services.core.storage import Budget, EngineBusy, Lane, PriorityGate, Storage


def wait_until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.005)


class Entrants:
    """Threads that each take the gate once, noting the order they got in."""

    def __init__(self, gate: PriorityGate, hold: float = 0.01):
        self.gate = gate
        self.hold = hold
        self.order: list[str] = []
        self.threads: list[threading.Thread] = []

    def arrive(self, name: str, lane: Lane) -> None:
        before = self.gate.waiting(lane)

        def enter():
            assert self.gate.acquire(lane, timeout=10)
            self.order.append(name)
            time.sleep(self.hold)  # hold it a moment, so the next one really waits
            self.gate.release()

        thread = threading.Thread(target=enter)
        thread.start()
        self.threads.append(thread)
        wait_until(lambda: self.gate.waiting(lane) == before + 1)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive()


def test_waiting_inserts_go_before_waiting_queries_which_keep_their_order():
    gate = PriorityGate()
    assert gate.acquire(Lane.QUERY)
    entrants = Entrants(gate)
    for name, lane in [
        ("q1", Lane.QUERY),
        ("i1", Lane.INTAKE),
        ("q2", Lane.QUERY),
        ("i2", Lane.INTAKE),
        ("q3", Lane.QUERY),
    ]:
        entrants.arrive(name, lane)
    gate.release()
    entrants.join()
    assert entrants.order == ["i1", "i2", "q1", "q2", "q3"]


def test_an_insert_arriving_while_queries_wait_overtakes_them():
    gate = PriorityGate()
    assert gate.acquire(Lane.INTAKE)
    entrants = Entrants(gate, hold=0.3)
    entrants.arrive("q1", Lane.QUERY)
    entrants.arrive("q2", Lane.QUERY)
    gate.release()
    wait_until(lambda: entrants.order)  # q1 is in; q2 still waits
    entrants.arrive("i1", Lane.INTAKE)
    entrants.join()
    assert entrants.order == ["q1", "i1", "q2"]


def test_a_query_gives_up_after_its_timeout_and_the_holder_keeps_the_gate():
    gate = PriorityGate()
    assert gate.acquire(Lane.INTAKE)
    started = time.monotonic()
    assert gate.acquire(Lane.QUERY, timeout=0.2) is False
    assert 0.18 <= time.monotonic() - started < 2
    # The holder still holds it: nobody else gets in until it lets go.
    assert gate.acquire(Lane.INTAKE, timeout=0.05) is False
    gate.release()
    assert gate.acquire(Lane.QUERY, timeout=1)
    gate.release()
    assert gate.waiting(Lane.QUERY) == gate.waiting(Lane.INTAKE) == 0


def test_a_timed_out_waiter_lets_the_one_behind_it_in():
    gate = PriorityGate()
    assert gate.acquire(Lane.INTAKE)
    got = []
    first = threading.Thread(target=lambda: got.append(("q1", gate.acquire(Lane.QUERY, 0.2))))
    first.start()
    wait_until(lambda: gate.waiting(Lane.QUERY) == 1)
    second = threading.Thread(target=lambda: got.append(("q2", gate.acquire(Lane.QUERY, 5))))
    second.start()
    wait_until(lambda: gate.waiting(Lane.QUERY) == 2)
    first.join(5)
    gate.release()
    second.join(5)
    assert got == [("q1", False), ("q2", True)]
    gate.release()


class SlowClient:
    """A stand-in engine: each call takes ``seconds`` and notes how many overlap."""

    def __init__(self, seconds=0.05):
        self.seconds = seconds
        self.inside = 0
        self.most_inside = 0
        self.settings: list[dict] = []
        self._lock = threading.Lock()

    def query(self, sql, parameters=None, settings=None):
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.settings.append(settings)
        time.sleep(self.seconds)
        with self._lock:
            self.inside -= 1
        return type("Result", (), {"column_names": ("x",), "result_rows": [(1,)]})()

    def insert(self, table, rows, column_names):
        self.query("INSERT")


def run_together(*calls):
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)


def test_the_embedded_engine_runs_one_call_at_a_time_a_server_many():
    embedded, server = SlowClient(), SlowClient()
    for client, serialise in ((embedded, True), (server, False)):
        storage = Storage(client, serialise=serialise)
        run_together(*(lambda: storage.rows("SELECT 1") for _ in range(4)))
    assert embedded.most_inside == 1
    assert server.most_inside == 4


def test_a_budgeted_query_runs_with_what_is_left_of_its_seconds():
    client = SlowClient(seconds=0.3)
    storage = Storage(client, serialise=True)
    budget = Budget(max_memory_bytes=64 << 20, max_seconds=2.0, max_result_rows=50)
    worker = threading.Thread(target=lambda: storage.insert("requests", [(1,)], ["x"]))
    worker.start()
    wait_until(lambda: client.inside == 1)
    assert storage.rows("SELECT 1", budget=budget) == [{"x": 1}]
    worker.join(5)
    settings = client.settings[-1]
    assert settings["max_memory_usage"] == 64 << 20 and settings["max_result_rows"] == 50
    assert settings["timeout_overflow_mode"] == settings["result_overflow_mode"] == "throw"
    # It waited behind the 0.3 s insert: the engine gets only the rest of the 2 s.
    assert 1.0 < settings["max_execution_time"] <= 1.8


def test_a_query_crowded_out_for_its_whole_budget_is_engine_busy():
    client = SlowClient(seconds=0.5)
    storage = Storage(client, serialise=True)
    worker = threading.Thread(target=lambda: storage.insert("requests", [(1,)], ["x"]))
    worker.start()
    wait_until(lambda: client.inside == 1)
    started = time.monotonic()
    with pytest.raises(EngineBusy):
        storage.rows("SELECT 1", budget=Budget(1 << 20, max_seconds=0.1))
    assert time.monotonic() - started < 0.4
    worker.join(5)
    assert len(client.settings) == 1  # the query never reached the engine


def test_on_a_server_a_budget_still_sends_its_settings():
    client = SlowClient(seconds=0)
    Storage(client, serialise=False).rows("SELECT 1", budget=Budget(32 << 20, 5.0))
    assert client.settings[0]["max_memory_usage"] == 32 << 20
    assert 4.9 < client.settings[0]["max_execution_time"] <= 5.0
