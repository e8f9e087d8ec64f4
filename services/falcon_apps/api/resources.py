"""HTTP resources of the api room: sites, the current user, and the internal lookups.

Auth (``middleware``) is secure by default: every resource needs a valid bearer token
unless its class says ``auth = "public"``. "Missing" and "not yours" both answer 404, so
ids cannot be probed. The deploy pipeline's resources live in ``deploy_resources``.
"""

from __future__ import annotations

import falcon

from services.core.config import Config

from .presenter import SitePresenter
from .store import MetadataStore
from .validate import MAX_BODY_BYTES, max_body, read_json_object, site_body

__all__ = ["Sites", "CurrentUser", "HostMap", "HostnameCheck"]


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
