"""Why a pusher hangs when git dies mid-deploy behind Caddy 2.6 (README, known limitations).

Caddy 2.6's ``reverse_proxy``, when its upstream dies in the middle of a streamed
response, logs "aborting with incomplete response" but then ends the response to the
client *cleanly*: the terminating chunk, and the connection kept alive. git (2.39) pushes
over smart HTTP as a stateless RPC: ``git-remote-http`` posts ``send-pack``'s request
and pipes the answer back, then waits for ``send-pack``'s next request; ``send-pack``
waits for the rest of the truncated answer on that pipe. Neither side ever sees an
error, so ``git push`` waits for ever. Without Caddy in between (tests/git's
ProcessRoom), the connection breaks, curl reports it and the push fails at once
(``test_git_interrupted``). Newer Caddy versions abort the client's connection instead
(caddyserver/caddy#5951); this test pins the behaviour of the Caddy the stack runs, on
the git route exactly as ``services/platform/caddy.py`` generates it, and fails the day
Caddy aborts, when the e2e kill -9 test can assert that the pusher's push fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest
from push_kit import free_port

from services.platform.caddy import _control_plane

pytestmark = pytest.mark.integration


def _dying_upstream(listener: socket.socket, sent: threading.Event) -> None:
    conn, _ = listener.accept()
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-receive-pack-result\r\n")
    conn.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
    conn.sendall(b"19\r\n0015\x02remote: building\n\r\n")  # one sideband progress line
    sent.set()
    time.sleep(0.3)
    # What the kernel does for a killed process: the connection goes, mid-response.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()


@pytest.fixture
def caddy(tmp_path):
    binary = shutil.which("caddy")
    assert binary, "Caddy is required (bootstrap.sh installs it)"
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen()
    port = free_port()
    plane = _control_plane(lambda room: f"127.0.0.1:{upstream.getsockname()[1]}")
    config = tmp_path / "Caddyfile"
    config.write_text(
        f"{{\n\tadmin off\n\tauto_https off\n}}\nhttp://127.0.0.1:{port} {{\n" + plane + "\n}\n"
    )
    proc = subprocess.Popen(
        [binary, "run", "--config", str(config), "--adapter", "caddyfile"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "Caddy did not start"
            time.sleep(0.05)
    yield port, upstream
    proc.terminate()
    proc.wait(10)
    proc.stderr.close()
    upstream.close()


def test_caddy_ends_a_git_response_cleanly_when_git_dies_mid_response(caddy):
    port, upstream = caddy
    sent = threading.Event()
    threading.Thread(target=_dying_upstream, args=(upstream, sent), daemon=True).start()
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(
        b"POST /git/site.git/git-receive-pack HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-git-receive-pack-request\r\nContent-Length: 4\r\n\r\n0000"
    )
    received = b""
    while not received.endswith(b"\r\n0\r\n\r\n"):
        chunk = client.recv(65536)
        assert chunk, f"Caddy closed the connection (it aborts now, see above): {received!r}"
        received += chunk

    # The streamed line arrived as it was sent, then a clean end: no error for the client.
    assert b"remote: building" in received
    assert b"200 OK" in received.split(b"\r\n", 1)[0]
    # And the connection stays open, as after any complete response (keep-alive).
    client.settimeout(0.5)
    with pytest.raises(TimeoutError):
        client.recv(1)
    client.close()
