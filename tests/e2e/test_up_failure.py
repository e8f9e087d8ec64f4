"""`ecstatic up` names the part that does not come up, with its log tail."""

from __future__ import annotations

import socket

import pytest

from .stackdriver import Stack

pytestmark = pytest.mark.integration


def test_up_names_the_broken_part_and_shows_its_log(tmp_path):
    stack = Stack(tmp_path / "home")
    # Something else already holds Caddy's port: Caddy cannot start.
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("0.0.0.0", stack.http_port))
    squatter.listen()
    try:
        up = stack.ecstatic("up", "--timeout", "60", check=False)
        assert up.returncode == 1
        assert "caddy" in up.stderr
        assert "address already in use" in up.stderr  # the tail of caddy's own log
        status = stack.ecstatic("status", check=False)
        assert status.returncode == 1
        assert "UNHEALTHY" in status.stdout
    finally:
        stack.ecstatic("down", check=False)
        squatter.close()
