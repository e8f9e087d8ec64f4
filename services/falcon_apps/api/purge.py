"""The CDN purge seam: the api holds the CDN admin key, so purges go through it.

Anything with ``purge(site) -> None`` works; ``site`` is the site JSON the api shows its
owner (id, name, hostnames, previews). The Bunny implementation is wired in by the
process that builds the app; the local backend serves files straight from disk and has
no cache to purge.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from services.core.errors import EcstaticError, Unavailable

__all__ = ["SitePurger", "NoPurge", "purge_site"]

log = logging.getLogger(__name__)


class SitePurger(Protocol):
    """Empties the CDN's cache of one site."""

    def purge(self, site: dict[str, Any]) -> None:
        """Purge every cached file of ``site``."""


class NoPurge:
    """The local backend's purger: nothing is cached, so nothing to do."""

    def purge(self, site: dict[str, Any]) -> None:
        """Do nothing."""


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
