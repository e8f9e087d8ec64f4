"""Structured logs: one JSON object per line on stderr, gunicorn's own lines included.

Every record passes ``RedactingFilter`` on its way out, so no token reaches a log line
even when a library logs a URL, a header or an exception that carries one.
"""

import logging
import logging.config
import re

__all__ = ["RedactingFilter", "logging_dict", "redact", "setup_logging"]

# API tokens (ecs_...) and push credentials (ecsd_...), Basic credentials, and the
# values of token-ish query parameters, wherever they appear in a string.
_SECRETS = re.compile(
    r"\becsd?_[A-Za-z0-9_-]{8,}"
    r"|(?i:\b(?:basic|bearer)\s+)[A-Za-z0-9+/=._~-]{8,}"
    r"|(?i:\b(?:access_token|token|password)=)[^&\s\"']+"
    r"|(?<=://)[^/\s:@]*:[^/\s@]*(?=@)"
)
_REDACTED = "[redacted]"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def redact(text: str) -> str:
    """``text`` with every token-shaped string replaced by ``[redacted]``."""

    def replace(match: re.Match) -> str:
        found = match.group(0)
        head = re.match(r"(?i)(basic|bearer)\s+|(access_token|token|password)=", found)
        return (head.group(0) if head else "") + _REDACTED

    return _SECRETS.sub(replace, text)


def _clean(value, depth: int = 0):
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "backslashreplace"))
    if depth < 4 and isinstance(value, dict):
        return {k: _clean(v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, (list, tuple)):
        return type(value)(_clean(v, depth + 1) for v in value)
    if isinstance(value, BaseException):
        return redact(repr(value))
    return value


class RedactingFilter(logging.Filter):
    """Redacts secrets from a record's message, arguments, extra fields and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Clean ``record`` in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the line
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, _clean(value))
        if record.exc_info and record.exc_info[0] is not None:
            # Render the traceback now, redacted; formatters reuse exc_text.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def logging_dict(level: str = "INFO", service: str = "ecstatic") -> dict:
    """A ``logging.config.dictConfig`` sending every logger to stderr as JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "services.core.logs.RedactingFilter"}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "ts", "levelname": "level", "name": "logger"},
                "static_fields": {"service": service},
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["redact"],  # on the handler: it sees every propagated record
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # gunicorn's loggers keep their own handlers unless told otherwise.
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            # No access lines at all: they carry the client's IP address and the Basic
            # user name (where some put their token). Request metrics count requests.
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }


def setup_logging(level: str = "INFO", service: str = "ecstatic") -> None:
    """Send every logger to stderr as JSON lines tagged with the service name."""
    logging.config.dictConfig(logging_dict(level, service))
