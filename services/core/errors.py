"""Domain exceptions, mapped to HTTP errors in one place (``falcon_apps.common``)."""

__all__ = ["EcstaticError", "BadRequest", "Unauthorized", "NotFound", "Conflict", "Unavailable"]


class EcstaticError(Exception):
    """Base of every error a room raises on purpose."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(EcstaticError):
    """The caller sent something malformed."""


class Unauthorized(EcstaticError):
    """No valid credentials."""


class NotFound(EcstaticError):
    """Missing, or not the caller's: both look the same from outside."""


class Conflict(EcstaticError):
    """The request clashes with existing state (e.g. a taken site name)."""


class Unavailable(EcstaticError):
    """A dependency (api, ClickHouse) cannot be reached right now."""
