"""HTTP resources of the api room, its auth middleware and the JSON it answers with.

Auth is secure by default: every resource needs a valid bearer token unless its class
says ``auth = "public"``. "Missing" and "not yours" both answer 404, so ids cannot be
probed.
"""

from __future__ import annotations

from typing import Any

import falcon

from services.core.auth import bearer_token
from services.core.config import Config
from services.core.errors import Unauthorized

from .store import MetadataStore
from .validate import MAX_BODY_BYTES, deploy_body, max_body, read_json_object, site_body

__all__ = ["AuthMiddleware", "SitePresenter", "Sites", "Deploys", "CurrentUser", "HostMap"]


class AuthMiddleware:
    """Resolves ``Authorization: Bearer`` to ``req.context.user`` or answers 401."""

    def __init__(self, store: MetadataStore):
        self._store = store

    def process_resource(self, req: falcon.Request, resp, resource: Any, params: dict) -> None:
        """Authenticate before the responder runs (unmatched routes stay 404)."""
        req.context.user = None
        if resource is None or getattr(resource, "auth", "required") == "public":
            return
        token = bearer_token(req.get_header("Authorization"))
        if token is None:
            raise Unauthorized("missing bearer token")
        user = self._store.user_for_token(token)
        if user is None:
            raise Unauthorized("invalid token")
        req.context.user = user


class SitePresenter:
    """Turns store rows into the site and deploy JSON of the HTTP contract."""

    def __init__(self, config: Config):
        self._config = config

    def site(self, site: dict[str, Any]) -> dict[str, Any]:
        """Site JSON: id, name, url, git_url, hostnames, created_at, current_deploy."""
        current = site.get("current_deploy")
        return {
            "id": site["id"],
            "name": site["name"],
            "url": self._config.site_url(site["name"]),
            "git_url": self._config.git_url(site["id"]),
            "hostnames": [self._config.site_hostname(site["name"])],
            "created_at": site["created_at"],
            "current_deploy": self.deploy(current) if current else None,
        }

    @staticmethod
    def deploy(deploy: dict[str, Any]) -> dict[str, Any]:
        """Deploy JSON, exactly the contract's fields."""
        keys = (
            "id",
            "site_id",
            "commit_sha",
            "release",
            "file_count",
            "bytes",
            "created_at",
            "status",
        )
        return {key: deploy[key] for key in keys}


class Sites:
    """``/v1/sites`` (collection) and ``/v1/sites/{site_id}`` (suffix ``item``)."""

    def __init__(self, store: MetadataStore, presenter: SitePresenter, config: Config):
        self._store = store
        self._presenter = presenter
        self._config = config

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List the caller's sites."""
        sites = self._store.list_sites(req.context.user["id"])
        resp.media = {"sites": [self._presenter.site(site) for site in sites]}

    @falcon.before(max_body(MAX_BODY_BYTES))
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a site named by the body's ``name``."""
        name = site_body(read_json_object(req))
        site = self._store.create_site(
            req.context.user["id"], name, self._config.site_hostname(name)
        )
        resp.status = falcon.HTTP_201
        resp.location = f"/v1/sites/{site['id']}"
        resp.media = self._presenter.site(site)

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, site_id: str) -> None:
        """One of the caller's sites."""
        resp.media = self._presenter.site(self._store.get_site(req.context.user["id"], site_id))


class Deploys:
    """``/v1/sites/{site_id}/deploys``: a site's deploy history, newest first."""

    def __init__(self, store: MetadataStore, presenter: SitePresenter):
        self._store = store
        self._presenter = presenter

    def on_get(self, req: falcon.Request, resp: falcon.Response, site_id: str) -> None:
        """List the deploys of one of the caller's sites."""
        site = self._store.get_site(req.context.user["id"], site_id)
        deploys = self._store.list_deploys(site["id"])
        resp.media = {"deploys": [self._presenter.deploy(deploy) for deploy in deploys]}

    @falcon.before(max_body(MAX_BODY_BYTES))
    def on_post(self, req: falcon.Request, resp: falcon.Response, site_id: str) -> None:
        """Record a deploy; it becomes the site's ``current_deploy``."""
        fields = deploy_body(read_json_object(req))
        deploy = self._store.record_deploy(req.context.user["id"], site_id, **fields)
        resp.status = falcon.HTTP_201
        resp.media = self._presenter.deploy(deploy)


class CurrentUser:
    """``/v1/user``: who the token belongs to."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The caller's id and name."""
        user = req.context.user
        resp.media = {"id": user["id"], "name": user["name"]}


class HostMap:
    """``/internal/hostmap``: hostname to site id, for the CDN and the intake.

    Public because its readers hold no token; it is never routed by the public proxy,
    only reachable on loopback or inside the cluster.
    """

    auth = "public"

    def __init__(self, store: MetadataStore):
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Every hostname and its site id."""
        resp.media = {"hosts": self._store.hostmap()}


class HostnameCheck:
    """``/internal/hostnames/check?domain=``: Caddy's on-demand TLS question.

    Caddy asks before it requests a certificate for a hostname it has not seen; only
    names the api serves (and the api's own host) get a yes, so nobody can make the box
    ask Let's Encrypt for arbitrary names. Public for the same reason as ``HostMap``.
    """

    auth = "public"

    def __init__(self, store: MetadataStore, api_host: str):
        self._store = store
        self._api_host = api_host

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """200 for a known hostname, 404 otherwise."""
        domain = req.get_param("domain", required=True).strip().lower()
        if domain != self._api_host and not self._store.has_hostname(domain):
            raise falcon.HTTPNotFound(title="NotFound", description="unknown hostname")
        resp.media = {"hostname": domain}
