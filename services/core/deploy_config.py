"""Settings of deploys: which CDN backend, its credentials, and the build sandbox's limits.

Part of ``Config`` (``config.deploy``), read by ``Config.from_env`` through ``read``, and
written back by ``environ`` so child processes and pods get the same contract.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["CDN_BACKENDS", "DeployConfig", "read"]

CDN_BACKENDS = ("local", "bunny")

Integer = Callable[[str, int, int, int], int]


@dataclass(frozen=True)
class DeployConfig:
    """The deploy pipeline's knobs (README: "Deploys")."""

    cdn: str = "local"
    # Bunny Storage (the git room uploads) and the account key (the api alone purges).
    bunny_storage_zone: str = ""
    bunny_storage_key: str = ""
    bunny_storage_host: str = "storage.bunnycdn.com"
    bunny_api_key: str = ""
    bunny_pull_zone_id: int = 0
    workers: int = 2  # deploys (and builds) running at once
    releases_kept: int = 5
    build_timeout_seconds: int = 900
    build_memory_mb: int = 2048
    build_processes: int = 256
    build_output_mb: int = 4

    def environ(self) -> dict[str, str]:
        """These settings as ``ECSTATIC_*`` variables."""
        return {
            "ECSTATIC_CDN": self.cdn,
            "ECSTATIC_BUNNY_STORAGE_ZONE": self.bunny_storage_zone,
            "ECSTATIC_BUNNY_STORAGE_KEY": self.bunny_storage_key,
            "ECSTATIC_BUNNY_STORAGE_HOST": self.bunny_storage_host,
            "ECSTATIC_BUNNY_API_KEY": self.bunny_api_key,
            "ECSTATIC_BUNNY_PULL_ZONE_ID": str(self.bunny_pull_zone_id),
            "ECSTATIC_DEPLOY_WORKERS": str(self.workers),
            "ECSTATIC_RELEASES_KEPT": str(self.releases_kept),
            "ECSTATIC_BUILD_TIMEOUT_SECONDS": str(self.build_timeout_seconds),
            "ECSTATIC_BUILD_MEMORY_MB": str(self.build_memory_mb),
            "ECSTATIC_BUILD_PROCESSES": str(self.build_processes),
            "ECSTATIC_BUILD_OUTPUT_MB": str(self.build_output_mb),
        }


def read(env: Mapping[str, str], integer: Integer, errors: list[str]) -> DeployConfig:
    """Read and check the deploy settings; problems are appended to ``errors``."""
    cdn = env.get("ECSTATIC_CDN") or "local"
    if cdn not in CDN_BACKENDS:
        errors.append(f"ECSTATIC_CDN={cdn!r} must be one of {', '.join(CDN_BACKENDS)}")
    config = DeployConfig(
        cdn=cdn,
        bunny_storage_zone=env.get("ECSTATIC_BUNNY_STORAGE_ZONE") or "",
        bunny_storage_key=env.get("ECSTATIC_BUNNY_STORAGE_KEY") or "",
        bunny_storage_host=env.get("ECSTATIC_BUNNY_STORAGE_HOST") or "storage.bunnycdn.com",
        bunny_api_key=env.get("ECSTATIC_BUNNY_API_KEY") or "",
        bunny_pull_zone_id=integer("ECSTATIC_BUNNY_PULL_ZONE_ID", 0, 0, 2**63),
        workers=integer("ECSTATIC_DEPLOY_WORKERS", 2, 1, 32),
        releases_kept=integer("ECSTATIC_RELEASES_KEPT", 5, 2, 1000),
        build_timeout_seconds=integer("ECSTATIC_BUILD_TIMEOUT_SECONDS", 900, 1, 86_400),
        build_memory_mb=integer("ECSTATIC_BUILD_MEMORY_MB", 2048, 64, 1 << 20),
        build_processes=integer("ECSTATIC_BUILD_PROCESSES", 256, 8, 65_536),
        build_output_mb=integer("ECSTATIC_BUILD_OUTPUT_MB", 4, 1, 1024),
    )
    if cdn == "bunny":
        # Names only, never the values: these are credentials.
        for name in ("ECSTATIC_BUNNY_STORAGE_ZONE", "ECSTATIC_BUNNY_STORAGE_KEY"):
            if not env.get(name):
                errors.append(f"{name} is required with ECSTATIC_CDN=bunny")
    return config
