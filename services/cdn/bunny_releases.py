"""Bunny as the deploy pipeline's backend: releases kept here, the live one synced there.

Bunny's storage zone holds one version per prefix and has no atomic switch, so the
releases themselves are kept in a local store (the same release directories ``LocalCDN``
writes, without its live links): a restore re-syncs an old release and sends only the
files that differ from what Bunny holds. Production lives under ``{site_id}/``, a
preview under ``{hostname}/`` (its pull zone or edge rule points there).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from .base import (
    ActivateResult,
    Listing,
    PublishError,
    PublishResult,
    ReleaseBackend,
    check_hostname,
)
from .bunny import BunnyCDN
from .local import LocalCDN

__all__ = ["BunnyReleases"]

log = logging.getLogger(__name__)


class BunnyReleases(ReleaseBackend):
    """Stage locally, activate by syncing to Bunny, purge through the api."""

    def __init__(self, store: LocalCDN, bunny: BunnyCDN):
        """Wire the local release store and the Bunny zone."""
        self._store = store
        self._bunny = bunny

    def stage(
        self,
        site_id: str,
        release_id: str,
        source: Path,
        adopt: bool = False,
        fresh: Sequence[str] = (),
        listing: Listing | None = None,
    ) -> PublishResult:
        """Keep the release locally (restores need it)."""
        return self._store.stage(
            site_id, release_id, source, adopt=adopt, fresh=fresh, listing=listing
        )

    def activate(
        self, site_id: str, hostnames: Sequence[str], release_id: str, preview: bool = False
    ) -> ActivateResult:
        """Sync the release into the prefix its hostnames are served from."""
        source = self._store.release_path(site_id, release_id)
        if not source.is_dir():
            raise PublishError(f"release {release_id} is not stored")
        # Checked before any upload: a bad hostname must not leave Bunny ahead of the links.
        if isinstance(hostnames, str) or not hostnames:
            raise PublishError("a release needs at least one hostname")
        hosts = list(dict.fromkeys(check_hostname(h) for h in hostnames))
        total = ActivateResult(remote=True)
        prefixes = hosts if preview else [site_id]
        for prefix in prefixes:
            result = self._bunny.sync_release(prefix, source)
            total = ActivateResult(
                uploaded=total.uploaded + result.uploaded,
                skipped=total.skipped + result.skipped,
                deleted=total.deleted + result.deleted,
                bytes_uploaded=total.bytes_uploaded + result.bytes_uploaded,
                remote=True,
            )
        # The local links say which release each hostname serves (prune keeps those).
        self._store.activate(site_id, hostnames, release_id, preview)
        return total

    def has_release(self, site_id: str, release_id: str) -> bool:
        """True when the release is kept locally."""
        return self._store.has_release(site_id, release_id)

    def remove_hostnames(self, site_id: str, hostnames: Sequence[str]) -> None:
        """Delete previews' prefixes on Bunny (only previews are ever removed), then links."""
        for hostname in hostnames:
            self._bunny.remove_prefix(check_hostname(hostname))
        self._store.remove_hostnames(site_id, hostnames)

    def prune(self, site_id: str, keep: Sequence[str]) -> None:
        """Prune the local store (Bunny holds only the live files)."""
        self._store.prune(site_id, keep)
