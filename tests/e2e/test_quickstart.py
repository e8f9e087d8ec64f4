"""The quickstart `ecstatic up` prints works when pasted into a shell, as printed."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .stackdriver import running_stack

pytestmark = pytest.mark.integration


def _quickstart(up_output: str) -> str:
    lines = up_output.splitlines()
    start = lines.index("Quickstart (copy and paste):") + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("  "))
    return "\n".join(lines[start:end])


def test_printed_quickstart_runs(tmp_path):
    with running_stack(tmp_path / "home") as stack:
        script = _quickstart(stack.up_output)
        workdir = tmp_path / "work"
        workdir.mkdir()
        env = {**os.environ, "HOME": str(workdir), "GIT_TERMINAL_PROMPT": "0"}
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{script}\n---\n{result.stdout}\n{result.stderr}"
        assert "<h1>Hello from Ecstatic</h1>" in result.stdout
        assert "remote: live at http://hello.localhost:" in result.stderr
        breakdown = json.loads(result.stdout.strip().splitlines()[-1])
        rows = {row["value"]: row["pageviews"] for row in breakdown["results"]}
        assert rows == {"/": 1}, breakdown
