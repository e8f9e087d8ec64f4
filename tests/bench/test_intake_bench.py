"""Smoke test of bench/intake_throughput.py: it runs and reports numbers (no timing checks)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "intake_throughput.py"


def _load_bench():
    # By path: bench/ is a folder of scripts, not a package.
    spec = importlib.util.spec_from_file_location("intake_throughput", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def test_tiny_run_reports_positive_numbers_for_every_measurement(capsys):
    bench = _load_bench()
    argv = ["--lines", "200", "--distinct-agents", "3", "--repeat", "1", "--no-clickhouse"]

    bench.main([*argv, "--json"])

    out = capsys.readouterr()
    result = json.loads(out.out)
    assert "parse_caddy" in out.err  # the table goes to stderr beside the JSON
    measurements = result["measurements"]
    assert set(measurements) == {"json_loads", "parse", "enrich_warm", "enrich_cold"}
    for name, entry in measurements.items():
        assert entry, name
        for key, value in entry.items():
            assert _positive(value) and math.isfinite(value), (name, key, value)
    assert measurements["json_loads"]["ratio"] == 1.0
    assert measurements["enrich_cold"]["new_agents"] == 3
    assert result["config"]["lines"] == 200 and result["config"]["best_of"] == 1
