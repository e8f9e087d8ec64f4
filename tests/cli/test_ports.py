"""A taken port is a clear error naming its holder; health counts only our own listeners."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.cli import ports, stack
from services.core.config import Config


def _listen() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_taken_port_names_the_port_and_its_holder():
    sock = _listen()
    try:
        port = sock.getsockname()[1]
        [line] = ports.taken([port])
        assert line.startswith(f"port {port} is taken by pid {os.getpid()} (")
        assert "pytest" in line or "python" in line
    finally:
        sock.close()
    assert ports.taken([port]) == []


def test_a_port_is_owned_only_by_its_process_or_children():
    sock = _listen()
    port = sock.getsockname()[1]
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert ports.owned_by(port, os.getpid())
        assert not ports.owned_by(port, other.pid)
        assert not ports.owned_by(port, None)
    finally:
        other.kill()
        other.wait()
        sock.close()
    assert not ports.owned_by(port, os.getpid())  # nothing listens any more


class _AlwaysOk(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def impostor():
    """Another program answering 200 to every health check, as a new user once had."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysOk)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_health_is_never_answered_by_another_program(tmp_path, impostor):
    config = Config.from_env({"ECSTATIC_HOME": str(tmp_path), "ECSTATIC_API_PORT": str(impostor)})
    assert stack.healthy(f"http://127.0.0.1:{impostor}/healthz")  # it does answer...
    assert stack.Stack(config).health()["api"] is False  # ...but it is not our api


def test_up_refuses_to_start_on_a_taken_port(tmp_path, impostor):
    config = Config.from_env({"ECSTATIC_HOME": str(tmp_path), "ECSTATIC_API_PORT": str(impostor)})
    with pytest.raises(stack.StackError) as caught:
        stack.Stack(config).up(timeout=5)
    message = str(caught.value)
    assert f"port {impostor} is taken by pid {os.getpid()}" in message
    assert "ECSTATIC_*_PORT" in message
    assert not stack.Stack(config).running()  # nothing was started


def test_a_port_held_by_our_own_supervisor_family_is_not_taken():
    # A part supervisord is restarting may hold its port before it counts as RUNNING.
    sock = _listen()
    try:
        port = sock.getsockname()[1]
        assert ports.taken([port], ours=os.getpid()) == []
        assert ports.taken([port], ours=None) != []
    finally:
        sock.close()
