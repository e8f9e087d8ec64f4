"""Purge a Bunny pull zone's edge cache through the Core API (``api.bunny.net``).

After a sync replaced a site's files in storage, edges keep serving cached copies until
they expire; a purge makes the new release visible everywhere. This call needs the
account API key (not a storage zone password), which only the api room holds.
"""

from __future__ import annotations

import logging

from .bunny_http import BunnyNotFound, RetryPolicy, pooled_session, request_with_retries

__all__ = ["BunnyPurge"]

log = logging.getLogger(__name__)


class BunnyPurge:
    """``POST /pullzone/{id}/purgeCache`` with the same retry policy as storage."""

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.bunny.net",
        *,
        policy: RetryPolicy = RetryPolicy(),
    ):
        """Prepare the client (sends nothing yet).

        Args:
            api_key: The account API key (``AccessKey`` header of the Core API).
            base_url: The Core API root; a local test double's URL in tests.
            policy: Retries, backoff and per-request timeouts.
        """
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._policy = policy
        self._session = pooled_session(pool_size=2)

    def __repr__(self) -> str:
        """Name the endpoint, never the key."""
        return f"BunnyPurge(base_url={self.base_url!r})"

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def purge(self, pull_zone_id: int, cache_tag: str | None = None) -> None:
        """Purge everything a pull zone has cached, or only what carries ``cache_tag``.

        A purge is idempotent, so unlike most Core API POSTs it is retried on 5xx as
        well as on 429 and timeouts.

        Raises:
            BunnyAuthError: the account API key was refused.
            BunnyNotFound: there is no pull zone ``pull_zone_id``.
            BunnyUnavailable: transient failures outlasted the retries.
            BunnyError: any other refusal (e.g. 400).
        """
        if isinstance(pull_zone_id, bool) or not isinstance(pull_zone_id, int):
            raise ValueError(f"invalid pull zone id {pull_zone_id!r}")
        what = f"purge of pull zone {pull_zone_id}"
        response = request_with_retries(
            self._session,
            "POST",
            f"{self.base_url}/pullzone/{pull_zone_id}/purgeCache",
            what=what,
            policy=self._policy,
            describe_401="the account API key was refused (a storage zone password "
            "does not work for the Core API)",
            headers={"AccessKey": self._api_key},
            json={"CacheTag": cache_tag} if cache_tag else None,
        )
        if response.status_code == 404:
            raise BunnyNotFound(f"{what}: no such pull zone", 404)
        log.info("pull zone purged", extra={"pull_zone_id": pull_zone_id, "tag": cache_tag})
