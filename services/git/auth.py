"""HTTP Basic auth for git: the password is the Ecstatic API token, the user name is ignored.

The git room holds no keys: it asks the api (through ``SiteAuthorizer``) whether the
token's user can see the site named in the URL. Errors are one line of
``text/plain; charset=utf-8``, which the git client prints as ``remote: <message>``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from services.core.errors import NotFound, Unauthorized, Unavailable

__all__ = [
    "ENV_SITE",
    "ENV_SITE_ID",
    "ENV_TOKEN",
    "REPO_PATH",
    "BasicAuth",
    "Authorizer",
    "basic_credentials",
    "text_response",
]

log = logging.getLogger(__name__)

# /git/{site_id}.git/<git path>; the id format matches backend.SITE_ID.
REPO_PATH = re.compile(r"^/git/(?P<site_id>[0-9a-f]{16})\.git(?P<rest>/.*)?$")

ENV_SITE_ID = "ecstatic.site_id"
ENV_SITE = "ecstatic.site"
ENV_TOKEN = "ecstatic.token"


class Authorizer(Protocol):
    """``services.core.auth.SiteAuthorizer`` or a test fake."""

    def site(self, token: str | None, site_id: str) -> dict[str, Any]:
        """The site JSON; raises Unauthorized, NotFound or Unavailable."""


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic ...`` header, or None."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


def text_response(
    start_response: Callable[..., Any],
    status: str,
    message: str,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    """Answer with one line of plain text (what git shows the user as ``remote:``)."""
    body = (message.rstrip("\n") + "\n").encode("utf-8")
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            *headers,
        ],
    )
    return [body]


class BasicAuth:
    """WSGI wrapper: authorise ``/git/{site_id}.git/...`` requests before git sees them.

    On success the inner app finds the site id, the site JSON and the token in the
    environ under ``ENV_SITE_ID``, ``ENV_SITE`` and ``ENV_TOKEN``.
    """

    def __init__(
        self, app: Callable[..., Iterable[bytes]], authorizer: Authorizer, realm: str = "ecstatic"
    ):
        """Wrap ``app``.

        Args:
            app: The WSGI app that serves authorised requests.
            authorizer: Answers whether a token may see a site.
            realm: The Basic auth realm shown by clients.
        """
        self._app = app
        self._authorizer = authorizer
        self._challenge = ("WWW-Authenticate", f'Basic realm="{realm}"')

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Serve one request."""
        match = REPO_PATH.match(environ.get("PATH_INFO") or "")
        if match is None or match.group("rest") is None:
            return text_response(
                start_response,
                "404 Not Found",
                "no such repository: git URLs look like /git/<site id>.git",
            )
        site_id = match.group("site_id")
        credentials = basic_credentials(environ.get("HTTP_AUTHORIZATION"))
        if credentials is None or not credentials[1]:
            return text_response(
                start_response,
                "401 Unauthorized",
                "authentication required: use your Ecstatic API token as the password",
                [self._challenge],
            )
        token = credentials[1]
        try:
            site = self._authorizer.site(token, site_id)
        except Unauthorized:
            return text_response(
                start_response,
                "401 Unauthorized",
                "invalid token: check your Ecstatic API token",
                [self._challenge],
            )
        except NotFound:
            return text_response(
                start_response, "404 Not Found", f"site {site_id} not found, or it is not yours"
            )
        except Unavailable as exc:
            log.warning(
                "authorization unavailable", extra={"site_id": site_id, "reason": exc.message}
            )
            return text_response(
                start_response,
                "503 Service Unavailable",
                "the Ecstatic api is unavailable; try again shortly",
            )
        environ[ENV_SITE_ID] = site_id
        environ[ENV_SITE] = site
        environ[ENV_TOKEN] = token
        return self._app(environ, start_response)
