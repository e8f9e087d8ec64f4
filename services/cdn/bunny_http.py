"""HTTP plumbing shared by the bunny.net clients: errors, retry policy, pooled sessions.

Both the Edge Storage client (``bunny_storage``) and the Core API purge client
(``bunny_purge``) send requests through ``request_with_retries``: transient failures
(5xx, 429, timeouts, dropped connections) are retried with exponential backoff and
jitter up to a bounded number of attempts; 401/403 and other 4xx fail at once with an
error that says what to fix. Callers put the ``AccessKey`` in the request headers only,
which neither requests, urllib3 nor these messages ever log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import requests
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

__all__ = [
    "BunnyAuthError",
    "BunnyError",
    "BunnyNotFound",
    "BunnyUnavailable",
    "RetryPolicy",
    "pooled_session",
    "request_with_retries",
]

log = logging.getLogger(__name__)


class BunnyError(Exception):
    """A bunny.net request failed; ``status`` is the HTTP status, or None without one."""

    def __init__(self, message: str, status: int | None = None):
        """Keep the message and the status (the message never holds the AccessKey)."""
        super().__init__(message)
        self.status = status


class BunnyAuthError(BunnyError):
    """401/403: the key is wrong, or (storage) the zone lives on another regional host."""


class BunnyNotFound(BunnyError):
    """404: the object (or pull zone) does not exist."""


class BunnyUnavailable(BunnyError):
    """Transient failures outlasted every retry (5xx, 429, timeouts, connection errors)."""


class _Transient(BunnyError):
    """Internal: one attempt failed in a way worth retrying."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message, status)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one request.

    Attributes:
        attempts: Total tries per request, the first included (at least 1).
        backoff_initial: First backoff in seconds; it doubles per retry, plus up to the
            same amount of random jitter so parallel workers do not retry in lockstep.
        backoff_max: Cap on one backoff (also caps a server's ``Retry-After``).
        timeout: ``(connect, read)`` seconds per attempt.
    """

    attempts: int = 5
    backoff_initial: float = 0.25
    backoff_max: float = 8.0
    timeout: tuple[float, float] = (5.0, 60.0)

    def __post_init__(self):
        """Refuse a policy that could never send a request."""
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")


def request_with_retries(
    session: requests.Session,
    method: str,
    url: str,
    *,
    what: str,
    policy: RetryPolicy,
    describe_401: str,
    body: bytes | Callable[[], BinaryIO] | None = None,
    **kwargs,
) -> requests.Response:
    """Send one request, retrying transient failures; return a 2xx or 404 response.

    Args:
        session: The pooled session (carries no secret in anything it logs).
        method: HTTP method.
        url: Full URL, already quoted.
        what: Human description for errors and logs, e.g. ``"PUT site/index.html"``.
        policy: Attempts, backoff and timeouts.
        describe_401: What a 401/403 most likely means, for the error message.
        body: The request body, or a callable opening a fresh file per attempt.
        **kwargs: Passed to ``session.request`` (headers, json, ...).

    Raises:
        BunnyAuthError: on 401/403, at once.
        BunnyError: on any other non-retryable 4xx, at once.
        BunnyUnavailable: when transient failures outlast ``policy.attempts``.
    """

    def attempt() -> requests.Response:
        data = body() if callable(body) else body
        try:
            response = session.request(
                method, url, data=data, timeout=policy.timeout, allow_redirects=False, **kwargs
            )
        except requests.Timeout as exc:
            raise _Transient(f"{type(exc).__name__}: no answer within {policy.timeout}s") from exc
        except requests.ConnectionError as exc:
            raise _Transient(f"{type(exc).__name__}: the connection failed or dropped") from exc
        finally:
            if hasattr(data, "close"):
                data.close()
        return _check(response, what, describe_401)

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=_backoff(policy),
        retry=retry_if_exception_type(_Transient),
        before_sleep=lambda state: log.warning(
            "bunny request retried",
            extra={"request": what, "attempt": state.attempt_number, "cause": _cause(state)},
        ),
        reraise=True,
    )
    try:
        return retrying(attempt)
    except _Transient as exc:
        raise BunnyUnavailable(
            f"{what} failed after {policy.attempts} attempts: {exc}", exc.status
        ) from exc


def _check(response: requests.Response, what: str, describe_401: str) -> requests.Response:
    status = response.status_code
    if status < 300 or status == 404:
        return response
    detail = _message(response)
    if status == 429 or status >= 500:
        raise _Transient(f"HTTP {status} {detail}".rstrip(), status, _retry_after(response))
    if status in (401, 403):
        raise BunnyAuthError(f"{what} was refused (HTTP {status}): {describe_401}", status)
    raise BunnyError(f"{what} failed: HTTP {status} {detail}".rstrip(), status)


def _message(response: requests.Response) -> str:
    # Bunny's bodies are {"HttpCode":..,"Message":..} (storage) or {"Message":..} (core).
    try:
        return str(response.json().get("Message", ""))[:200]
    except (ValueError, AttributeError):
        return response.text[:200]


def _retry_after(response: requests.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _cause(state: RetryCallState) -> str:
    return str(state.outcome.exception()) if state.outcome else ""


def _backoff(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    exponential = wait_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)
    exponential += wait_random(0, policy.backoff_initial)  # jitter: workers spread out

    def wait(state: RetryCallState) -> float:
        delay = min(exponential(state), policy.backoff_max)
        hint = getattr(state.outcome.exception(), "retry_after", None) if state.outcome else None
        return max(delay, min(hint, policy.backoff_max)) if hint is not None else delay

    return wait


def pooled_session(pool_size: int) -> requests.Session:
    """A session with one connection pool of ``pool_size`` and no urllib3 retries."""
    session = requests.Session()
    # One pool sized for the sync's workers; block instead of opening throwaway
    # connections past Bunny's per-IP limit. Retries are ours, not urllib3's.
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, pool_block=True)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
