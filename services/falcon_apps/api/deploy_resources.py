"""The deploy pipeline's HTTP resources: deploys, build logs, activation, previews, purge.

The git receiver drives a deploy with a push credential (see ``credentials``): each class
lists in ``credential_methods`` the methods where one is accepted, for its own site only
(``middleware``). Responders parse, call the store and present; errors are
``services.core.errors``, mapped to HTTP in ``falcon_apps.common``.
"""

from __future__ import annotations

import falcon

from services.core.config import Config
from services.core.errors import BadRequest, NotFound

from .db import iso
from .deploy_bodies import MAX_LOG_BODY_BYTES, branch_name, log_body, new_deploy_body, patch_body
from .presenter import SitePresenter
from .purge import SitePurger, purge_site
from .store import MetadataStore
from .validate import MAX_BODY_BYTES, max_body, read_json_object

__all__ = ["Credentials", "Deploys", "DeployItem", "DeployLog", "Activation", "Previews", "Purge"]


class Credentials:
    """``/v1/sites/{site_id}/credentials``: a short-lived push credential for one site."""

    def __init__(self, store: MetadataStore, ttl_seconds: int):
        self._store = store
        self._ttl = ttl_seconds

    def on_post(self, req: falcon.Request, resp: falcon.Response, site_id: str) -> None:
        """Issue a credential; only a user's token may ask (never another credential)."""
        raw, expires_at = self._store.credentials.issue(req.context.user["id"], site_id, self._ttl)
        resp.status = falcon.HTTP_201
        resp.media = {
            "credential": raw,
            "site_id": site_id,
            "expires_at": iso(expires_at),
        }


class Deploys:
    """``/v1/sites/{site_id}/deploys``: a site's deploys, highest number first."""

    # The git room lists them to prune releases by the record's order.
    credential_methods = frozenset({"GET", "POST"})

    def __init__(self, store: MetadataStore, presenter: SitePresenter, config: Config):
        self._store = store
        self._presenter = presenter
        self._domain = config.sites_domain

    def on_get(self, req: falcon.Request, resp: falcon.Response, site_id: str) -> None:
        """List the deploys of one of the caller's sites."""
        deploys = self._store.deploys.list(req.context.user["id"], site_id)
        resp.media = {"deploys": [self._presenter.deploy(deploy) for deploy in deploys]}

    @falcon.before(max_body(MAX_BODY_BYTES))
    def on_post(self, req: falcon.Request, resp: falcon.Response, site_id: str) -> None:
        """Queue a deploy (or, with 0.1.0's body, record one that is live now)."""
        kind, fields = new_deploy_body(read_json_object(req))
        user_id = req.context.user["id"]
        if kind == "finished":
            deploy = self._store.deploys.record_finished(user_id, site_id, fields)
        else:
            deploy = self._store.deploys.create(user_id, site_id, fields, self._domain)
        resp.status = falcon.HTTP_201
        resp.location = f"/v1/sites/{site_id}/deploys/{deploy['id']}"
        resp.media = self._presenter.deploy(deploy)


class DeployItem:
    """``/v1/sites/{site_id}/deploys/{deploy_id}``: one deploy, and its progress reports."""

    credential_methods = frozenset({"GET", "PATCH"})

    def __init__(self, store: MetadataStore, presenter: SitePresenter):
        self._store = store
        self._presenter = presenter

    def on_get(self, req, resp, site_id: str, deploy_id: str) -> None:
        """One deploy."""
        deploy = self._store.deploys.get(req.context.user["id"], site_id, deploy_id)
        resp.media = self._presenter.deploy(deploy)

    @falcon.before(max_body(MAX_BODY_BYTES))
    def on_patch(self, req, resp, site_id: str, deploy_id: str) -> None:
        """Move the deploy along (state, step, counts, timings); 409 for an illegal move."""
        changes = patch_body(read_json_object(req))
        deploy = self._store.deploys.update(req.context.user["id"], site_id, deploy_id, changes)
        resp.media = self._presenter.deploy(deploy)


class DeployLog:
    """``/v1/sites/{site_id}/deploys/{deploy_id}/log``: the build log, capped."""

    credential_methods = frozenset({"POST"})

    def __init__(self, store: MetadataStore):
        self._store = store

    def on_get(self, req, resp, site_id: str, deploy_id: str) -> None:
        """The kept lines, the deploy's state and whether lines were dropped."""
        resp.media = self._store.logs.read(req.context.user["id"], site_id, deploy_id)

    @falcon.before(max_body(MAX_LOG_BODY_BYTES))
    def on_post(self, req, resp, site_id: str, deploy_id: str) -> None:
        """Append lines (already scrubbed of secrets by the git side)."""
        lines = log_body(read_json_object(req, MAX_LOG_BODY_BYTES))
        self._store.logs.append(req.context.user["id"], site_id, deploy_id, lines)
        resp.status = falcon.HTTP_204


class Activation:
    """``/v1/sites/{site_id}/deploys/{deploy_id}/activate``: make a live deploy current."""

    credential_methods = frozenset({"POST"})

    def __init__(self, store: MetadataStore, presenter: SitePresenter):
        self._store = store
        self._presenter = presenter

    def on_post(self, req, resp, site_id: str, deploy_id: str) -> None:
        """Point production (or the deploy's preview branch) at it; answer the site."""
        user_id = req.context.user["id"]
        self._store.deploys.activate(user_id, site_id, deploy_id)
        resp.media = self._presenter.site(self._store.get_site(user_id, site_id))


class Previews:
    """``/v1/sites/{site_id}/previews/{branch}``: stop serving a preview branch."""

    credential_methods = frozenset({"DELETE"})

    def __init__(self, store: MetadataStore):
        self._store = store

    def on_delete(self, req, resp, site_id: str, branch: str) -> None:
        """Remove the branch's hostname and pointer; its deploy records stay."""
        self._store.delete_preview(req.context.user["id"], site_id, _branch(branch))
        resp.status = falcon.HTTP_204


def _branch(value: str) -> str:
    # A branch that could never have been recorded is simply not there.
    try:
        return branch_name(value)
    except BadRequest as exc:
        raise NotFound(f"no preview of branch {value!r}") from exc


class Purge:
    """``/v1/sites/{site_id}/purge``: empty the CDN's cache of the site (202)."""

    credential_methods = frozenset({"POST"})

    def __init__(self, store: MetadataStore, presenter: SitePresenter, purger: SitePurger):
        self._store = store
        self._presenter = presenter
        self._purger = purger

    def on_post(self, req, resp, site_id: str) -> None:
        """Ask the CDN to drop its cached copies; they refresh from the new release."""
        site = self._store.get_site(req.context.user["id"], site_id)
        purge_site(self._purger, self._presenter.site(site))
        resp.status = falcon.HTTP_202
        resp.media = {"site_id": site_id, "purged": True}
