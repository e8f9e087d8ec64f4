"""The api's deploy routes, as the git room uses them.

The pusher's token is used once, to get a short-lived credential scoped to the site's
deploys (``POST /v1/sites/{id}/credentials``); every later call carries that credential,
so the deploy machinery never holds the pusher's raw token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import requests

from services.core.errors import BadRequest, Conflict, NotFound, Unauthorized, Unavailable

__all__ = ["DeployApi"]

log = logging.getLogger(__name__)

Json = dict[str, Any]


class DeployApi:
    """A thin client for the api's deploy routes (``docs``: the README's HTTP API)."""

    def __init__(
        self, api_url: str, session: requests.Session | None = None, timeout: float = 10.0
    ):
        """Create the client.

        Args:
            api_url: Base URL of the api (``config.api_url``).
            session: HTTP session, injectable for tests.
            timeout: Seconds to wait for each answer.
        """
        self._api_url = api_url.rstrip("/")
        if session is None:
            session = requests.Session()
            # The api is Ecstatic's own, reached directly: no proxy or netrc applies, and
            # reading them from the environment costs milliseconds on every call.
            session.trust_env = False
        self._session = session
        self._timeout = timeout

    # -- the one call made with the pusher's token --
    def credential(self, token: str, site_id: str) -> str:
        """Exchange the pusher's token for a credential scoped to this site's deploys."""
        return self._call("POST", site_id, "/credentials", token, {})["credential"]

    # -- with the credential --
    def create(self, credential: str, site_id: str, body: Json) -> Json:
        """Create a queued deploy: ``{context, branch, commit_sha, author, message}``."""
        return self._call("POST", site_id, "/deploys", credential, body)

    def get(self, credential: str, site_id: str, deploy_id: str) -> Json:
        """One deploy."""
        return self._call("GET", site_id, f"/deploys/{quote(deploy_id, safe='')}", credential)

    def list(self, credential: str, site_id: str) -> list[Json]:
        """The site's deploys, newest first."""
        answer = self._call("GET", site_id, "/deploys", credential)
        return answer["deploys"] if isinstance(answer, dict) else answer

    def update(self, credential: str, site_id: str, deploy_id: str, changes: Json) -> Json:
        """Move a deploy along: ``{state, step, reason, file_count, bytes, ...}``."""
        path = f"/deploys/{quote(deploy_id, safe='')}"
        return self._call("PATCH", site_id, path, credential, changes)

    def append_log(
        self, credential: str, site_id: str, deploy_id: str, lines: Sequence[str]
    ) -> None:
        """Append lines to the deploy's log."""
        path = f"/deploys/{quote(deploy_id, safe='')}/log"
        self._call("POST", site_id, path, credential, {"lines": list(lines)})

    def activate(self, credential: str, site_id: str, deploy_id: str) -> Json:
        """Point the deploy's context (production or its preview) at this deploy."""
        path = f"/deploys/{quote(deploy_id, safe='')}/activate"
        return self._call("POST", site_id, path, credential, {})

    def remove_preview(self, credential: str, site_id: str, branch: str) -> None:
        """Forget a deleted branch's preview hostname."""
        self._call("DELETE", site_id, f"/previews/{quote(branch, safe='')}", credential)

    def purge(self, credential: str, site_id: str) -> None:
        """Ask the api (which alone holds the CDN admin key) to purge the site's cache."""
        self._call("POST", site_id, "/purge", credential, {})

    def _call(
        self, method: str, site_id: str, path: str, secret: str, body: Json | None = None
    ) -> Any:
        url = f"{self._api_url}/v1/sites/{quote(site_id, safe='')}{path}"
        try:
            # Not retried here: a POST that timed out may still have been applied.
            response = self._session.request(
                method,
                url,
                json=body,
                headers={"Authorization": f"Bearer {secret}"},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise Unavailable(f"api unreachable: {exc.__class__.__name__}") from exc
        if response.status_code in (200, 201, 202):
            return response.json() if response.content else {}
        if response.status_code == 204:
            return {}
        message = _message(response)
        errors = {401: Unauthorized, 404: NotFound, 409: Conflict, 400: BadRequest}
        error = errors.get(response.status_code)
        if error is not None:
            raise error(message)
        raise Unavailable(f"api answered {response.status_code}: {message}")


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
        return str(body.get("message") or body.get("error") or response.status_code)
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}"
