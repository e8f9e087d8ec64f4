"""Tell the api about a deploy, with the pusher's own token (the git room holds no keys)."""

from __future__ import annotations

import logging
from typing import Any

import requests

from services.core.errors import BadRequest, NotFound, Unauthorized, Unavailable

__all__ = ["ApiDeployRecorder"]

log = logging.getLogger(__name__)


class ApiDeployRecorder:
    """``POST /v1/sites/{id}/deploys`` on the api."""

    def __init__(
        self, api_url: str, session: requests.Session | None = None, timeout: float = 10.0
    ):
        """Create the recorder.

        Args:
            api_url: Base URL of the api (``config.api_url``).
            session: HTTP session, injectable for tests.
            timeout: Seconds to wait for the api.
        """
        self._api_url = api_url.rstrip("/")
        self._session = session or requests.Session()
        self._timeout = timeout

    def record(self, token: str, site_id: str, deploy: dict[str, Any]) -> dict[str, Any]:
        """Record a deploy and return the api's deploy JSON.

        Args:
            token: The pusher's API token.
            site_id: The site deployed.
            deploy: ``{"commit_sha", "release", "file_count", "bytes"}``.

        Raises:
            Unauthorized, NotFound, BadRequest: the api refused the deploy.
            Unavailable: the api could not be reached or failed.
        """
        url = f"{self._api_url}/v1/sites/{requests.utils.quote(site_id, safe='')}/deploys"
        try:
            # Not retried: a POST that timed out may still have been recorded.
            response = self._session.post(
                url,
                json=deploy,
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise Unavailable(f"api unreachable: {exc.__class__.__name__}") from exc
        if response.status_code in (200, 201):
            return response.json()
        message = _message(response)
        if response.status_code == 401:
            raise Unauthorized(message)
        if response.status_code == 404:
            raise NotFound(message)
        if response.status_code in (400, 409, 422):
            raise BadRequest(message)
        raise Unavailable(f"api answered {response.status_code}: {message}")


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
        return str(body.get("message") or body.get("error") or response.status_code)
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}"
