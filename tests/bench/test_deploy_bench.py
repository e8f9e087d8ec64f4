"""Smoke test of bench/deploy.py on a tiny site: it runs and reports (no timing checks).

The real stack is left out (``--no-stack``: starting it takes a minute); the site and
repository generators, the plain-push baseline and the Bunny-double deploys all run.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "deploy.py"


def _load_bench():
    # By path: bench/ is a folder of scripts, not a package.
    spec = importlib.util.spec_from_file_location("deploy_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def test_tiny_run_reports_bunny_figures_and_writes_json(tmp_path, capsys):
    bench = _load_bench()
    out = tmp_path / "result.json"

    bench.main(["--files", "12", "--megabytes", "0.05", "--repeat", "1", "--no-stack"])
    bench.main(
        ["--files", "12", "--megabytes", "0.05", "--repeat", "1", "--no-stack", "--json", str(out)]
    )

    printed = capsys.readouterr().out
    assert "bunny double: first deploy" in printed and "one-file change" in printed
    result = json.loads(out.read_text())
    measurements = result["measurements"]
    assert set(measurements) == {"bunny_first", "bunny_change"}
    first, change = measurements["bunny_first"], measurements["bunny_change"]
    assert (first["puts"], first["deletes"], first["uploaded"]) == (12, 0, 12)
    assert (change["puts"], change["deletes"], change["uploaded"]) == (1, 0, 1)
    for entry in (first, change):
        for key in ("seconds", "stage_seconds", "activate_seconds", "bytes_uploaded"):
            assert _positive(entry[key]) and math.isfinite(entry[key]), key
    assert result["config"]["files"] == 12 and result["config"]["repeat"] == 1


def test_push_helpers_time_a_plain_push_and_see_the_pushed_content(tmp_path):
    bench = _load_bench()
    repo = bench.make_site(tmp_path / "repo", files=5, total_bytes=4096, seed=2)
    shas = bench.make_repo(repo, lambda r: (r / bench.MARKER).write_bytes(bench.marker(2)))
    bare = tmp_path / "plain.git"
    bench.git(tmp_path, "init", "-q", "--bare", str(bare))

    seconds = [bench.push(repo, bare.as_uri(), sha) for sha in shas]

    assert all(_positive(s) for s in seconds)
    shown = bench.git(tmp_path, "--git-dir", str(bare), "show", f"main:{bench.MARKER}").stdout
    assert shown.encode() == bench.marker(2)
    tree = bench.checkout_tree(repo, shas[0], tmp_path / "v1")
    assert (tree / bench.MARKER).read_bytes() == bench.marker(1)
    assert len([p for p in tree.rglob("*") if p.is_file()]) == 5

    # push_to_live polls from the push's start until its check passes.
    other = tmp_path / "other.git"
    bench.git(tmp_path, "init", "-q", "--bare", str(other))
    pushed = lambda: (other / "refs/heads/main").exists()  # noqa: E731
    live, returned = bench.push_to_live(repo, other.as_uri(), shas[1], pushed)
    assert 0 < live <= returned
