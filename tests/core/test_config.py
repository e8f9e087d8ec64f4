from pathlib import Path

import pytest

from services.core.config import PORT_DEFAULTS, Config, ConfigError, default_home


def test_defaults(tmp_path):
    config = Config.from_env({"ECSTATIC_HOME": str(tmp_path)})
    assert config.home == tmp_path.resolve()
    assert config.ports == PORT_DEFAULTS
    assert config.clickhouse_url == f"chdb://{tmp_path.resolve() / 'clickhouse'}"
    assert config.api_url == "http://127.0.0.1:8101"
    assert config.bind_host == "127.0.0.1"
    assert config.site_url("blog") == "http://blog.localhost:8080/"
    assert config.git_url("abc") == "http://localhost:8080/git/abc.git"


def test_default_home_does_not_depend_on_the_cwd(tmp_path, monkeypatch):
    # `ecstatic status` run from another directory must find the same stack.
    monkeypatch.chdir(tmp_path)
    first = Config.from_env({"HOME": "/home/alice"}).home
    monkeypatch.chdir("/")
    assert Config.from_env({"HOME": "/home/alice"}).home == first
    assert first.is_absolute()


def test_default_home_for_root_and_for_users():
    assert default_home({}, uid=0) == Path("/var/lib/ecstatic")
    assert default_home({"HOME": "/home/al"}, uid=1000) == Path("/home/al/.local/state/ecstatic")
    assert default_home({"XDG_STATE_HOME": "/st"}, uid=1000) == Path("/st/ecstatic")


def test_a_relative_home_is_resolved_once_to_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = Config.from_env({"ECSTATIC_HOME": "state"})
    assert config.home == tmp_path.resolve() / "state"
    # Children get the absolute path, never the relative one.
    assert config.environ()["ECSTATIC_HOME"] == str(tmp_path.resolve() / "state")


def test_site_url_omits_default_port(tmp_path):
    config = Config.from_env(
        {
            "ECSTATIC_HOME": str(tmp_path),
            "ECSTATIC_HTTP_PORT": "443",
            "ECSTATIC_SITE_SCHEME": "https",
            "ECSTATIC_SITES_DOMAIN": "example.org",
        }
    )
    assert config.site_url("blog") == "https://blog.example.org/"


def test_every_error_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as caught:
        Config.from_env(
            {
                "ECSTATIC_HOME": str(tmp_path),
                "ECSTATIC_API_PORT": "http",
                "ECSTATIC_GIT_PORT": "70000",
                "ECSTATIC_SITES_DOMAIN": "not a host",
                "ECSTATIC_CLICKHOUSE_URL": "mysql://x",
                "ECSTATIC_INTAKE_FLUSH_SECONDS": "0",
            }
        )
    message = str(caught.value)
    for name in (
        "ECSTATIC_API_PORT",
        "ECSTATIC_GIT_PORT",
        "ECSTATIC_SITES_DOMAIN",
        "ECSTATIC_CLICKHOUSE_URL",
        "ECSTATIC_INTAKE_FLUSH_SECONDS",
    ):
        assert name in message


def test_ports_must_be_distinct(tmp_path):
    with pytest.raises(ConfigError, match="distinct"):
        Config.from_env({"ECSTATIC_HOME": str(tmp_path), "ECSTATIC_API_PORT": "8102"})


def test_environ_round_trips(tmp_path):
    config = Config.from_env(
        {
            "ECSTATIC_HOME": str(tmp_path),
            "ECSTATIC_QUERY_PORT": "9999",
            "ECSTATIC_SITES_DOMAIN": "sites.test",
        }
    )
    again = Config.from_env(config.environ())
    assert again.ports == config.ports
    assert again.home == config.home
    assert again.sites_domain == "sites.test"
    assert again.clickhouse_url == config.clickhouse_url


def test_errors_never_echo_credentials(tmp_path):
    with pytest.raises(ConfigError) as caught:
        Config.from_env(
            {
                "ECSTATIC_HOME": str(tmp_path),
                "ECSTATIC_CLICKHOUSE_URL": "mysql://user:s3cret@db:3306/x",
            }
        )
    assert "s3cret" not in str(caught.value)
    assert "ECSTATIC_CLICKHOUSE_URL" in str(caught.value)


def test_environ_is_the_whole_config(tmp_path):
    # One env contract for the local stack and the pods: nothing is lost on the way.
    config = Config.from_env(
        {
            "ECSTATIC_HOME": str(tmp_path),
            "ECSTATIC_BIND_HOST": "0.0.0.0",
            "ECSTATIC_INTAKE_BATCH_ROWS": "77",
            "ECSTATIC_INTAKE_FLUSH_SECONDS": "0.25",
            "ECSTATIC_MAX_DEPLOY_FILES": "9",
            "ECSTATIC_AUTH_CACHE_SECONDS": "1.5",
            "ECSTATIC_THREADS": "3",
        }
    )
    assert Config.from_env(config.environ()) == config
    assert config.intake.syslog_host == "0.0.0.0"  # follows the bind host
