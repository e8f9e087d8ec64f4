"""Small WSGI wrappers around the git app: route templates, error containment, closing."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dulwich.errors import GitProtocolError
from dulwich.web import ChunkedEncodingError

from .auth import text_response

__all__ = ["ClosingIterator", "ErrorGuard", "route_of"]

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_ROUTES = (
    (re.compile(r"^/git/[^/]+\.git/info/refs$"), "/git/{site}.git/info/refs"),
    (re.compile(r"^/git/[^/]+\.git/git-upload-pack$"), "/git/{site}.git/git-upload-pack"),
    (re.compile(r"^/git/[^/]+\.git/git-receive-pack$"), "/git/{site}.git/git-receive-pack"),
    (re.compile(r"^/git/[^/]+\.git/"), "/git/{site}.git/{path}"),
    (
        re.compile(r"^/v1/sites/[^/]+/deploys/[^/]+/restore$"),
        "/v1/sites/{site}/deploys/{deploy}/restore",
    ),
)

# Malformed or truncated input from the client: answered or logged, never a crash.
CLIENT_ERRORS = (GitProtocolError, ChunkedEncodingError, ValueError, EOFError, ConnectionError)


def route_of(path: str) -> str:
    """The route template of a path, for low-cardinality metric labels."""
    for pattern, template in _ROUTES:
        if pattern.match(path):
            return template
    return "unmatched"


class ClosingIterator:
    """Yields a response's chunks and runs ``on_close`` once, however the server ends it.

    A class rather than a generator: a generator closed before its first ``next`` never
    runs its ``finally``.
    """

    def __init__(self, iterable: Iterable[bytes], on_close: Callable[[], None]):
        """Wrap ``iterable``."""
        self._iterable = iterable
        self._iterator: Iterator[bytes] | None = None
        self._on_close: Callable[[], None] | None = on_close

    def __iter__(self) -> Iterator[bytes]:
        """Iterate the wrapped response."""
        self._iterator = iter(self._iterable)
        return self._iterator

    def close(self) -> None:
        """Close the wrapped response, then run the callback (once)."""
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()


class ErrorGuard:
    """Turns exceptions from the git app into a plain-text error or a logged, cut response."""

    def __init__(self, app: WSGIApp):
        """Wrap ``app``."""
        self._app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Serve one request."""
        state = {"started": False}

        def tracking_start_response(status, headers, exc_info=None):
            state["started"] = True
            return start_response(status, headers, exc_info)

        try:
            result = self._app(environ, tracking_start_response)
        except Exception as exc:  # noqa: BLE001 - report, never crash the worker
            return self._fail(environ, start_response, state, exc)
        return _Guarded(result, lambda exc: self._fail(environ, start_response, state, exc))

    @staticmethod
    def _fail(environ, start_response, state, exc: Exception) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        client = isinstance(exc, CLIENT_ERRORS)
        if client:
            log.warning("bad git request", extra={"path": path, "error": repr(exc)[:300]})
        else:
            log.exception("git request failed", extra={"path": path})
        if state["started"]:
            return []  # headers are out: all we can do is end the response here
        if client:
            return text_response(start_response, "400 Bad Request", f"bad git request: {exc}"[:300])
        return text_response(start_response, "500 Internal Server Error", "internal error")


class _Guarded:
    def __init__(self, result: Iterable[bytes], fail: Callable[[Exception], list[bytes]]):
        self._result = result
        self._fail = fail

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._result
        except Exception as exc:  # noqa: BLE001 - see ErrorGuard
            yield from self._fail(exc)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()
