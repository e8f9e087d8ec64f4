"""The git room: smart HTTP at ``/git/{site_id}.git``; a push to the default branch deploys.

``create_app`` wires already-built collaborators (tests pass fakes); ``build`` makes the
real ones from the config. Request flow::

    request metrics -> ErrorGuard -> BasicAuth -> GitApp -> dulwich make_wsgi_chain
                                                 (per request: a backend bound to the
                                                  authorised site, with our hooks)

A push runs ``ValidateHook`` (dulwich's ``update`` hook: refuses unpublishable trees
before the branch moves) and then ``DeployHook`` (``post-receive``: publishes and tells
the pusher, through ``remote:`` lines, what went live and where).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dulwich.hooks import Hook
from dulwich.web import make_wsgi_chain

from services.cdn.local import LocalCDN
from services.core.auth import SiteAuthorizer
from services.core.metrics import GitMetrics, HttpMetrics, make_measured_app
from services.core.runtime import Context, Mount

from .auth import ENV_SITE, ENV_SITE_ID, ENV_TOKEN, Authorizer, BasicAuth
from .backend import SiteBackend, SiteRepos
from .checkout import Limits
from .deploy import Deployer
from .gate import guard
from .hooks import DeployHook, ValidateHook
from .limits import IntakeLimits
from .locks import SiteLocks
from .middleware import ClosingIterator, ErrorGuard, route_of
from .receive import HANDLERS, make_handlers
from .recorder import ApiDeployRecorder

__all__ = ["PATHS", "GitApp", "build", "create_app"]

PATHS = re.compile(r"^/git/")


class GitApp:
    """Serves an authorised request with dulwich, bound to the caller's site."""

    def __init__(self, repos: SiteRepos, deployer: Deployer, handlers=HANDLERS):
        """Wire the repositories, the deployer and dulwich's service handlers."""
        self._repos = repos
        self._deployer = deployer
        self._handlers = handlers

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Serve one request (``BasicAuth`` has put the site and token in the environ)."""
        site_id, site, token = environ[ENV_SITE_ID], environ[ENV_SITE], environ[ENV_TOKEN]

        def hooks(repo) -> dict[str, Hook]:
            return {
                "update": ValidateHook(self._deployer, repo, site_id),
                "post-receive": DeployHook(self._deployer, repo, site_id, site, token),
            }

        backend = SiteBackend(self._repos, site_id, f"/git/{site_id}.git", hooks)
        _drop_dechunked_marker(environ)
        try:
            result = make_wsgi_chain(backend, handlers=self._handlers)(environ, start_response)
        except BaseException:
            backend.close()
            raise
        return ClosingIterator(result, backend.close)


def _drop_dechunked_marker(environ: dict[str, Any]) -> None:
    # dulwich de-chunks a body sent with "Transfer-Encoding: chunked" itself. Servers
    # that already did (gunicorn, which says so with wsgi.input_terminated) keep the
    # header, so dulwich would de-chunk twice and fail every push bigger than git's
    # http.postBuffer. The stdlib server passes the raw body and sets no such flag.
    if (
        environ.get("wsgi.input_terminated")
        and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    ):
        del environ["HTTP_TRANSFER_ENCODING"]


def create_app(
    git_root: Path,
    authorizer: Authorizer,
    deployer: Deployer,
    http_metrics: HttpMetrics | None = None,
    intake: IntakeLimits | None = None,
) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """The git room's WSGI app.

    Args:
        git_root: Where the bare repositories live (``config.git_root``).
        authorizer: Answers whether a token may see a site (``SiteAuthorizer``).
        deployer: Runs deploys from the post-receive hook.
        http_metrics: Request metrics of the process; None to skip them.
        intake: Push limits (body bytes and rate, object sizes, pushes per user).

    Returns:
        A WSGI app serving ``/git/{site_id}.git/...``.
    """
    intake = intake or IntakeLimits()
    git = GitApp(SiteRepos(git_root), deployer, make_handlers(intake))
    # Bodies are spooled within the limits before dulwich reads them; the gate sits
    # inside auth, so it counts pushes per authorised user.
    app: Any = ErrorGuard(BasicAuth(guard(git, intake, Path(git_root) / ".spool"), authorizer))
    if http_metrics is not None:
        app = make_measured_app(app, http_metrics, "git", route_of)
    return app


def build(ctx: Context) -> Mount:
    """Build the git room from the process config."""
    config = ctx.config
    cdn = LocalCDN(config.cdn_root)
    # Finish what a killed process left: half-removed releases, temporaries, tmp packs.
    cdn.sweep()
    SiteRepos(config.git_root).sweep()
    deployer = Deployer(
        cdn=cdn,
        recorder=ApiDeployRecorder(config.api_url),
        metrics=GitMetrics(ctx.registry),
        limits=Limits(
            max_files=config.max_deploy_files,
            max_bytes=config.max_deploy_bytes,
            max_file_bytes=config.max_file_bytes,
            max_depth=config.max_tree_depth,
        ),
        locks=SiteLocks(config.git_root / ".locks"),
    )
    intake = IntakeLimits(
        max_push_bytes=config.git_max_push_bytes,
        max_object_bytes=config.max_file_bytes,
        min_rate=config.git_min_rate,
        grace_seconds=config.git_body_grace_seconds,
        pushes_per_user=config.git_pushes_per_user,
    )
    authorizer = SiteAuthorizer(config.api_url, config.auth_cache_seconds)
    app = create_app(
        config.git_root, authorizer, deployer, http_metrics=ctx.http_metrics, intake=intake
    )
    return Mount(name="git", paths=PATHS, app=app)
