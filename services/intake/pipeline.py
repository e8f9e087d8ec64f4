"""One source's lines through parse, host lookup and enrichment, with the counting.

Synchronous on purpose: host lookups and salt reads block on the network, so the
service runs ``process`` in a worker thread. Each line ends as a row, as ``None``
(counted invalid and skipped) or as ``RETRY`` (a dependency is down: stop here and
keep this line for later, so nothing is lost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from services.core.metrics import IntakeMetrics

from .model import InvalidLine, LogLine, RetryLater

__all__ = ["Pipeline", "RETRY"]

log = logging.getLogger(__name__)


class _Retry:
    def __repr__(self) -> str:
        return "RETRY"


RETRY = _Retry()


class Resolver(Protocol):
    def site_id(self, host: str) -> str | None: ...


class RowMaker(Protocol):
    def row(self, line: LogLine, site_id: str) -> tuple: ...


class Pipeline:
    """Turns raw lines of one source into rows, counting what it drops and why."""

    def __init__(
        self,
        source: str,
        parse: Callable[[bytes], LogLine],
        resolver: Resolver,
        enricher: RowMaker,
        metrics: IntakeMetrics,
        count_received: bool = True,
    ):
        self._source = source
        self._parse = parse
        self._resolver = resolver
        self._enricher = enricher
        self._metrics = metrics
        # Spooled Bunny records were counted when the listener received them.
        self._count_received = count_received

    def process(self, items: list[bytes | InvalidLine]) -> list:
        """Outcomes in order, one per item, ending early after the first ``RETRY``."""
        outcomes: list = []
        for item in items:
            outcome = self._one(item)
            outcomes.append(outcome)
            if outcome is RETRY:
                break
            if self._count_received:
                self._metrics.lines_received.labels(self._source).inc()
        return outcomes

    def _one(self, item: bytes | InvalidLine):
        try:
            if isinstance(item, InvalidLine):
                raise item
            line = self._parse(item)
            site_id = self._resolver.site_id(line.host)
            if site_id is None:
                raise InvalidLine("unknown_host")
            return self._enricher.row(line, site_id)
        except InvalidLine as exc:
            self._invalid(exc.reason)
        except RetryLater:
            return RETRY
        except Exception:  # noqa: BLE001 - a poison line must not stall the stream forever
            log.exception("enrich failed", extra={"source": self._source})
            self._invalid("enrich_error")
        return None

    def _invalid(self, reason: str) -> None:
        self._metrics.lines_invalid.labels(self._source, reason).inc()
