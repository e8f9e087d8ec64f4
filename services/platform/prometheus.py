"""Prometheus's scrape config from the layout map, for the local stack and production.

Every process of ``services.targets.processes`` and every platform program with metrics is
one job; where each one is reached is the caller's ``address(job, listener)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import yaml

from services.targets import PLATFORM, Listener, Process

__all__ = ["jobs", "scrape_config"]

Address = Callable[[str, Listener], str]  # (job, listener) -> "host:port"


def jobs(processes: Sequence[Process], address: Address) -> dict[str, tuple[str, str]]:
    """Job name -> (host:port, metrics path) for every part that exposes metrics."""
    found = {p.name: (address(p.name, p.http), "/metrics") for p in processes}
    for name, platform in PLATFORM.items():
        if platform.metrics:
            listener_name, path = platform.metrics
            listener = next(lis for lis in platform.listeners if lis.name == listener_name)
            found[name] = (address(name, listener), path)
    return found


def scrape_config(
    targets: dict[str, tuple[str, str]],
    interval: str = "5s",
    rule_files: Sequence[str] = (),
    alertmanagers: Sequence[str] = (),
) -> str:
    """prometheus.yml text scraping ``targets`` (see ``jobs``)."""
    config: dict = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": job, "metrics_path": path, "static_configs": [{"targets": [hostport]}]}
            for job, (hostport, path) in targets.items()
        ],
    }
    if rule_files:
        config["rule_files"] = list(rule_files)
    if alertmanagers:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]
        }
    header = "# Generated from services/targets.py (services/platform/prometheus.py).\n"
    return header + yaml.safe_dump(config, sort_keys=False)
