"""`ecstatic up` tells the truth: a taken port is named with its holder before anything
starts, and a part that keeps failing is named with its log tail."""

from __future__ import annotations

import os
import socket

import pytest

from .stackdriver import Stack

pytestmark = pytest.mark.integration


def test_up_names_the_taken_port_and_its_holder(tmp_path):
    stack = Stack(tmp_path / "home")
    # Something else already holds Caddy's port.
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("0.0.0.0", stack.http_port))
    squatter.listen()
    try:
        up = stack.ecstatic("up", "--timeout", "60", check=False)
        assert up.returncode == 1
        assert f"port {stack.http_port} is taken by pid {os.getpid()}" in up.stderr
        assert "Ecstatic is up" not in up.stdout
        status = stack.ecstatic("status", check=False)
        assert status.returncode == 1
        assert "UNHEALTHY" in status.stdout
    finally:
        stack.ecstatic("down", check=False)
        squatter.close()


def test_up_names_a_part_that_keeps_exiting_and_shows_its_log(tmp_path):
    broken = tmp_path / "Caddyfile"
    broken.write_text("this is { not a caddyfile\n")
    stack = Stack(tmp_path / "home", ECSTATIC_CADDYFILE=str(broken))
    try:
        up = stack.ecstatic("up", "--timeout", "90", check=False)
        assert up.returncode == 1
        assert "caddy keeps exiting" in up.stderr
        assert "Caddyfile" in up.stderr  # the tail of caddy's own log
        assert "Ecstatic is up" not in up.stdout
    finally:
        stack.ecstatic("down", check=False)
