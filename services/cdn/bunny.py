"""The Bunny CDN backend: every site synced into its own prefix of one storage zone.

Layout of the storage zone (a pull zone per site serves ``/{site_id}/`` as its root)::

    /{zone}/{site_id}/<files of the live release>

Unlike ``LocalCDN`` there are no release directories and no atomic switch: a publish
syncs the new files over the old ones (see ``sync``). Hostnames live on the pull zone
and cache purges need the account key, so both belong to the api room (``bunny_purge``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .base import CDNBackend, PublishResult, SourceFile, check_hostname, check_identifier
from .bunny_storage import BunnyStorage
from .sync import SyncResult, files_from_sources, scan_directory, sync_tree

__all__ = ["BunnyCDN"]

log = logging.getLogger(__name__)


class BunnyCDN(CDNBackend):
    """Sites as prefixes of one Bunny storage zone, updated by sync."""

    def __init__(self, storage: BunnyStorage, *, workers: int = 8):
        """Use ``storage`` with ``workers`` parallel uploads.

        Args:
            storage: The zone's client; its ``pool_size`` must be at least ``workers``
                so no worker waits for a connection.
            workers: Parallel uploads per sync (Bunny allows 100 per zone).

        Raises:
            ValueError: for fewer than 1 worker, or a pool smaller than ``workers``.
        """
        if workers < 1 or storage.pool_size < workers:
            raise ValueError(
                f"need 1 <= workers <= storage.pool_size, got {workers} and {storage.pool_size}"
            )
        self._storage = storage
        self._workers = workers

    def __repr__(self) -> str:
        """Name the zone, never its key."""
        return f"BunnyCDN({self._storage!r}, workers={self._workers})"

    def sync_release(self, site_id: str, source_dir: Path) -> SyncResult:
        """Make the site's prefix hold exactly the files of ``source_dir``.

        Raises:
            PublishError: an invalid site id.
            SyncError: see ``sync.sync_tree``; ``replaced == 0`` means nothing changed.
        """
        check_identifier("site id", site_id)
        local = scan_directory(Path(source_dir))
        return self._sync(site_id, local)

    def remove_prefix(self, prefix: str) -> bool:
        """Delete everything under one prefix (a removed preview); False if it was gone."""
        check_identifier("prefix", prefix)
        return self._storage.delete_dir(prefix)

    def publish(
        self,
        site_id: str,
        hostnames: Sequence[str],
        release_id: str,
        source: Path | Iterable[SourceFile],
    ) -> PublishResult:
        """Sync ``source`` into the site's prefix (see ``CDNBackend.publish``).

        ``hostnames`` are only validated: they are attached to the site's pull zone by
        the api room, not stored here. ``release_id`` only labels the log line, since a
        prefix holds one release. Unlike the base contract, a failure after some uploads
        leaves the live site partly updated (``SyncError.replaced > 0``).
        """
        check_identifier("site id", site_id)
        check_identifier("release id", release_id)
        for host in hostnames:
            check_hostname(host)
        if isinstance(source, (str, os.PathLike)):
            local = scan_directory(Path(source))
        else:
            local = files_from_sources(source)
        self._sync(site_id, local, release_id)
        return PublishResult(file_count=len(local), bytes=sum(f.size for f in local.values()))

    def _sync(self, site_id: str, local, release_id: str | None = None) -> SyncResult:
        result = sync_tree(self._storage, local, site_id, workers=self._workers)
        log.info(
            "release synced to bunny",
            extra={"site_id": site_id, "release": release_id, **result.__dict__},
        )
        return result
