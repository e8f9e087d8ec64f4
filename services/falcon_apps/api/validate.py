"""Checks for everything a caller sends the api: names, bodies, deploy fields.

Pure functions raising ``BadRequest`` with a message a person can act on; they accept
any value (parsed JSON is untrusted) and never raise anything else.
"""

from __future__ import annotations

import json
import re
from typing import Any

import falcon

from services.core.errors import BadRequest

__all__ = [
    "MAX_BODY_BYTES",
    "SITE_NAME",
    "USER_NAME",
    "is_site_name",
    "is_user_name",
    "site_name",
    "max_body",
    "read_json_object",
    "site_body",
    "deploy_body",
]

MAX_BODY_BYTES = 64 * 1024

# A DNS label, so every site name is also a valid hostname part.
SITE_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
USER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_SHA = re.compile(r"[0-9a-fA-F]{40}")
# Release ids name a directory under the CDN root: one safe path segment, never "." or "..".
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# SQLite stores signed 64-bit integers.
_MAX_INT = 2**63 - 1


def _matches(pattern: re.Pattern[str], value: Any) -> bool:
    # fullmatch, never match + "$": "$" also matches before a trailing newline.
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def is_site_name(value: Any) -> bool:
    """True when ``value`` is a string that is a DNS label (lowercase)."""
    return _matches(SITE_NAME, value)


def is_user_name(value: Any) -> bool:
    """True when ``value`` is a valid user name."""
    return _matches(USER_NAME, value)


def site_name(value: Any) -> str:
    """``value`` as a site name.

    Raises:
        BadRequest: it is not a string or not a DNS label.
    """
    if not isinstance(value, str):
        raise BadRequest("name must be a string")
    if not is_site_name(value):
        raise BadRequest(
            "name must be 1-63 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def max_body(limit: int):
    """A Falcon ``before`` hook rejecting bodies whose Content-Length exceeds ``limit``."""

    def hook(req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        length = req.content_length
        if length is not None and length > limit:
            raise BadRequest(f"body is {length} bytes, the limit is {limit}")

    return hook


def read_json_object(req: falcon.Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request body parsed as a JSON object.

    Reads at most ``limit + 1`` bytes, so a body without Content-Length (chunked) is
    bounded too.

    Raises:
        BadRequest: the body is too large, not JSON, or not a JSON object.
    """
    raw = req.bounded_stream.read(limit + 1)
    if len(raw) > limit:
        raise BadRequest(f"body exceeds {limit} bytes")
    if not raw.strip():
        raise BadRequest("body must be a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON and over-long integer literals.
        raise BadRequest(f"body is not valid JSON: {exc.__class__.__name__}") from exc
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _only(body: dict[str, Any], required: tuple[str, ...]) -> None:
    missing = [key for key in required if key not in body]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(key for key in body if key not in required)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")


def _count(body: dict[str, Any], key: str) -> int:
    value = body[key]
    # bool is an int subclass in Python; true/false are not counts.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key} must be an integer")
    if not 0 <= value <= _MAX_INT:
        raise BadRequest(f"{key} must be between 0 and {_MAX_INT}")
    return value


def site_body(body: dict[str, Any]) -> str:
    """The site name from a ``POST /v1/sites`` body.

    Raises:
        BadRequest: a field is missing, unknown or invalid.
    """
    _only(body, ("name",))
    return site_name(body["name"])


def deploy_body(body: dict[str, Any]) -> dict[str, Any]:
    """The checked fields of a ``POST /v1/sites/{id}/deploys`` body.

    Raises:
        BadRequest: a field is missing, unknown or invalid.
    """
    _only(body, ("commit_sha", "release", "file_count", "bytes"))
    if not _matches(_SHA, body["commit_sha"]):
        raise BadRequest("commit_sha must be 40 hex digits")
    if not _matches(_RELEASE, body["release"]):
        raise BadRequest(
            "release must be 1-128 characters of A-Z, a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return {
        "commit_sha": body["commit_sha"].lower(),
        "release": body["release"],
        "file_count": _count(body, "file_count"),
        "bytes": _count(body, "bytes"),
    }
