"""Keep tokens out of gunicorn's log lines: no query strings, no credentials.

gunicorn writes an access line per request whenever a ``logconfig_dict`` is set (as
``services.server`` does), even with ``accesslog`` off, and its default format carries
the full request line (``%(r)s``, query string included) and the Referer. Its error log
names the request URI too. A token sent as ``?token=`` once reached the api's log that
way. This filter rewrites those records before any handler sees them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

__all__ = ["QueryStringFilter", "install", "scrub"]

# A "?" followed by anything up to whitespace or a quote: the query string of a URI.
_QUERY = re.compile(r"\?[^\s\"']+")
_SECRET_HEADERS = ("{authorization}i", "{cookie}i", "{proxy-authorization}i", "{x-api-key}i")
LOGGERS = ("gunicorn.access", "gunicorn.error")


def scrub(text: str) -> str:
    """``text`` with every URI query string replaced by ``?[redacted]``."""
    return _QUERY.sub("?[redacted]", text)


class QueryStringFilter(logging.Filter):
    """Rewrites gunicorn's records: request line without its query, secret headers gone."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        args = record.args
        if isinstance(args, Mapping) and "r" in args:
            self._access(args)
        elif isinstance(args, tuple):
            record.args = tuple(scrub(a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg)
        return True

    @staticmethod
    def _access(atoms) -> None:
        # gunicorn's atoms: m method, U path (no query), H protocol, f referer.
        atoms["r"] = f"{atoms.get('m', '-')} {atoms.get('U', '-')} {atoms.get('H', '-')}"
        atoms["q"] = "-"
        atoms["f"] = scrub(str(atoms.get("f", "-")))
        for key in _SECRET_HEADERS:
            if key in atoms:
                atoms[key] = "[redacted]"


def install() -> None:
    """Add the filter to gunicorn's loggers once per process (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QueryStringFilter) for f in logger.filters):
            logger.addFilter(QueryStringFilter())
