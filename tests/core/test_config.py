import pytest

from services.core.config import PORT_DEFAULTS, Config, ConfigError


def test_defaults(tmp_path):
    config = Config.from_env({"ECSTATIC_HOME": str(tmp_path)})
    assert config.home == tmp_path.resolve()
    assert config.ports == PORT_DEFAULTS
    assert config.clickhouse_url == f"chdb://{tmp_path.resolve() / 'clickhouse'}"
    assert config.api_url == "http://127.0.0.1:8101"
    assert config.bind_host == "127.0.0.1"
    assert config.site_url("blog") == "http://blog.localhost:8080/"
    assert config.git_url("abc") == "http://localhost:8080/git/abc.git"


def test_default_home_is_var_under_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Config.from_env({}).home == tmp_path.resolve() / "var"


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
