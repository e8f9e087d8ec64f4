"""BodyGuard starts the app on the growing spool; answers and ref moves wait for the whole body."""

from __future__ import annotations

import threading
import time

import pytest

from services.git.body import BodyAbandoned, BodyGuard, Watchdog, await_whole_body
from services.git.limits import IntakeLimits

WAIT = 5.0


class _Trickle:
    """A request body handed out in parts, each only once the test lets it go."""

    def __init__(self, parts: list[bytes]):
        self._parts = list(parts)
        self._released = [threading.Event() for _ in parts]
        self._released[0].set()
        self.after_read: list = []  # called after each part is read

    def release(self, index: int) -> None:
        self._released[index].set()

    def read(self, size: int = -1) -> bytes:
        if not self._parts:
            return b""
        index = len(self._released) - len(self._parts)
        assert self._released[index].wait(WAIT), "the test never released a part"
        part = self._parts.pop(0)
        for hook in self.after_read:
            hook(index)
        return part


class _Recorder:
    """The app: reads what it can, answers at once, and waits for the whole body."""

    def __init__(self, reads_wanted: int):
        self.read: list[bytes] = []
        self.first_read = threading.Event()
        self.outcome: str | None = None
        self.done = threading.Event()
        self._reads_wanted = reads_wanted

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"]
        try:
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(b"early ")  # held: nothing may reach the client before the body is in
            for _ in range(self._reads_wanted):
                self.read.append(body.read(1 << 16))
                self.first_read.set()
            await_whole_body()  # where receive-pack waits before moving a ref
            self.outcome = "whole"
            rest = body.read()
            return [b"read ", str(len(b"".join(self.read) + rest)).encode()]
        except BodyAbandoned:
            self.outcome = "abandoned"
            raise
        finally:
            self.done.set()


def _environ(body) -> dict:
    return {"REQUEST_METHOD": "POST", "wsgi.input": body, "wsgi.input_terminated": True}


def _serve(guard, environ):
    """Run the guard on a thread as a server would; the result and what it started."""
    started: list = []
    result: dict = {}

    def start_response(status, headers, exc_info=None):
        started.append(status)
        return lambda data: None

    def run():
        response = guard(environ, start_response)
        try:
            result["body"] = b"".join(response)
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, started, result


def test_the_app_reads_the_body_while_it_arrives_and_answers_once_it_is_whole(tmp_path):
    body = _Trickle([b"a" * 1000, b"b" * 500])
    app = _Recorder(reads_wanted=1)
    guard = BodyGuard(app, IntakeLimits(), spool_dir=tmp_path)
    thread, started, result = _serve(guard, _environ(body))

    # The first part is read by the app while the second is still to come.
    assert app.first_read.wait(WAIT)
    assert app.read == [b"a" * 1000]
    time.sleep(0.2)
    assert not app.done.is_set()  # waiting for the whole body
    assert started == []  # and nothing answered yet

    body.release(1)
    thread.join(WAIT)
    assert app.outcome == "whole"
    assert started == ["200 OK"]
    assert result["body"] == b"early read 1500"
    assert list(tmp_path.iterdir()) == []  # the spool is an unlinked file


def test_a_body_cut_mid_way_answers_408_and_abandons_the_early_reader(tmp_path):
    now = [0.0]
    limits = IntakeLimits(min_rate=1000, grace_seconds=1.0)
    body = _Trickle([b"a" * 100, b"b" * 100])
    # The second part arrives long past what the rate allows: the meter cuts it.
    body.after_read.append(lambda index: now.__setitem__(0, 60.0) if index == 1 else None)
    app = _Recorder(reads_wanted=2)
    guard = BodyGuard(
        app, limits, spool_dir=tmp_path, watchdog=Watchdog(clock=lambda: now[0]),
        clock=lambda: now[0],
    )  # fmt: skip
    thread, started, result = _serve(guard, _environ(body))
    assert app.first_read.wait(WAIT)
    body.release(1)
    thread.join(WAIT)

    assert started == ["408 Request Timeout"]
    assert b"too slowly" in result["body"]
    assert b"early" not in result["body"]
    assert app.done.wait(WAIT)
    assert app.outcome == "abandoned"  # its next read or the ref barrier raised


def test_an_oversized_body_reaches_the_app_cut_and_reading_past_the_cut_refuses(tmp_path):
    limits = IntakeLimits(max_push_bytes=1500, drain_bytes=0)
    body = _Trickle([b"a" * 1000, b"b" * 1000])
    body.release(1)
    seen = {}

    def app(environ, start_response):
        spool = environ["wsgi.input"]
        data = b""
        try:
            while True:
                data += spool.read(1 << 16)
        except Exception as exc:  # noqa: BLE001 - the refusal is what is tested
            seen["error"] = exc
        seen["data"] = data
        start_response("200 OK", [])
        return [b"ok"]

    guard = BodyGuard(app, limits, spool_dir=tmp_path)
    thread, started, result = _serve(guard, _environ(body))
    thread.join(WAIT)
    assert started == ["200 OK"]
    assert seen["data"] == b"a" * 1000  # the part that fit; the one that broke it never
    assert "push refused" in str(seen["error"])


def test_an_app_that_fails_is_reported_after_the_body_is_whole(tmp_path):
    body = _Trickle([b"a" * 10, b"b" * 10])

    def app(environ, start_response):
        raise RuntimeError("broken")

    guard = BodyGuard(app, IntakeLimits(), spool_dir=tmp_path)
    raised = {}

    def run():
        response = guard(_environ(body), lambda *a: None)
        try:
            b"".join(response)
        except RuntimeError as exc:
            raised["exc"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(0.2)
    assert thread.is_alive()  # still spooling: the error waits for the body
    body.release(1)
    thread.join(WAIT)
    assert str(raised["exc"]) == "broken"


def test_outside_an_early_start_the_barrier_returns_at_once():
    await_whole_body()  # no BodyGuard here: nothing to wait for


@pytest.mark.parametrize("gone_after", [0, 1])
def test_a_client_gone_mid_answer_makes_the_apps_writes_fail(tmp_path, gone_after):
    body = _Trickle([b"x"])
    writes = {"failed": threading.Event(), "count": 0}

    def app(environ, start_response):
        write = start_response("200 OK", [])
        environ["wsgi.input"].read()
        try:
            for _ in range(1000):
                write(b"line\n")
                writes["count"] += 1
        except ConnectionError:
            writes["failed"].set()
        return []

    guard = BodyGuard(app, IntakeLimits(), spool_dir=tmp_path)
    response = guard(_environ(body), lambda *a: lambda data: None)
    chunks = iter(response)
    for _ in range(gone_after):
        next(chunks)
    response.close()  # as a server does when the client hangs up; waits for the app
    assert writes["failed"].is_set()
    assert writes["count"] < 1000
