"""Tokens and the question every room asks: may this token see this site?

The api owns the truth (users, token hashes, sites). Git and query hold no keys: they
ask the api with the caller's own token, ``GET /v1/sites/{id}``, and cache the answer
briefly so a burst of requests costs one round trip.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .errors import NotFound, Unauthorized, Unavailable

__all__ = ["new_token", "hash_token", "tokens_equal", "bearer_token", "SiteAuthorizer"]

TOKEN_PREFIX = "ecs_"
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]{1,256}\Z")


def new_token() -> str:
    """A fresh API token: 32 random bytes, URL-safe, with a recognisable prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token. Tokens are high-entropy, so plain SHA-256 suffices."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_equal(token_hash_a: str, token_hash_b: str) -> bool:
    """Constant-time comparison of two token hashes."""
    return hmac.compare_digest(token_hash_a.encode(), token_hash_b.encode())


def bearer_token(authorization: str | None) -> str | None:
    """The token from an ``Authorization: Bearer TOKEN`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _session() -> requests.Session:
    session = requests.Session()
    # Idempotent GETs only: a brief api restart should not fail a visitor's query.
    retry = Retry(
        total=3, backoff_factor=0.2, status_forcelist=(502, 503, 504), allowed_methods={"GET"}
    )
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


class SiteAuthorizer:
    """Asks the api whether a token's user can see a site; caches answers briefly."""

    def __init__(
        self,
        api_url: str,
        cache_seconds: float = 5.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
    ):
        self._api_url = api_url.rstrip("/")
        self._cache_seconds = cache_seconds
        self._session = session or _session()
        self._clock = clock
        self._timeout = timeout
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def site(self, token: str | None, site_id: str) -> dict[str, Any]:
        """The site as the api shows it to this token's user.

        Raises:
            Unauthorized: no token, or the api does not know it.
            NotFound: the site does not exist or is not the user's.
            Unavailable: the api cannot be reached.
        """
        if not token:
            raise Unauthorized("missing token")
        if not _TOKEN_CHARS.match(token):
            # Not a token we could have issued; also keeps odd bytes out of HTTP headers.
            raise Unauthorized("invalid token")
        key = (hash_token(token), site_id)
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[0] > now:
            outcome = hit[1]
        else:
            outcome = self._ask(token, site_id)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (now + self._cache_seconds, outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _ask(self, token: str, site_id: str) -> Any:
        try:
            response = self._session.get(
                f"{self._api_url}/v1/sites/{requests.utils.quote(site_id, safe='')}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise Unavailable(f"api unreachable: {exc.__class__.__name__}") from exc
        if response.status_code == 200:
            return response.json()
        if response.status_code == 401:
            return Unauthorized("invalid token")
        if response.status_code == 404:
            return NotFound(f"site {site_id} not found")
        raise Unavailable(f"api answered {response.status_code}")
