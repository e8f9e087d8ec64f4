"""Serve an authorised git request with dulwich, bound to the caller's site.

``BasicAuth`` has checked the pusher's token with the api and put it in the environ. For a
push, that token is exchanged at once for a short-lived credential scoped to this site's
deploys, and dropped: the hooks, the pipeline and its logs only ever see the credential.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from dulwich.hooks import Hook
from dulwich.web import make_wsgi_chain

from services.core.errors import EcstaticError

from .auth import ENV_SITE, ENV_SITE_ID, ENV_TOKEN, text_response
from .backend import SiteBackend, SiteRepos
from .deploy_api import DeployApi
from .deploys import DeployStarter, Push
from .hooks import DeployHook, ValidateHook
from .middleware import ClosingIterator

__all__ = ["GitApp"]

log = logging.getLogger(__name__)


class GitApp:
    """Serves an authorised request with dulwich, bound to the caller's site."""

    def __init__(
        self,
        repos: SiteRepos,
        starter: DeployStarter,
        check: Callable[[Any, bytes], None],
        api: DeployApi,
        handlers: dict,
    ):
        """Wire the repositories, the deploy starter, the pre-push check and the api.

        Args:
            repos: The sites' bare repositories.
            starter: Starts deploys from the post-receive hook.
            check: ``check(repo, commit)`` raises ``StepFailed`` for a commit that can
                never deploy (``Checkout.check``).
            api: Exchanges the pusher's token for a deploy credential.
            handlers: dulwich's service handlers (receive-pack with the push limits and
                the streaming of deploy output: ``receive.make_handlers``).
        """
        self._repos = repos
        self._starter = starter
        self._check = check
        self._api = api
        self._handlers = handlers

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Serve one request."""
        site_id, site = environ[ENV_SITE_ID], environ[ENV_SITE]
        token = environ.pop(ENV_TOKEN)
        credential = None
        if (environ.get("PATH_INFO") or "").endswith("/git-receive-pack"):
            try:
                credential = self._api.credential(token, site_id)
            except EcstaticError as exc:
                log.warning("no deploy credential", extra={"site_id": site_id})
                return text_response(
                    start_response,
                    "503 Service Unavailable",
                    f"the Ecstatic api could not start a deploy ({exc.message}); try again",
                )
        del token  # past authorization, only the scoped credential travels on

        def hooks(repo) -> dict[str, Hook]:
            if credential is None:  # fetches and ref listings run no hooks
                return {}
            push = Push(site_id=site_id, site=site, repo=repo, credential=credential)
            return {
                "update": ValidateHook(lambda sha: self._check(repo, sha), site_id),
                "post-receive": DeployHook(self._starter, push),
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
