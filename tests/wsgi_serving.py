"""A WSGI app on an ephemeral 127.0.0.1 port for tests: threaded, and quiet."""

from __future__ import annotations

from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class QuietHandler(WSGIRequestHandler):
    """No access log line per request on the test's stderr."""

    def log_message(self, *args) -> None:
        pass


class ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow request never holds up the others."""

    daemon_threads = True


def threaded_server(app, host: str = "127.0.0.1", port: int = 0) -> ThreadedWSGIServer:
    """``app`` bound on ``host:port`` (0: any free port); call ``serve_forever`` to run it."""
    return make_server(host, port, app, server_class=ThreadedWSGIServer, handler_class=QuietHandler)
