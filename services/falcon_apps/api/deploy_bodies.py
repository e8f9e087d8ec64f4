"""Checks for the deploy pipeline's bodies: new deploys, PATCHes and build log lines.

Like ``validate``: pure functions over untrusted parsed JSON, raising ``BadRequest``
with a message a person can act on, and nothing else.
"""

from __future__ import annotations

import math
import re
from typing import Any

from services.core.errors import BadRequest

from .states import CONTEXTS, REASONS, STATES, STEPS
from .validate import deploy_body

__all__ = [
    "MAX_LOG_BODY_BYTES",
    "MAX_LOG_LINES_PER_POST",
    "branch_name",
    "new_deploy_body",
    "patch_body",
    "log_body",
]

MAX_LOG_BODY_BYTES = 1024 * 1024
MAX_LOG_LINES_PER_POST = 5_000
_SHA = re.compile(r"[0-9a-fA-F]{40}")
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Printable text only: no control characters, no lone surrogates (SQLite stores UTF-8).
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
# Fields only the 0.1.0 body has: their presence (without a context) selects it.
_LEGACY_ONLY = frozenset({"release", "file_count", "bytes"})
_MAX_INT = 2**63 - 1
_MAX_STEP_SECONDS = 7 * 24 * 3600.0


def _text(body: dict[str, Any], key: str, limit: int, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise BadRequest(f"{key} must be a string of 1-{limit} characters")
    if _CONTROL.search(value) and key != "message":
        raise BadRequest(f"{key} must not contain control characters")
    return value


def _known(body: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(key for key in body if key not in allowed)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")


def branch_name(value: Any) -> str:
    """``value`` as a branch name: 1-255 printable characters.

    Raises:
        BadRequest: it is not.
    """
    return _text({"branch": value}, "branch", 255, required=True)


def new_deploy_body(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Which kind of ``POST /v1/sites/{id}/deploys`` this is, and its checked fields.

    Returns:
        ``("queued", {context, branch, commit_sha, author, message})`` for the pipeline's
        body, or ``("finished", {commit_sha, release, file_count, bytes})`` for 0.1.0's
        "this deploy is live now" body.

    Raises:
        BadRequest: a field is missing, unknown or invalid.
    """
    if "context" not in body and (not body or body.keys() & _LEGACY_ONLY):
        return "finished", deploy_body(body)
    _known(body, frozenset({"context", "branch", "commit_sha", "author", "message"}))
    context = body.get("context")
    if context not in CONTEXTS:
        raise BadRequest(f"context must be one of: {', '.join(CONTEXTS)}")
    branch = body.get("branch")
    if context == "preview" or branch is not None:
        branch = branch_name(branch)
    sha = body.get("commit_sha")
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise BadRequest("commit_sha must be 40 hex digits")
    fields = {"context": context, "branch": branch, "commit_sha": sha.lower()}
    fields["author"] = _text(body, "author", 256)
    fields["message"] = _text(body, "message", 4096)
    return "queued", fields


def _count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise BadRequest(f"{key} must be an integer between 0 and {_MAX_INT}")
    return value


def _step_seconds(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise BadRequest("step_seconds must be an object of step: seconds")
    checked = {}
    for step, seconds in value.items():
        if step not in STEPS:
            raise BadRequest(f"step_seconds keys must be steps: {', '.join(STEPS)}")
        number_ok = isinstance(seconds, int | float) and not isinstance(seconds, bool)
        if not number_ok or not math.isfinite(seconds) or not 0 <= seconds <= _MAX_STEP_SECONDS:
            raise BadRequest(f"step_seconds.{step} must be a number of seconds, 0-604800")
        checked[step] = float(seconds)
    return checked


def _choice(value: Any, key: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise BadRequest(f"{key} must be one of: {', '.join(allowed)}")
    return value


def patch_body(body: dict[str, Any]) -> dict[str, Any]:
    """The checked fields of a ``PATCH /v1/sites/{id}/deploys/{deploy_id}`` body.

    Raises:
        BadRequest: no field, or a field is unknown or invalid.
    """
    checks = {
        "state": lambda v: _choice(v, "state", STATES),
        "step": lambda v: _choice(v, "step", STEPS),
        "reason": lambda v: _choice(v, "reason", REASONS),
        "file_count": lambda v: _count(v, "file_count"),
        "bytes": lambda v: _count(v, "bytes"),
        "generator": lambda v: _text({"generator": v}, "generator", 128, required=True),
        "release": _release,
        "step_seconds": _step_seconds,
    }
    _known(body, frozenset(checks))
    if not body:
        raise BadRequest(f"give at least one of: {', '.join(checks)}")
    return {key: checks[key](value) for key, value in body.items()}


def _release(value: Any) -> str:
    if not isinstance(value, str) or not _RELEASE.fullmatch(value):
        raise BadRequest(
            "release must be 1-128 characters of A-Z, a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return value


def log_body(body: dict[str, Any]) -> list[str]:
    """The lines of a ``POST .../log`` body: ``{"lines": [str, ...]}``.

    Raises:
        BadRequest: not a list of strings, or more than ``MAX_LOG_LINES_PER_POST``.
    """
    _known(body, frozenset({"lines"}))
    lines = body.get("lines")
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise BadRequest("lines must be a list of strings")
    if len(lines) > MAX_LOG_LINES_PER_POST:
        raise BadRequest(f"at most {MAX_LOG_LINES_PER_POST} lines per request")
    # Lone surrogates cannot be stored as UTF-8; keep the line, mark the bad character.
    return [line.encode("utf-8", "replace").decode("utf-8") for line in lines]
