"""The api's auth middleware: user tokens everywhere, push credentials on a few routes.

Secure by default: a resource needs a user's bearer token unless its class says
``auth = "public"``. A push credential (``ecsd_…``) is accepted only where the resource
lists the method in ``credential_methods``, and only for the site in the URL; anywhere
else it answers 401 exactly like a bad token.
"""

from __future__ import annotations

from typing import Any

import falcon

from services.core.auth import bearer_token
from services.core.errors import Unauthorized

from .credentials import CREDENTIAL_PREFIX
from .store import MetadataStore

__all__ = ["AuthMiddleware"]


class AuthMiddleware:
    """Resolves ``Authorization: Bearer`` to ``req.context.user`` or answers 401.

    ``req.context.credential`` is the push credential when one was used, else None.
    """

    def __init__(self, store: MetadataStore):
        """Keep the store that knows tokens and credentials."""
        self._store = store

    def process_resource(self, req: falcon.Request, resp, resource: Any, params: dict) -> None:
        """Authenticate before the responder runs (unmatched routes stay 404)."""
        req.context.user = None
        req.context.credential = None
        if resource is None or getattr(resource, "auth", "required") == "public":
            return
        token = bearer_token(req.get_header("Authorization"))
        if token is None:
            raise Unauthorized("missing bearer token")
        if token.startswith(CREDENTIAL_PREFIX):
            self._credential(req, resource, params, token)
            return
        user = self._store.user_for_token(token)
        if user is None:
            raise Unauthorized("invalid token")
        req.context.user = user

    def _credential(self, req: falcon.Request, resource: Any, params: dict, token: str) -> None:
        allowed = req.method in getattr(resource, "credential_methods", frozenset())
        credential = self._store.credentials.resolve(token) if allowed else None
        if credential is None or credential.site_id != params.get("site_id"):
            # Same answer for unknown, wrong route and wrong site: nothing to probe.
            raise Unauthorized("invalid token")
        if credential.expired:
            raise Unauthorized("deploy credential expired: ask for a new one")
        req.context.user = {"id": credential.user_id}
        req.context.credential = credential
