"""At most N concurrent pushes per user, so one user cannot hold every server thread.

A receive-pack holds a thread while its body arrives and while it deploys. Without a
cap, one token opening many slow pushes takes the whole gthread pool and every other
user's ``info/refs`` waits. Beyond the cap a push is answered ``429`` at once, before
its body is read.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .auth import ENV_SITE, ENV_TOKEN, text_response
from .hangup import hang_up_after
from .middleware import ClosingIterator

__all__ = ["PushGate", "user_key"]

log = logging.getLogger(__name__)


def user_key(site: Any, token: str) -> str:
    """Who a push counts against: the site's owner, else (a hash of) the token."""
    owner = site.get("user_id") if isinstance(site, dict) else None
    if owner:
        return f"user:{owner}"
    return "token:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


class PushGate:
    """WSGI wrapper (inside ``BasicAuth``): caps concurrent receive-packs per user."""

    def __init__(self, app: Callable[..., Iterable[bytes]], per_user: int):
        """Wrap ``app``; ``per_user`` receive-packs may run at once for one user."""
        self._app = app
        self._per_user = per_user
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Serve one request."""
        if not (environ.get("PATH_INFO") or "").endswith("/git-receive-pack"):
            return self._app(environ, start_response)
        key = user_key(environ.get(ENV_SITE), environ.get(ENV_TOKEN) or "")
        with self._lock:
            running = self._running.get(key, 0)
            if running >= self._per_user:
                busy = True
            else:
                busy = False
                self._running[key] = running + 1
        if busy:
            log.info("push refused: too many at once", extra={"limit": self._per_user})
            return hang_up_after(
                environ,
                text_response(
                    start_response,
                    "429 Too Many Requests",
                    f"too many pushes at once: at most {self._per_user} per user; "
                    "wait for the others to finish and push again",
                    [("Retry-After", "5"), ("Connection", "close")],
                ),
            )
        try:
            result = self._app(environ, start_response)
        except BaseException:
            self._release(key)
            raise
        return ClosingIterator(result, lambda: self._release(key))

    def _release(self, key: str) -> None:
        with self._lock:
            left = self._running.get(key, 1) - 1
            if left > 0:
                self._running[key] = left
            else:
                self._running.pop(key, None)


def guard(app: Callable[..., Iterable[bytes]], limits, spool_dir) -> PushGate:
    """The push guards in their order, to wrap a git app inside ``BasicAuth``.

    ``PushGate`` first (a push over the user's cap is answered before its body is
    read), then ``BodyGuard`` (the body is spooled within the limits).
    """
    from .body import BodyGuard

    return PushGate(BodyGuard(app, limits, spool_dir), limits.pushes_per_user)
