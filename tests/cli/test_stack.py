import configparser
import shutil
import subprocess

import pytest

from services.cli import stack
from services.cli.main import parser
from services.core.config import Config


@pytest.fixture
def config(tmp_path):
    return Config.from_env({"ECSTATIC_HOME": str(tmp_path), "ECSTATIC_API_PORT": "18101"})


def test_parts_cover_the_whole_stack(config):
    names = [p.name for p in stack.parts(config)]
    assert names == ["caddy", "api", "git", "intake-query", "alertmanager", "prometheus"]
    by_name = {p.name: p for p in stack.parts(config)}
    assert by_name["api"].health_url == "http://127.0.0.1:18101/healthz"
    # the chDB owners share one process on the embedded default
    assert by_name["intake-query"].command[-2:] == ["serve", "query,intake"]


def test_supervisord_config_is_parseable(config):
    text = stack.supervisord_config(config)
    parsed = configparser.RawConfigParser()
    parsed.read_string(text)
    programs = [s.split(":", 1)[1] for s in parsed.sections() if s.startswith("program:")]
    # The intake's process has a second slot for restarts that hand over; it starts idle.
    assert programs == [
        "caddy", "api", "git", "intake-query", "intake-query-b", "alertmanager", "prometheus"
    ]  # fmt: skip
    autostart = {p: parsed.getboolean(f"program:{p}", "autostart") for p in programs}
    assert [p for p, on in autostart.items() if not on] == ["intake-query-b"]
    assert f'ECSTATIC_HOME="{config.home}"' in parsed.get("supervisord", "environment")
    for program in programs:
        assert parsed.get(f"program:{program}", "stopsignal") == "TERM"


@pytest.mark.integration
def test_prometheus_config_passes_promtool(config, tmp_path):
    path = tmp_path / "prometheus.yml"
    path.write_text(stack.prometheus_config(config))
    assert shutil.which("promtool"), "promtool is installed by bootstrap.sh"
    result = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for job in ("caddy", "api", "git", "intake-query", "alertmanager", "prometheus"):
        assert f"job_name: {job}" in path.read_text()


def test_cli_grammar():
    p = parser()
    assert p.parse_args(["serve", "intake,query"]).targets == "intake,query"
    assert p.parse_args(["status", "--json"]).json is True
    assert p.parse_args(["admin", "create-user", "alice"]).name == "alice"
    with pytest.raises(SystemExit):
        p.parse_args(["admin"])


def test_supervisord_config_is_owner_only(config):
    stack.Stack(config).write_configs()
    assert (config.run_dir / "supervisord.conf").stat().st_mode & 0o777 == 0o600
