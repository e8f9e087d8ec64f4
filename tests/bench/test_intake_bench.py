"""Smoke tests of the intake benchmark ``bench/intake`` (shape and exact counts, never speed).

The generated corpus, and one small ``python -m bench.intake`` run against the real
``ecstatic serve api`` and ``ecstatic serve intake,query``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.intake import corpus

ROOT = Path(__file__).resolve().parents[2]
# reference/bunny.md section 3: the JSON record's fields.
BUNNY_FIELDS = {
    "ServerId", "IsValid", "PullZoneId", "IsSSL", "Host", "Protocol", "Scheme", "UserAgent",
    "RequestId", "HeaderRange", "Country", "PathAndQuery", "ServerZone", "Status", "BytesSent",
    "BodyBytesSent", "Timestamp", "GzipRatio", "Cached", "RemoteIp", "Referer",
}  # fmt: skip
SYSLOG = re.compile(r"<165>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ BunnyCDN - - - (\{.*\})\n")
CLF = re.compile(r'\S+ - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET \S+ HTTP/[\d.]+" '
                 r'\d{3} \d+ "[^"]*" "[^"]*"\n')  # fmt: skip


def _positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


# -- bench/intake: the corpus ----------------------------------------------------------

NOW_MS = 1_767_225_600_000
HOSTS = ["a.localhost", "b.localhost", "c.localhost"]


def test_corpus_is_seeded_and_has_every_bunny_field():
    spec = corpus.Corpus(3000, HOSTS, seed=7, agents=120, now_ms=NOW_MS)

    first, again = list(corpus.records(spec)), list(corpus.records(spec))
    other = list(corpus.records(corpus.Corpus(3000, HOSTS, seed=8, agents=120, now_ms=NOW_MS)))

    assert first == again and first != other
    assert all(set(record) == BUNNY_FIELDS for record in first)
    assert len({r["RequestId"] for r in first}) == 3000
    assert all(re.fullmatch(r"[0-9a-f]{32}", r["RequestId"]) for r in first)
    assert {r["Host"] for r in first} == set(HOSTS)
    assert len({r["UserAgent"] for r in first}) == 120
    # Within the hour before now: neither stale nor in the future.
    stamps = [r["Timestamp"] for r in first]
    assert NOW_MS - 3_600_000 <= min(stamps) and max(stamps) < NOW_MS
    # Anonymised addresses only: IPv4 x.y.z.0 or an IPv6 /64 prefix.
    assert all(ip.endswith(".0") or ip.endswith("::") for ip in (r["RemoteIp"] for r in first))
    paths = {r["PathAndQuery"] for r in first}
    assert "/" in paths and any("?" in p for p in paths) and any(".css" in p for p in paths)
    assert {r["Status"] for r in first} >= {200, 304, 404}


def test_corpus_files_hold_the_same_requests_in_three_shapes(tmp_path):
    spec = corpus.Corpus(2000, HOSTS, seed=3, agents=50, now_ms=NOW_MS)

    files = corpus.write(spec, tmp_path)

    records = [json.loads(line) for line in files.jsonl.read_text().splitlines()]
    syslog = files.syslog.read_text().splitlines(keepends=True)
    clf = files.clf.read_text().splitlines(keepends=True)
    assert len(records) == len(syslog) == len(clf) == files.lines == 2000
    for record, frame, line in zip(records, syslog, clf, strict=True):
        match = SYSLOG.fullmatch(frame)
        assert match and json.loads(match.group(1)) == record
        assert CLF.fullmatch(line) and f" {record['Status']} {record['BytesSent']} " in line
    assert sum(files.per_host.values()) == 2000
    assert files.per_host == {h: sum(r["Host"] == h for r in records) for h in HOSTS}


# -- bench/intake: one small run against the real processes ---------------------------


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_small_run_makes_every_line_queryable_and_runs_both_baselines(tmp_path):
    report = tmp_path / "intake.json"

    run = subprocess.run(
        [sys.executable, "-m", "bench.intake", "--lines", "20000", "--sites", "5",
         "--json", str(report), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=540, check=False,
    )  # fmt: skip

    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(report.read_text())
    assert result["checks"] == {
        "intake_all_queryable": True,
        "native_rows": True,
        "goaccess_valid_requests": True,
    }
    intake = result["intake"]
    assert intake["counted"] == 20000 and intake["complete"] and not intake["error"]
    assert intake["invalid"] == {}
    assert intake["metrics_delta"]["ecstatic_intake_rows_inserted_total"] == 20000
    assert intake["bytes_sent"] == result["corpus"]["syslog_bytes"]
    assert result["native"]["rows"] == result["native"]["distinct_request_ids"] == 20000
    assert "FROM file(" in result["native"]["statement"]
    runs = result["native"]["all_seconds"]  # three runs by default, the median counts
    assert len(runs) == 3 and result["native"]["seconds"] == sorted(runs)[1]
    assert result["goaccess"]["valid_requests"] == result["goaccess"]["total_requests"] == 20000
    assert all(_positive(rate) for rate in result["lines_per_second"].values())
    assert set(result["ratios"]) == {"native", "goaccess"}
    for entry in result["ratios"].values():
        assert _positive(entry["ratio"]) and entry["met"] == (entry["ratio"] >= entry["goal"])
    # CPU to the moment every row was stored, and to the end of the confirming sweep.
    assert 0 < intake["inserted_cpu_seconds"] <= intake["cpu_seconds"]
    memory = intake["memory"]
    assert memory["peak_mib"] >= max(memory["start_mib"], memory["middle_mib"], memory["end_mib"])
    assert memory["samples"] >= 1 and memory["curve"]
    for stage, seconds in intake["stages"].items():
        assert stage and seconds > 0
    # The human report carries the same figures.
    assert "intake / native" in run.stdout and "intake / goaccess" in run.stdout
    assert "20,000 of 20,000" in run.stdout
