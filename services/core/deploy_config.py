"""Settings of deploys: which CDN backend, its credentials, and the build sandbox's limits.

Part of ``Config`` (``config.deploy``), read by ``Config.from_env`` through ``read``, and
written back by ``environ`` so child processes and pods get the same contract.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

__all__ = ["BUILDERS", "CDN_BACKENDS", "DEFAULT_BUILDER_VERSIONS", "DeployConfig", "read"]

CDN_BACKENDS = ("local", "bunny")
# Where builds run: bubblewrap on this box, or a Kubernetes Job (services/build/kube_run.py).
BUILDERS = ("sandbox", "kubernetes")
# What infra/images/builder holds (Debian bookworm's packages): ``ecstatic.toml`` pins are
# checked against these, since git cannot run the builder image's tools itself.
DEFAULT_BUILDER_VERSIONS = "hugo=0.111.3,mkdocs=1.4.2"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_VERSIONS = re.compile(r"([a-z0-9]+=[0-9A-Za-z.+_-]+(,[a-z0-9]+=[0-9A-Za-z.+_-]+)*)?")

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
    # Kubernetes builds (builder="kubernetes"): the Job's namespace, image and service
    # account, the claim it shares with git, where git mounts that claim, and the versions
    # of the generators in the image (name=version,...).
    builder: str = "sandbox"
    builder_namespace: str = "ecstatic-builds"
    builder_image: str = "localhost/ecstatic-builder:0.1.0"
    builder_service_account: str = "builder"
    builder_claim: str = "build-exchange"
    builder_exchange: str = ""
    builder_versions: str = DEFAULT_BUILDER_VERSIONS

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
            "ECSTATIC_BUILDER": self.builder,
            "ECSTATIC_BUILDER_NAMESPACE": self.builder_namespace,
            "ECSTATIC_BUILDER_IMAGE": self.builder_image,
            "ECSTATIC_BUILDER_SERVICE_ACCOUNT": self.builder_service_account,
            "ECSTATIC_BUILDER_CLAIM": self.builder_claim,
            "ECSTATIC_BUILDER_EXCHANGE": self.builder_exchange,
            "ECSTATIC_BUILDER_VERSIONS": self.builder_versions,
        }

    def generator_versions(self) -> dict[str, str]:
        """``builder_versions`` as generator name -> version."""
        pairs = (item.partition("=") for item in self.builder_versions.split(",") if item)
        return {name.strip(): version.strip() for name, _, version in pairs}


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
    builder = env.get("ECSTATIC_BUILDER") or "sandbox"
    if builder not in BUILDERS:
        errors.append(f"ECSTATIC_BUILDER={builder!r} must be one of {', '.join(BUILDERS)}")
    kube = {
        key: env.get(f"ECSTATIC_BUILDER_{key.upper()}") or getattr(DeployConfig, f"builder_{key}")
        for key in ("namespace", "image", "service_account", "claim", "exchange", "versions")
    }
    for key in ("namespace", "service_account", "claim"):
        if not _DNS_LABEL.fullmatch(kube[key]):
            errors.append(f"ECSTATIC_BUILDER_{key.upper()}={kube[key]!r} is not a DNS label")
    if builder == "kubernetes" and not kube["exchange"].startswith("/"):
        errors.append(
            "ECSTATIC_BUILDER_EXCHANGE must be the absolute path where git mounts "
            "ECSTATIC_BUILDER_CLAIM with ECSTATIC_BUILDER=kubernetes"
        )
    if not _VERSIONS.fullmatch(kube["versions"]):
        errors.append(f"ECSTATIC_BUILDER_VERSIONS={kube['versions']!r} must be name=version,...")
    config = replace(config, builder=builder, **{f"builder_{k}": v for k, v in kube.items()})
    if cdn == "bunny":
        # Names only, never the values: these are credentials.
        for name in ("ECSTATIC_BUNNY_STORAGE_ZONE", "ECSTATIC_BUNNY_STORAGE_KEY"):
            if not env.get(name):
                errors.append(f"{name} is required with ECSTATIC_CDN=bunny")
    return config
