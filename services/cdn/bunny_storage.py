"""A client for bunny.net's Edge Storage HTTP API: list, walk, put, get and delete files.

One ``BunnyStorage`` talks to one storage zone at ``https://{host}/{zone}/`` with the
zone's password in the ``AccessKey`` header; retries and errors come from
``bunny_http``. The AccessKey never appears in a log line, an exception message or a
repr.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import requests

from .base import PublishError, check_relative_path
from .bunny_http import (
    BunnyError,
    BunnyNotFound,
    RetryPolicy,
    pooled_session,
    request_with_retries,
)

__all__ = ["BunnyStorage", "StorageEntry", "sha256_hex"]

# Files up to this size are sent from memory; larger ones are streamed from disk, so a
# sync holds at most (workers x this) bytes of file contents at once.
_STREAM_ABOVE = 1 << 20


@dataclass(frozen=True)
class StorageEntry:
    """One element of a directory listing (the fields a sync needs)."""

    name: str
    length: int
    is_directory: bool
    checksum: str | None  # uppercase hex SHA-256 of the content; None for directories


def sha256_hex(data: bytes) -> str:
    """Uppercase hex SHA-256, the form Bunny's ``Checksum`` header and listing use."""
    return hashlib.sha256(data).hexdigest().upper()


def _quoted(path: str) -> str:
    try:
        parts = check_relative_path(path)
    except PublishError as exc:
        raise ValueError(str(exc)) from None
    return "/".join(quote(part, safe="") for part in parts)


class BunnyStorage:
    """Files of one Bunny storage zone, over its HTTP API."""

    def __init__(
        self,
        zone: str,
        access_key: str,
        host: str = "storage.bunnycdn.com",
        *,
        scheme: str = "https",
        pool_size: int = 8,
        policy: RetryPolicy = RetryPolicy(),
    ):
        """Prepare the client (no request is sent until a method is called).

        Args:
            zone: The storage zone name.
            access_key: The zone's password (not the account API key).
            host: The zone's regional host (``StorageHostname``), e.g.
                ``ny.storage.bunnycdn.com``; ``host:port`` for a test double.
            scheme: ``https``; ``http`` only for a local test double.
            pool_size: Connections kept open: at least the number of parallel callers.
            policy: Retries, backoff and per-request timeouts.
        """
        self.zone = zone
        self.host = host
        self.pool_size = pool_size
        self._base = f"{scheme}://{host}/{quote(zone, safe='')}/"
        self._policy = policy
        self._access_key = access_key
        self._session = pooled_session(pool_size)

    def __repr__(self) -> str:
        """Name the zone and host, never the key."""
        return f"BunnyStorage(zone={self.zone!r}, host={self.host!r})"

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def list(self, directory: str = "") -> list[StorageEntry]:
        """List one directory (``""`` = the zone root); a missing directory lists empty."""
        url = self._base + (_quoted(directory) + "/" if directory else "")
        response = self._send("GET", url, f"list {directory or '/'}")
        if response.status_code == 404:
            return []
        return [
            StorageEntry(
                name=item["ObjectName"],
                length=int(item.get("Length") or 0),
                is_directory=bool(item["IsDirectory"]),
                checksum=(item.get("Checksum") or "").upper() or None,
            )
            for item in response.json()
        ]

    def walk(self, prefix: str = "") -> dict[str, str | None]:
        """Every file under ``prefix``, recursively: ``{path relative to prefix: checksum}``.

        The checksum is uppercase hex SHA-256, or None if Bunny did not report one.
        """
        found: dict[str, str | None] = {}
        pending = [""]
        while pending:
            relative = pending.pop()
            directory = "/".join(p for p in (prefix, relative) if p)
            for entry in self.list(directory):
                if not entry.name or "/" in entry.name:
                    raise BunnyError(f"unexpected entry {entry.name!r} in {directory or '/'}")
                path = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_directory:
                    pending.append(path)
                else:
                    found[path] = entry.checksum
        return found

    def put(self, path: str, data: bytes | Path, *, checksum: str | None = None) -> None:
        """Upload (or overwrite) one file; Bunny verifies the ``Checksum`` header.

        Args:
            path: Zone-relative POSIX path; missing parent directories are created.
            data: The contents, or a local file to stream (reopened on each retry).
            checksum: Uppercase hex SHA-256 if already known; computed otherwise.

        Raises:
            BunnyError: e.g. HTTP 400 when the checksum does not match the contents.
        """
        if isinstance(data, Path):
            checksum = checksum or _file_sha256(data)
            # A callable body is reopened on every attempt, so a retry resends it whole.
            big = data.stat().st_size > _STREAM_ABOVE
            body = functools.partial(open, data, "rb") if big else data.read_bytes()
        else:
            checksum = checksum or sha256_hex(data)
            body = data
        headers = {"Checksum": checksum.upper()}
        self._send("PUT", self._base + _quoted(path), f"PUT {path}", body=body, headers=headers)

    def get(self, path: str) -> bytes:
        """Download one file.

        Raises:
            BunnyNotFound: if there is no such file.
        """
        response = self._send("GET", self._base + _quoted(path), f"GET {path}")
        if response.status_code == 404:
            raise BunnyNotFound(f"{path} does not exist in storage zone {self.zone}", 404)
        return response.content

    def delete(self, path: str) -> bool:
        """Delete one file; False if it was already gone (a retried delete may find that)."""
        response = self._send("DELETE", self._base + _quoted(path), f"DELETE {path}")
        return response.status_code != 404

    def delete_dir(self, prefix: str) -> bool:
        """Delete a directory and everything under it; False if it did not exist.

        Raises:
            ValueError: for the zone root (``""``), which this client never deletes.
        """
        if not prefix.strip("/"):
            raise ValueError("refusing to delete the storage zone root")
        url = self._base + _quoted(prefix.rstrip("/")) + "/"
        return self._send("DELETE", url, f"DELETE {prefix}/").status_code != 404

    def _send(self, method: str, url: str, what: str, **kwargs) -> requests.Response:
        headers = {"AccessKey": self._access_key, **kwargs.pop("headers", {})}
        return request_with_retries(
            self._session,
            method,
            url,
            what=what,
            policy=self._policy,
            describe_401=(
                f"wrong password for storage zone {self.zone!r}, or the zone is not "
                f"on {self.host} (use the zone's StorageHostname for its region)"
            ),
            headers=headers,
            **kwargs,
        )


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:  # file_digest streams: memory stays bounded
        return hashlib.file_digest(handle, "sha256").hexdigest().upper()
