"""The api room's WSGI app: ``create_app`` wires routes, ``build`` makes the real parts."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import falcon

from services.core.config import Config
from services.core.metrics import HttpMetrics
from services.core.runtime import Context, Mount
from services.falcon_apps.common import create_base_app

from . import redact
from .deploy_resources import (
    Activation,
    Credentials,
    DeployItem,
    DeployLog,
    Deploys,
    Previews,
    Purge,
)
from .middleware import AuthMiddleware
from .presenter import SitePresenter
from .purge import NoPurge, SitePurger, purger_for
from .resources import CurrentUser, HostMap, HostnameCheck, Sites
from .store import MetadataStore

__all__ = ["PATHS", "create_app", "build"]

# The api owns every /v1/ path except the query room's stats (the dispatcher decides
# precedence) and the /internal/ paths the public proxy never routes.
PATHS = re.compile(r"^/(v1|internal)/")


def create_app(
    store: MetadataStore,
    config: Config,
    http_metrics: HttpMetrics,
    purger: SitePurger | None = None,
) -> falcon.App:
    """The api's Falcon app around an already-open store.

    Args:
        store: users, tokens, sites, deploys, credentials and logs.
        config: supplies the site URLs, git URLs, hostnames and the credential lifetime.
        http_metrics: the process's request metrics.
        purger: empties the CDN cache of a site; the local backend has none to empty.
    """
    app = create_base_app(http_metrics, "api", middleware=[AuthMiddleware(store)])
    presenter = SitePresenter(config)
    sites = Sites(store, presenter, config)
    site = "/v1/sites/{site_id}"
    deploy = site + "/deploys/{deploy_id}"
    app.add_route("/v1/sites", sites)
    app.add_route(site, sites, suffix="item")
    app.add_route(site + "/credentials", Credentials(store, config.deploy_credential_seconds))
    app.add_route(site + "/deploys", Deploys(store, presenter, config))
    app.add_route(deploy, DeployItem(store, presenter))
    app.add_route(deploy + "/log", DeployLog(store))
    app.add_route(deploy + "/activate", Activation(store, presenter))
    # Branch names may hold slashes ("feature/login"): the rest of the path is the branch.
    app.add_route(site + "/previews/{branch:path}", Previews(store))
    app.add_route(site + "/purge", Purge(store, presenter, purger or NoPurge()))
    app.add_route("/v1/user", CurrentUser())
    app.add_route("/internal/hostmap", HostMap(store))
    api_host = urlsplit(config.public_url).hostname or ""
    app.add_route("/internal/hostnames/check", HostnameCheck(store, api_host))
    return app


def build(ctx: Context) -> Mount:
    """Open the metadata store under ``config.home`` and mount the api on its paths."""
    # Tokens never reach a log line through gunicorn's request URIs (see ``redact``).
    redact.install()
    store = MetadataStore(ctx.config.api_db)
    # The api alone holds the Bunny account key: purges of the pull zone happen here.
    app = create_app(store, ctx.config, ctx.http_metrics, purger=purger_for(ctx.config.deploy))
    return Mount(name="api", paths=PATHS, app=app, healthy=store.ping)
