from datetime import UTC, datetime

from services.intake.model import InvalidLine, LogLine, RetryLater
from services.intake.pipeline import RETRY, Pipeline


def parse(data: bytes) -> LogLine:
    if data == b"bad":
        raise InvalidLine("not_json")
    host, _, path = data.decode().partition(" ")
    return LogLine(
        datetime(2026, 1, 1, tzinfo=UTC), host, "GET", path, 200, 1, "", "", "ip", "", "", "caddy"
    )


class Resolver:
    def site_id(self, host):
        if host == "down.example":
            raise RetryLater("api down")
        return {"a.localhost": "s1"}.get(host)


class Enricher:
    def row(self, line, site_id):
        if line.path == "/boom":
            raise RuntimeError("bug")
        return (site_id, line.path)


def test_outcomes_and_counts(metrics, sample):
    pipeline = Pipeline("caddy", parse, Resolver(), Enricher(), metrics)
    items = [
        b"a.localhost /x",
        b"bad",
        InvalidLine("too_long"),
        b"other.example /",
        b"a.localhost /boom",
    ]
    assert pipeline.process(items) == [("s1", "/x"), None, None, None, None]
    assert sample("ecstatic_intake_lines_received_total", source="caddy") == 5
    for reason in ("not_json", "too_long", "unknown_host", "enrich_error"):
        assert sample("ecstatic_intake_lines_invalid_total", source="caddy", reason=reason) == 1


def test_retry_stops_the_batch_and_counts_nothing_for_it(metrics, sample):
    pipeline = Pipeline("bunny", parse, Resolver(), Enricher(), metrics, count_received=False)
    outcomes = pipeline.process([b"a.localhost /1", b"down.example /2", b"a.localhost /3"])
    assert outcomes == [("s1", "/1"), RETRY]
    assert sample("ecstatic_intake_lines_received_total", source="bunny") == 0
    assert sample("ecstatic_intake_lines_invalid_total", source="bunny", reason="unknown_host") == 0
