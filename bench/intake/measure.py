"""The intake run: send every line over one TCP connection, wait until all are queryable.

The clock starts at the first byte sent (the connection is already open). Two stops:

* ``inserted_seconds``: the intake's own ``ecstatic_intake_rows_inserted_total``
  (polled on ``/metrics`` every 20 ms once the socket has taken every byte, every 0.5 s
  before: each scrape costs the intake's process CPU, and no count can be complete
  while lines are still being sent; it counts after each insert returned, and the
  engine's inserts are synchronous) reaches the number of lines sent, less the invalid;
* ``queryable_seconds``: then the query room's stats API, asked for every benchmark site,
  reports as many rows as were sent to it (a site already complete is not asked again).

The second is the strict one but late by one sweep of every site through the stats API
(``confirm_seconds``: seconds for 200 sites, against a goal of about 4 s for the whole
run), so the report's lines/s uses the first, and counts it only when the sweep then
finds every site's rows exact. Sweeping only after the counter says done keeps the
stats API from loading the process while it ingests. An intake without the counter
is timed by the sweeps alone (one every 0.5 s once the socket has taken every byte).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .memory import RssSampler, summary, tree_cpu_seconds
from .stack import Services

__all__ = ["IntakeRun", "run"]

POLL_SECONDS = 0.02  # once every byte is sent: the resolution of the reported time
SENDING_POLL_SECONDS = 0.5  # while sending: progress samples only
ROWS = "ecstatic_intake_rows_inserted_total"
INVALID = "ecstatic_intake_lines_invalid_total"
PARSED = "ecstatic_intake_lines_parsed_total"
STAGES = "ecstatic_intake_stage_seconds_total"


def _total(metrics: dict, name: str) -> float | None:
    values = [v for (n, _), v in metrics.items() if n == name]
    return sum(values) if values else None


def _by_label(metrics: dict, name: str, label: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for (n, labels), value in metrics.items():
        if n == name:
            key = dict(labels).get(label, "")
            found[key] = found.get(key, 0.0) + value
    return found


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


@dataclass
class IntakeRun:
    """What one run saw."""

    lines: int
    bytes_sent: int = 0
    sent_seconds: float | None = None
    inserted_seconds: float | None = None
    queryable_seconds: float | None = None
    confirm_seconds: float | None = None
    warm_sweep_seconds: float | None = None
    sweeps: int = 0
    counted: int = 0
    complete: bool = False
    cpu_seconds: float = 0.0  # the intake+query tree's, to the end of the confirming sweep
    inserted_cpu_seconds: float | None = None  # the same, to when every row was stored
    stages: dict[str, float] = field(default_factory=dict)
    invalid: dict[str, float] = field(default_factory=dict)
    metrics_delta: dict[str, float] = field(default_factory=dict)
    # [seconds, rows inserted, lines invalid, lines parsed] at each poll of /metrics
    progress: list[list[float]] = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    error: str = ""


class _Sender(threading.Thread):
    def __init__(self, sock: socket.socket, path: Path, started: float):
        super().__init__(name="sender", daemon=True)
        self._sock, self._path, self._t0 = sock, path, started
        self.sent = 0
        self.seconds: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with open(self._path, "rb") as f:
                self.sent = self._sock.sendfile(f)  # as fast as the socket takes them
            self.seconds = time.perf_counter() - self._t0
        except OSError as exc:
            self.error = exc


_COUNTERS = (
    "ecstatic_intake_lines_received_total",
    PARSED,
    ROWS,
    "ecstatic_intake_insert_failures_total",
    "ecstatic_intake_backpressure_seconds_total",
)


def _wait_inserted(
    services: Services,
    run: IntakeRun,
    before: dict,
    started: float,
    sender: _Sender,
    deadline: float,
    cpu_spent: Callable[[], float],
) -> None:
    rows0, invalid0 = _total(before, ROWS), _total(before, INVALID) or 0.0
    parsed0 = _total(before, PARSED) or 0.0
    while time.perf_counter() < deadline and sender.error is None:
        now = services.metrics()
        rows, invalid = _total(now, ROWS), (_total(now, INVALID) or 0.0) - invalid0
        t = time.perf_counter() - started
        if rows is None:  # no such counter in this intake: sweep once the socket is done
            if sender.seconds is not None or sender.error is not None:
                return
        else:
            parsed = (_total(now, PARSED) or 0.0) - parsed0
            run.progress.append([round(t, 3), rows - (rows0 or 0.0), invalid, parsed])
            if rows - (rows0 or 0.0) + invalid >= run.lines:
                run.inserted_seconds = t
                run.inserted_cpu_seconds = cpu_spent()
                return
        if sender.is_alive():
            sender.join(SENDING_POLL_SECONDS)  # returns as soon as the last byte is sent
        else:
            time.sleep(POLL_SECONDS)


def _sweep(
    services: Services,
    run: IntakeRun,
    token: str,
    expected: dict[str, int],
    started: float,
    deadline: float,
    invalid_of,
) -> None:
    pending, counts = list(expected), dict.fromkeys(expected, 0)
    while time.perf_counter() < deadline:
        sweep_started = time.perf_counter()
        counts.update(services.site_requests(token, pending))
        run.sweeps += 1
        pending = [site for site in pending if counts[site] < expected[site]]
        run.counted = sum(counts.values())
        if not pending:
            run.queryable_seconds = time.perf_counter() - started
            run.confirm_seconds = time.perf_counter() - sweep_started
            run.complete = run.counted == run.lines
            return
        if run.counted + invalid_of() >= run.lines and run.inserted_seconds is not None:
            return  # everything is accounted for, but some lines never became rows
        time.sleep(0.1 if run.inserted_seconds is not None else 0.5)


def run(
    services: Services,
    pid: int,
    token: str,
    expected: dict[str, int],
    syslog: Path,
    lines: int,
    timeout: float,
) -> IntakeRun:
    """Send ``syslog`` to the running intake and wait until ``expected`` is queryable.

    ``expected`` maps each site id to the number of lines sent for it.
    """
    result = IntakeRun(lines=lines)
    # One untimed sweep first: the table must be empty, and the query room's site
    # authorizations and code paths are warm, so the timed sweep costs only its queries.
    warm_started = time.perf_counter()
    if any(services.site_requests(token, list(expected)).values()):
        raise RuntimeError("the benchmark sites already have rows")
    result.warm_sweep_seconds = time.perf_counter() - warm_started
    before = services.metrics()
    process = psutil.Process(pid)
    cpu_before = tree_cpu_seconds(process)
    sampler = RssSampler(pid).start()
    sock = socket.create_connection(("127.0.0.1", services.ports["intake_syslog"]), timeout=timeout)
    started = time.perf_counter()
    deadline = started + timeout
    sender = _Sender(sock, syslog, started)
    sender.start()
    try:
        _wait_inserted(
            services,
            result,
            before,
            started,
            sender,
            deadline,
            lambda: tree_cpu_seconds(process) - cpu_before,
        )

        def invalid_now() -> float:
            return (_total(services.metrics(), INVALID) or 0.0) - (_total(before, INVALID) or 0.0)

        _sweep(services, result, token, expected, started, deadline, invalid_now)
        if result.sweeps == 0:  # timed out before any sweep: still say how far it got
            result.counted = sum(services.site_requests(token, list(expected)).values())
            result.sweeps = 1
    finally:
        result.memory = summary(sampler.stop())
        result.cpu_seconds = tree_cpu_seconds(process) - cpu_before
        sender.join(5)
        sock.close()
    result.bytes_sent, result.sent_seconds = sender.sent, sender.seconds
    if sender.error is not None:
        result.error = f"sending failed: {sender.error!r}"
    elif not result.complete:
        result.error = "timed out" if time.perf_counter() >= deadline else "rows missing"
    after = services.metrics()
    result.stages = _delta(_by_label(after, STAGES, "stage"), _by_label(before, STAGES, "stage"))
    result.invalid = _delta(
        _by_label(after, INVALID, "reason"), _by_label(before, INVALID, "reason")
    )
    for name in _COUNTERS:
        if _total(after, name) is not None:
            result.metrics_delta[name] = _total(after, name) - (_total(before, name) or 0.0)
    return result
