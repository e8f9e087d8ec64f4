"""The CDN purge seam: the api holds the CDN admin key, so purges go through it.

Anything with ``purge(site) -> None`` works; ``site`` is the site JSON the api shows its
owner (id, name, hostnames, previews). ``purger_for`` picks the process's purger from the
config: ``BunnyZonePurger`` (the Core API's ``purgeCache`` of the configured pull zone)
when ``ECSTATIC_CDN=bunny`` with an account key and a pull zone id, else ``NoPurge``:
the local backend serves files straight from disk and has no cache to purge.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from services.cdn.bunny_http import RetryPolicy
from services.cdn.bunny_purge import BunnyPurge
from services.core.deploy_config import DeployConfig
from services.core.errors import EcstaticError, Unavailable

__all__ = ["BunnyZonePurger", "CORE_API_URL", "NoPurge", "SitePurger", "purge_site", "purger_for"]

log = logging.getLogger(__name__)

# bunny.net's Core API; ``purger_for`` reads it at call time (tests point it at a double).
CORE_API_URL = "https://api.bunny.net"


class SitePurger(Protocol):
    """Empties the CDN's cache of one site."""

    def purge(self, site: dict[str, Any]) -> None:
        """Purge every cached file of ``site``."""


class NoPurge:
    """The local backend's purger: nothing is cached, so nothing to do."""

    def purge(self, site: dict[str, Any]) -> None:
        """Do nothing."""


class BunnyZonePurger:
    """Purges the one pull zone that serves every site's prefix of the storage zone.

    The zone's cache is shared, so purging it for one site purges it for all: one call
    per activation, whichever site was activated.
    """

    def __init__(self, client: BunnyPurge, pull_zone_id: int):
        """Wire the Core API client (it holds the account key) and the pull zone."""
        self._client = client
        self.pull_zone_id = pull_zone_id

    def __repr__(self) -> str:
        """Name the zone and the endpoint, never the key."""
        return f"BunnyZonePurger(pull_zone_id={self.pull_zone_id}, client={self._client!r})"

    def purge(self, site: dict[str, Any]) -> None:
        """Purge the pull zone (see ``BunnyPurge.purge`` for the errors)."""
        self._client.purge(self.pull_zone_id)

    def close(self) -> None:
        """Close the client's pooled connections."""
        self._client.close()


def purger_for(
    deploy: DeployConfig, *, base_url: str | None = None, policy: RetryPolicy = RetryPolicy()
) -> SitePurger:
    """The purger the api needs with these deploy settings.

    Args:
        deploy: ``config.deploy``: the backend, the account key and the pull zone id.
        base_url: The Core API root; ``CORE_API_URL`` (read now) when None.
        policy: Retries and timeouts of the purge requests.
    """
    if deploy.cdn != "bunny":
        return NoPurge()
    if not deploy.bunny_api_key or not deploy.bunny_pull_zone_id:
        # Names only, never values: the key is a credential.
        log.warning(
            "ECSTATIC_CDN=bunny without ECSTATIC_BUNNY_API_KEY and ECSTATIC_BUNNY_PULL_ZONE_ID: "
            "cache purges do nothing, so edges serve old files until they expire"
        )
        return NoPurge()
    client = BunnyPurge(deploy.bunny_api_key, base_url or CORE_API_URL, policy=policy)
    return BunnyZonePurger(client, deploy.bunny_pull_zone_id)


def purge_site(purger: SitePurger, site: dict[str, Any]) -> None:
    """Run ``purger`` on ``site``, turning its failures into ``Unavailable``.

    Raises:
        Unavailable: the purger failed (the CDN refused or could not be reached).
    """
    try:
        purger.purge(site)
    except EcstaticError:
        raise
    except Exception as exc:  # noqa: BLE001 - any CDN client error is a 503 to the caller
        log.warning(
            "cdn purge failed", extra={"site_id": site["id"], "error": exc.__class__.__name__}
        )
        raise Unavailable(f"cdn purge failed: {exc.__class__.__name__}") from exc
    log.info("cdn purged", extra={"site_id": site["id"]})
