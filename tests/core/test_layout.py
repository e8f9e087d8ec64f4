"""The layout map (services/targets.py) and everything generated from it agree.

The local stack's supervisord programs, Caddy routes, Prometheus targets and health
checks come from the map; so does the Pulumi program (tests/infra/test_platform*.py).
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
import yaml
from falcon import testing

from services import targets
from services.cli import stack
from services.core.config import PORT_DEFAULTS, Config
from services.core.metrics import new_registry
from services.core.runtime import Mount
from services.falcon_apps.api.app import PATHS as API_PATHS
from services.falcon_apps.query.app import PATHS as QUERY_PATHS
from services.git.app import PATHS as GIT_PATHS
from services.platform import caddy
from services.wsgi import ProcessApp

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path):
    return Config.from_env({"ECSTATIC_HOME": str(tmp_path)})


def test_the_committed_caddyfile_is_the_one_the_map_generates():
    assert (REPO / "Caddyfile").read_text() == caddy.local(), (
        "Caddyfile is stale: regenerate it (see the README, 'One map of what runs where')"
    )


def test_caddy_routes_each_routed_room_to_its_own_port():
    text = caddy.local()
    for name, module in targets.routes():
        block = re.search(
            rf"@{name} path_regexp {name} (\S+)\n\s*handle @{name} {{\n\s*reverse_proxy (\S+)", text
        )
        assert block, name
        assert block.group(1) == module.route
        assert block.group(2) == f"127.0.0.1:{{$ECSTATIC_{module.listeners[0].name.upper()}_PORT}}"
    # Rooms without a public route are never proxied.
    for name, module in targets.MODULES.items():
        if module.builder and not module.route:
            assert f"@{name} " not in text


def test_caddy_and_the_process_dispatcher_send_every_path_to_the_same_room():
    # Caddy picks the first matching route (most specific first); a process running several
    # rooms picks by its mount order. Both must agree, or a merged process misroutes.
    def caddy_room(path):
        return next((n for n, m in targets.routes() if re.search(m.route, path)), None)

    def app(name):
        def wsgi(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [name.encode()]

        return wsgi

    mounts = [
        Mount("api", API_PATHS, app("api")),
        Mount("query", QUERY_PATHS, app("query")),
        Mount("git", GIT_PATHS, app("git")),
    ]
    client = testing.TestClient(ProcessApp(mounts, [], new_registry()))
    for path in (
        "/v1/sites",
        "/v1/sites/abc",
        "/v1/sites/abc/deploys",
        "/v1/sites/abc/stats",
        "/v1/sites/abc/stats/timeseries",
        "/v1/sites/abc/statsx",
        "/git/abc.git/info/refs",
        "/v1/user",
        "/v1/sites/abc/deploys/d1/restore",
        "/v1/sites/abc/deploys/d1/log",
        "/v1/sites/abc/deploys/d1/restorex",
    ):
        assert client.simulate_get(path).text == caddy_room(path), path


def test_config_knows_every_listener_of_the_map():
    assert PORT_DEFAULTS == {n: lis.default for n, lis in targets.listeners().items()}
    assert len(set(PORT_DEFAULTS.values())) == len(PORT_DEFAULTS)


def test_every_state_name_in_the_map_exists_and_has_its_own_directory(config):
    named = set()
    for part in [*targets.MODULES.values(), *targets.PLATFORM.values()]:
        named |= set(part.writes) | set(part.reads)
    assert named <= set(targets.STATE)
    paths = [s.path for s in targets.STATE.values()]
    assert len(paths) == len(set(paths))
    assert config.api_db.parent == config.state_dir("metadata")
    assert config.git_root == config.state_dir("repositories")
    assert config.cdn_root == config.state_dir("releases")
    assert config.access_log.parent == config.state_dir("access-logs")
    assert config.intake_state_dir == config.state_dir("spool")
    assert config.clickhouse_url == f"chdb://{config.state_dir('clickhouse')}"


def test_processes_group_the_engine_owners_only_on_the_embedded_default():
    alone = targets.processes(embedded=False)
    assert [p.name for p in alone] == ["api", "git", "query", "intake"]
    assert not any("clickhouse" in p.writes for p in alone)
    merged = targets.processes(embedded=True)
    owners = [p for p in merged if p.storage]
    assert len(owners) == 1 and set(owners[0].rooms) == {"query", "intake"}
    assert "clickhouse" in owners[0].writes
    # Every room runs exactly once either way.
    for grouping in (alone, merged):
        rooms = [r for p in grouping for r in p.rooms]
        assert sorted(rooms) == sorted(targets.resolve("all"))


def test_the_local_stack_runs_what_the_map_says(config):
    parts = {p.name: p for p in stack.parts(config)}
    expected = [p.name for p in targets.processes(config.embedded_clickhouse)]
    # Caddy first (sites serve even while the rooms start), Prometheus last (it scrapes all).
    assert list(parts) == ["caddy", *expected, "alertmanager", "prometheus"]
    assert set(parts) == {*expected, *targets.PLATFORM}
    for process in targets.processes(config.embedded_clickhouse):
        part = parts[process.name]
        assert part.command[-2:] == ["serve", process.spec]
        assert part.ports == tuple(config.port(lis.name) for lis in process.listeners)
        assert part.health_url == f"http://127.0.0.1:{config.port(process.http.name)}/healthz"
    for name, platform in targets.PLATFORM.items():
        assert parts[name].ports == tuple(config.port(lis.name) for lis in platform.listeners)
        listener, path = platform.health
        assert parts[name].health_url == f"http://127.0.0.1:{config.port(listener)}{path}"


def test_supervisord_runs_every_part_and_prometheus_scrapes_every_metrics_port(config):
    parsed = configparser.RawConfigParser()
    parsed.read_string(stack.supervisord_config(config))
    programs = [s.split(":", 1)[1] for s in parsed.sections() if s.startswith("program:")]
    # A part with slots (the intake's, for hand-over restarts) has one program per slot.
    assert programs == [name for p in stack.parts(config) for name in p.programs]
    scraped = {
        job["job_name"]: (job["static_configs"][0]["targets"][0], job["metrics_path"])
        for job in yaml.safe_load(stack.prometheus_config(config))["scrape_configs"]
    }
    want = {}
    for part in stack.parts(config):
        if part.metrics_url:
            hostport, _, path = part.metrics_url.removeprefix("http://").partition("/")
            want[part.name] = (hostport, "/" + path)
    assert scraped == want
    alerting = yaml.safe_load(stack.prometheus_config(config))["alerting"]
    am = targets.PLATFORM["alertmanager"].listeners[0]
    assert alerting["alertmanagers"][0]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{config.port(am.name)}"
    ]
