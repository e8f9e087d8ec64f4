"""Structured logs: one JSON object per line on stderr, gunicorn's own lines included."""

import logging.config

__all__ = ["logging_dict", "setup_logging"]


def logging_dict(level: str = "INFO", service: str = "ecstatic") -> dict:
    """A ``logging.config.dictConfig`` sending every logger to stderr as JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
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
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # gunicorn's loggers keep their own handlers unless told otherwise.
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": level, "handlers": ["stderr"], "propagate": False},
        },
    }


def setup_logging(level: str = "INFO", service: str = "ecstatic") -> None:
    """Send every logger to stderr as JSON lines tagged with the service name."""
    logging.config.dictConfig(logging_dict(level, service))
