"""The git room: smart HTTP at ``/git/{site_id}.git``, deploys, and restores.

``create_app`` wires already-built collaborators (tests pass fakes); ``build`` makes the
real ones from the config. Request flow::

    request metrics -> ErrorGuard -> BasicAuth -> PushGate/BodyGuard -> GitApp -> dulwich
    request metrics -> RestoreApp   (POST /v1/sites/{id}/deploys/{deploy_id}/restore)

A push runs ``ValidateHook`` (dulwich's ``update`` hook: refuses a tree or config that can
never deploy, before the branch moves), then ``DeployHook`` (``post-receive``: queues a
deploy per pushed branch and streams its log to the pusher as ``remote:`` lines). The
deploy itself runs on the ``DeployQueue``'s workers through the ``Pipeline``'s steps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from services.cdn.base import ReleaseBackend
from services.cdn.local import LocalCDN
from services.core.auth import SiteAuthorizer
from services.core.config import Config
from services.core.metrics import GitMetrics, HttpMetrics, make_measured_app
from services.core.runtime import Context, Mount

from .auth import Authorizer, BasicAuth
from .backend import SiteRepos
from .building import builder_for
from .checkout import Limits
from .deploy_api import DeployApi
from .deploys import DeployStarter
from .gate import guard
from .inflight import InFlight
from .limits import IntakeLimits
from .locks import SiteLocks
from .middleware import ErrorGuard, route_of
from .pipeline import Pipeline
from .queue import DeployQueue
from .receive import make_handlers
from .receiver import GitApp
from .restore import PATH as RESTORE_PATH
from .restore import RestoreApp
from .steps import Activate, Build, Checkout, Publish, Record
from .streaming import StreamingReceivePackHandler

__all__ = ["PATHS", "build", "create_app"]

# The map's route for this room (services/targets.py); the mount answers the same paths.
PATHS = re.compile(r"^/(git/|v1/sites/[^/]+/deploys/[^/]+/restore$)")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def create_app(
    git_root: Path,
    authorizer: Authorizer,
    starter: DeployStarter,
    checkout: Checkout,
    api: DeployApi,
    restore: WSGIApp,
    http_metrics: HttpMetrics | None = None,
    intake: IntakeLimits | None = None,
) -> WSGIApp:
    """The git room's WSGI app.

    Args:
        git_root: Where the bare repositories live (``config.git_root``).
        authorizer: Answers whether a token may see a site (``SiteAuthorizer``).
        starter: Starts deploys from the post-receive hook.
        checkout: The checkout step, whose ``check`` refuses a push before its ref moves.
        api: The api's deploy routes (the push's credential comes from there).
        restore: Serves the restore route.
        http_metrics: Request metrics of the process; None to skip them.
        intake: Push limits (body bytes and rate, object sizes, pushes per user).
    """
    intake = intake or IntakeLimits()
    handlers = make_handlers(intake, base=StreamingReceivePackHandler)
    git = GitApp(SiteRepos(git_root), starter, checkout.check, api, handlers)
    # Bodies are spooled within the limits before dulwich reads them; the gate sits
    # inside auth, so it counts pushes per authorised user.
    pushes: Any = ErrorGuard(BasicAuth(guard(git, intake, Path(git_root) / ".spool"), authorizer))

    restores = ErrorGuard(restore)

    def app(environ, start_response):
        if RESTORE_PATH.match(environ.get("PATH_INFO") or ""):
            return restores(environ, start_response)
        return pushes(environ, start_response)

    if http_metrics is not None:
        return make_measured_app(app, http_metrics, "git", route_of)
    return app


def _backend(config: Config) -> ReleaseBackend:
    cdn = LocalCDN(config.cdn_root, keep=config.deploy.releases_kept)
    cdn.sweep()  # what a killed process left: half-removed releases, temporaries
    if config.deploy.cdn == "local":
        return cdn
    from services.cdn.bunny import BunnyCDN
    from services.cdn.bunny_releases import BunnyReleases
    from services.cdn.bunny_storage import BunnyStorage

    storage = BunnyStorage(
        config.deploy.bunny_storage_zone,
        config.deploy.bunny_storage_key,
        host=config.deploy.bunny_storage_host,
    )
    return BunnyReleases(cdn, BunnyCDN(storage))


def build(ctx: Context) -> list:
    """Build the git room from the process config: its mount and its deploy workers."""
    config = ctx.config
    SiteRepos(config.git_root).sweep()
    cdn = _backend(config)
    metrics = GitMetrics(ctx.registry)
    api = DeployApi(config.api_url)
    locks = SiteLocks(config.git_root / ".locks")
    checkout = Checkout(
        Limits(
            max_files=config.max_deploy_files,
            max_bytes=config.max_deploy_bytes,
            max_file_bytes=config.max_file_bytes,
            max_depth=config.max_tree_depth,
        ),
        # On the repositories' volume, beside the deploys' working directories: links work.
        cache_root=config.git_root / ".checkouts",
    )
    d = config.deploy
    builder = builder_for(config, metrics)
    steps = [
        checkout,
        Build(builder),
        Publish(cdn, metrics),
        Activate(cdn, api, metrics),
        Record(api, cdn, keep=d.releases_kept),
    ]
    pipeline = Pipeline(steps, api, metrics, config.git_root / ".work")
    pipeline.sweep()
    # Deploys a killed git process left unfinished are marked failed ("interrupted").
    inflight = InFlight(config.git_root / ".inflight")
    inflight.recover_in_background(api)
    queue = DeployQueue(pipeline, locks, workers=d.workers)
    intake = IntakeLimits(
        max_push_bytes=config.git_max_push_bytes,
        max_object_bytes=config.max_file_bytes,
        min_rate=config.git_min_rate,
        grace_seconds=config.git_body_grace_seconds,
        pushes_per_user=config.git_pushes_per_user,
    )
    authorizer = SiteAuthorizer(config.api_url, config.auth_cache_seconds)
    app = create_app(
        config.git_root,
        authorizer,
        DeployStarter(api, queue, cdn, inflight),
        checkout,
        api,
        RestoreApp(api, authorizer.site, cdn, locks),
        http_metrics=ctx.http_metrics,
        intake=intake,
    )
    return [Mount(name="git", paths=PATHS, app=app), queue]
