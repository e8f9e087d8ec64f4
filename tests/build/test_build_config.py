import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.build.config import (
    MAX_CONFIG_BYTES,
    BuildConfig,
    ConfigError,
    parse_config,
)


def refused(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    message = info.value.message
    assert "\n" not in message and len(message) < 400
    return message


def test_absent_file_means_defaults():
    assert parse_config(None) == BuildConfig()
    assert parse_config(b"") == BuildConfig(command=None, publish="", environment={})


def test_full_build_table():
    config = parse_config(
        b"""
[build]
command = "hugo --minify"
publish = "./public/"
environment = { HUGO_ENV = "production", node_version = "20" }

[build.generator]
name = "hugo"
version = "v0.111"
"""
    )
    assert config == BuildConfig(
        command="hugo --minify",
        publish="public",
        environment={"HUGO_ENV": "production", "node_version": "20"},
        generator="hugo",
        generator_version="0.111",
    )


def test_environment_as_a_subtable():
    config = parse_config(b'[build.environment]\nA = "1"\n_b2 = ""\n')
    assert config.environment == {"A": "1", "_b2": ""}


def test_legacy_top_level_publish_still_works():
    assert parse_config(b'publish = "site/out"').publish == "site/out"
    assert parse_config(b'publish = "."').publish == ""


def test_build_publish_wins_over_top_level():
    assert parse_config(b'publish = "old"\n[build]\npublish = "new"').publish == "new"


def test_frozen():
    with pytest.raises(AttributeError):
        parse_config(None).publish = "x"


def test_oversized_file():
    assert "larger than 64 KiB" in refused(b"#" * (MAX_CONFIG_BYTES + 1))


def test_not_utf8():
    assert "not UTF-8" in refused(b'publish = "\xff"')


def test_invalid_toml_gives_line_and_column():
    message = refused('[build]\ncommand = "make"\npublish = = "x"\n')
    assert "not valid TOML" in message and "line 3" in message and "column" in message


def test_giant_integer_is_a_config_error_not_a_crash():
    # tomllib lets int()'s 4,300-digit ValueError through unwrapped.
    assert "not valid TOML" in refused("publish = " + "1" * 5000)


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 5000,
        "a = " + "[" * 5000 + "]" * 5000,
        "a = " + "{b = " * 5000 + "1" + "}" * 5000,
        "a = " + "[" * 9 + "]" * 9,
    ],
)
def test_deep_nesting_is_refused_before_parsing(text):
    assert "nests arrays or tables" in refused(text)


def test_brackets_inside_strings_and_comments_do_not_count():
    text = (
        'publish = "[[[[[[[[[[[[" # {{{{{{{{{{{{{{\n'
        '[build]\ncommand = """echo \\"[[[[[[[[[[[[\\" """\n'
        "[build.environment]\nA = '{{{{{{{{{{{{{{{{{{'\n"
    )
    assert parse_config(text.encode()).publish == "[[[[[[[[[[[["


def test_recursion_error_is_a_config_error(monkeypatch):
    import services.build.config as module

    monkeypatch.setattr(module, "_max_depth", lambda text: 0)  # pretend the pre-check missed it
    assert "nests too deeply" in refused("a = " + "[" * 30_000 + "]" * 30_000)


def test_unknown_keys_are_named():
    assert "'colour'" in refused('colour = "red"')
    message = refused('[build]\ncommand = "x"\ncomand = "y"')
    assert "'build.comand'" in message and "build.command" in message
    assert "'build.generator.flavour'" in refused('[build.generator]\nname = "hugo"\nflavour = 1')


@pytest.mark.parametrize(
    "text, expected",
    [
        ("publish = 3", "publish must be a string, not an integer"),
        ("[build]\npublish = true", "build.publish must be a string, not a boolean"),
        ("build = 1", "build must be a table"),
        ("[build]\ncommand = ['make']", "build.command must be a string, not an array"),
        ("[build]\nenvironment = 'A=1'", "build.environment must be a table"),
        ("[build.environment]\nA = 1", "build.environment.A must be a string"),
        ("[build.environment]\nA = 1979-05-27", "a date or time"),
        ("[build]\ncommand = '  '", "build.command is empty"),
        ('[build]\ncommand = "a\\u0000b"', "without NUL"),
        ("[build]\ngenerator = 'hugo'", "build.generator must be a table"),
        ("[build.generator]\nversion = '1'", "needs a name"),
        ("[build.generator]\nname = 'gatsby'", "'gatsby' is not one of hugo, mkdocs"),
        ("[build.generator]\nname = 'hugo'\nversion = '1 2'", "is not a version"),
    ],
)
def test_wrong_types_and_values(text, expected):
    assert expected in refused(text)


@pytest.mark.parametrize(
    "publish",
    ["/etc", "../up", "a/../../b", "a\\b", ".git", "x/.GIT/y", "a\u0000b", "x" * 1001],
)
def test_publish_must_stay_inside_the_repository(publish):
    message = refused(f"[build]\npublish = {json.dumps(publish)}")  # a TOML basic string
    assert "must be a relative directory inside the repository" in message


@pytest.mark.parametrize(
    "name, expected",
    [
        ("PATH", "reserved"),
        ("HOME", "reserved"),
        ("LD_PRELOAD", "reserved"),
        ("LD_LIBRARY_PATH", "reserved"),
        ("ECSTATIC_HOME", "reserved"),
        ("ECSTATIC_", "reserved"),
        ("1A", "not a variable name"),
        ("A-B", "not a variable name"),
        ("A B", "not a variable name"),
        ("É", "not a variable name"),
        ("", "not a variable name"),
        ("A" * 129, "not a variable name"),
    ],
)
def test_environment_names(name, expected):
    assert expected in refused(f"[build.environment]\n{name!r} = 'x'")


def test_environment_limits():
    many = "\n".join(f"V{i} = 'x'" for i in range(65))
    assert "65 variables (limit 64)" in refused("[build.environment]\n" + many)
    assert "longer than 4096" in refused(f"[build.environment]\nA = '{'x' * 4097}'")
    assert "NUL" in refused('[build.environment]\nA = "\\u0000"')


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_only_raise_config_error(data):
    try:
        assert isinstance(parse_config(data), BuildConfig)
    except ConfigError as exc:
        assert "\n" not in exc.message


_TOMLISH = st.text(
    alphabet=st.sampled_from(list("[]{}=\"'#.,\n \\abuildpublishcommandenvironmentgenerator123")),
    max_size=400,
)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=500), _TOMLISH))
def test_arbitrary_text_only_raises_config_error(text):
    try:
        assert isinstance(parse_config(text.encode("utf-8", "surrogatepass")), BuildConfig)
    except ConfigError as exc:
        assert "\n" not in exc.message
