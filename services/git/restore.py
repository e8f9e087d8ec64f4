"""``POST /v1/sites/{id}/deploys/{deploy_id}/restore``: make an earlier deploy live again.

Served by the git room because it holds the releases (the layout map routes this path
here). On ``local`` it is one atomic symlink switch; on ``bunny`` it uploads only the
files that differ from what is live. The api's live pointer moves once the CDN serves it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from services.cdn.base import PublishError, ReleaseBackend
from services.core.auth import bearer_token
from services.core.errors import EcstaticError, NotFound, Unauthorized, Unavailable

from .deploy_api import DeployApi
from .locks import LockTimeout, SiteLocks
from .steps import purge

__all__ = ["PATH", "RestoreApp"]

log = logging.getLogger(__name__)

PATH = re.compile(r"^/v1/sites/(?P<site_id>[^/]+)/deploys/(?P<deploy_id>[^/]+)/restore$")
_STATUS = {400: "400 Bad Request", 401: "401 Unauthorized", 404: "404 Not Found"}


def _json(start_response, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    if status.startswith("401"):
        headers.append(("WWW-Authenticate", 'Bearer realm="ecstatic"'))
    start_response(status, headers)
    return [data]


def _error(start_response, status: str, name: str, message: str) -> list[bytes]:
    return _json(start_response, status, {"error": name, "message": message})


class RestoreApp:
    """The restore route as a small WSGI app (authorised through the api)."""

    def __init__(
        self,
        api: DeployApi,
        authorize: Callable[[str | None, str], dict[str, Any]],
        cdn: ReleaseBackend,
        locks: SiteLocks,
    ):
        """Wire the api client, the site authorizer, the backend and the deploy locks."""
        self._api = api
        self._authorize = authorize
        self._cdn = cdn
        self._locks = locks

    def __call__(self, environ: dict[str, Any], start_response) -> Iterable[bytes]:
        """Restore one deploy."""
        match = PATH.match(environ.get("PATH_INFO") or "")
        if match is None:
            return _error(start_response, "404 Not Found", "NotFound", "no such route")
        if environ.get("REQUEST_METHOD") != "POST":
            return _error(start_response, "405 Method Not Allowed", "MethodNotAllowed", "use POST")
        site_id, deploy_id = match["site_id"], match["deploy_id"]
        try:
            token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
            site = self._authorize(token, site_id)
            # The user's token buys a deploy credential; nothing else is done with it.
            credential = self._api.credential(token or "", site_id)
            deploy = self._restore(site, site_id, deploy_id, credential)
        except Unauthorized as exc:
            return _error(start_response, "401 Unauthorized", "Unauthorized", exc.message)
        except NotFound as exc:
            return _error(start_response, "404 Not Found", "NotFound", exc.message)
        except _Refused as exc:
            return _error(start_response, "409 Conflict", "Conflict", str(exc))
        except (Unavailable, LockTimeout, PublishError) as exc:
            log.warning("restore failed", extra={"site_id": site_id, "reason": str(exc)})
            return _error(start_response, "503 Service Unavailable", "Unavailable", str(exc))
        except EcstaticError as exc:
            return _error(start_response, "400 Bad Request", "BadRequest", exc.message)
        return _json(start_response, "200 OK", deploy)

    def _restore(self, site, site_id: str, deploy_id: str, credential: str) -> dict[str, Any]:
        deploy = self._api.get(credential, site_id, deploy_id)
        if deploy.get("state") != "live" or not deploy.get("release"):
            raise _Refused(f"deploy {deploy_id} never went live ({deploy.get('state')})")
        if deploy.get("context") == "preview":
            hostnames = [deploy["hostname"]]
        else:
            hostnames = list(site.get("hostnames") or [])
        with self._locks.hold(site_id):  # never between a push's publish and activate
            if not self._cdn.has_release(site_id, deploy["release"]):
                raise _Refused(
                    f"release {deploy['release']} is no longer stored; push that commit again"
                )
            preview = deploy.get("context") == "preview"
            result = self._cdn.activate(site_id, hostnames, deploy["release"], preview)
            self._api.activate(credential, site_id, deploy_id)
        if result.remote:
            purge(self._api, credential, site_id, lambda line: None)
        log.info("deploy restored", extra={"site_id": site_id, "deploy": deploy_id})
        return self._api.get(credential, site_id, deploy_id)


class _Refused(Exception):
    """The deploy exists but cannot be restored."""
