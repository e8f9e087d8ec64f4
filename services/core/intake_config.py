"""Settings of the intake (its listener, batching, spool and table) and of the query.

Part of ``Config`` (``config.intake``, ``config.query``), read by ``Config.from_env``
through ``read_intake`` and ``read_query``, and written back by ``environ`` so child
processes and pods get the same contract.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["BATCH_ROWS", "IntakeConfig", "QueryConfig", "read_intake", "read_query"]

Integer = Callable[[str, int, int, int], int]
Number = Callable[[str, float, float, float], float]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# Rows per insert at most. Bigger batches make fewer parts for the engine to merge: at
# 100,000 rather than 50,000 the embedded engine spent about a quarter less CPU storing
# a million bench lines (2.5 s against 3.2-3.6 s, merges included), and ClickHouse's
# own guidance for inserts is 10,000 to 100,000 rows. Memory: about 20 MB a batch.
BATCH_ROWS = 100_000


@dataclass(frozen=True)
class IntakeConfig:
    """The intake's knobs (README: "Analytics intake")."""

    syslog_host: str = "127.0.0.1"
    batch_rows: int = BATCH_ROWS  # rows per insert at most
    flush_seconds: float = 1.0  # a batch waits at most this long (lines queryable within 5 s)
    idle_seconds: float = 120.0  # a syslog connection that sends nothing this long is closed
    max_connections: int = 512
    max_frame_bytes: int = 64 * 1024
    # The CDN's edge addresses; empty accepts any peer (the firewall is the first gate).
    allow_cidrs: tuple[Network, ...] = ()
    spool_max_mb: int = 1024  # at the cap the intake stops reading (backpressure)
    ttl_days: int = 0  # rows older than this are dropped by ClickHouse; 0 keeps them

    def environ(self) -> dict[str, str]:
        """These settings as ``ECSTATIC_*`` variables."""
        return {
            "ECSTATIC_INTAKE_SYSLOG_HOST": self.syslog_host,
            "ECSTATIC_INTAKE_BATCH_ROWS": str(self.batch_rows),
            "ECSTATIC_INTAKE_FLUSH_SECONDS": repr(self.flush_seconds),
            "ECSTATIC_INTAKE_IDLE_SECONDS": repr(self.idle_seconds),
            "ECSTATIC_INTAKE_MAX_CONNECTIONS": str(self.max_connections),
            "ECSTATIC_INTAKE_MAX_FRAME_BYTES": str(self.max_frame_bytes),
            "ECSTATIC_INTAKE_ALLOW_CIDRS": ",".join(str(net) for net in self.allow_cidrs),
            "ECSTATIC_INTAKE_SPOOL_MAX_MB": str(self.spool_max_mb),
            "ECSTATIC_INTAKE_TTL_DAYS": str(self.ttl_days),
        }


@dataclass(frozen=True)
class QueryConfig:
    """What one analytics query may cost the engine (README: "Analytics queries")."""

    max_memory_mb: int = 512
    max_seconds: float = 10.0

    def environ(self) -> dict[str, str]:
        """These settings as ``ECSTATIC_*`` variables."""
        return {
            "ECSTATIC_QUERY_MAX_MEMORY_MB": str(self.max_memory_mb),
            "ECSTATIC_QUERY_MAX_SECONDS": repr(self.max_seconds),
        }


def _networks(raw: str, errors: list[str]) -> tuple[Network, ...]:
    networks = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            errors.append(f"ECSTATIC_INTAKE_ALLOW_CIDRS: {item[:50]!r} is not a CIDR")
    return tuple(networks)


def read_intake(
    env: Mapping[str, str], integer: Integer, number: Number, errors: list[str], bind_host: str
) -> IntakeConfig:
    """Read and check the intake settings; problems are appended to ``errors``."""
    return IntakeConfig(
        # The CDN's syslog port binds where the rooms do unless told otherwise.
        syslog_host=env.get("ECSTATIC_INTAKE_SYSLOG_HOST") or bind_host,
        batch_rows=integer("ECSTATIC_INTAKE_BATCH_ROWS", BATCH_ROWS, 1, 1_000_000),
        flush_seconds=number("ECSTATIC_INTAKE_FLUSH_SECONDS", 1.0, 0.05, 300),
        idle_seconds=number("ECSTATIC_INTAKE_IDLE_SECONDS", 120.0, 1.0, 86_400),
        max_connections=integer("ECSTATIC_INTAKE_MAX_CONNECTIONS", 512, 1, 100_000),
        max_frame_bytes=integer("ECSTATIC_INTAKE_MAX_FRAME_BYTES", 64 * 1024, 1024, 2**20),
        allow_cidrs=_networks(env.get("ECSTATIC_INTAKE_ALLOW_CIDRS") or "", errors),
        spool_max_mb=integer("ECSTATIC_INTAKE_SPOOL_MAX_MB", 1024, 1, 1 << 20),
        ttl_days=integer("ECSTATIC_INTAKE_TTL_DAYS", 0, 0, 100_000),
    )


def read_query(env: Mapping[str, str], integer: Integer, number: Number) -> QueryConfig:
    """Read and check the query settings (range errors go through ``integer``/``number``)."""
    return QueryConfig(
        max_memory_mb=integer("ECSTATIC_QUERY_MAX_MEMORY_MB", 512, 16, 1 << 20),
        max_seconds=number("ECSTATIC_QUERY_MAX_SECONDS", 10.0, 0.1, 3600),
    )
