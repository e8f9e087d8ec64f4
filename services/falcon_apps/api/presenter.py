"""Turns store rows into the site and deploy JSON of the HTTP contract."""

from __future__ import annotations

from typing import Any

from services.core.config import Config

from .deploys import DEPLOY_FIELDS

__all__ = ["SitePresenter"]


class SitePresenter:
    """Site JSON (with its live deploy and previews) and deploy JSON."""

    def __init__(self, config: Config):
        """Keep the config that makes URLs and hostnames."""
        self._config = config

    def site(self, site: dict[str, Any]) -> dict[str, Any]:
        """Site JSON: id, name, url, git_url, hostnames, created_at, live_deploy, previews.

        ``current_deploy`` repeats ``live_deploy`` for 0.1.0 clients.
        """
        live = self.deploy(site["live_deploy"]) if site.get("live_deploy") else None
        return {
            "id": site["id"],
            "name": site["name"],
            "url": self._config.site_url(site["name"]),
            "git_url": self._config.git_url(site["id"]),
            "hostnames": [self._config.site_hostname(site["name"])],
            "created_at": site["created_at"],
            "live_deploy": live,
            "current_deploy": live,
            "previews": [self.preview(p) for p in site.get("previews", [])],
        }

    def preview(self, preview: dict[str, Any]) -> dict[str, Any]:
        """Preview JSON: branch, hostname, url, live_deploy_id."""
        # Preview hostnames are always "{label}.{sites_domain}": its URL is a site URL.
        label = preview["hostname"].split(".", 1)[0]
        return {
            "branch": preview["branch"],
            "hostname": preview["hostname"],
            "url": self._config.site_url(label),
            "live_deploy_id": preview["live_deploy_id"],
        }

    @staticmethod
    def deploy(deploy: dict[str, Any]) -> dict[str, Any]:
        """Deploy JSON: every field of the record, and ``current``."""
        return {**{key: deploy[key] for key in DEPLOY_FIELDS}, "current": deploy["current"]}
