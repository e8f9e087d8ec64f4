"""End a refused request's connection without reading the rest of its body.

After a response, a keep-alive server discards the unread body before it parses the
next request: gunicorn's gthread does so on a pool thread, at whatever rate the client
sends. A refused slow or oversized body would hold that thread as long as the client
likes. Shutting the socket's read side makes that discard end at once; the response,
already written, is unaffected.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable
from typing import Any

from .middleware import ClosingIterator

__all__ = ["client_socket", "hang_up_after"]


def client_socket(environ: dict[str, Any]) -> socket.socket | None:
    """The client's socket: gunicorn's, or the stdlib server's buffered socket file."""
    sock = environ.get("gunicorn.socket")
    if isinstance(sock, socket.socket):
        return sock
    raw = getattr(environ.get("wsgi.input"), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def hang_up_after(environ: dict[str, Any], body: Iterable[bytes]) -> ClosingIterator:
    """The response, whose closing also shuts the connection's read side."""

    def hang_up() -> None:
        sock = client_socket(environ)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)

    return ClosingIterator(body, hang_up)
