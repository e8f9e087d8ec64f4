import sys

import pytest
from build_kit import write_tree

from services.build.config import BuildConfig, ConfigError, parse_config
from services.build.detect import BuildPlan, check_pin, detect, generator_version, sniff

HUGO_CONFIG = 'baseURL = "https://example.org/"\ntitle = "t"\n'


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"index.html": "x"}, None),
        ({"hugo.toml": "", "content/a.md": ""}, "hugo"),
        ({"hugo.yaml": "", "index.html": ""}, "hugo"),
        ({"hugo.json": "{}"}, "hugo"),
        ({"config/_default/hugo.toml": ""}, "hugo"),
        ({"config.toml": HUGO_CONFIG, "content/a.md": ""}, "hugo"),
        ({"config.toml": "[params]\nx = 1\n", "layouts/index.html": ""}, "hugo"),
        ({"config.yaml": "languageCode: en-us\n", "themes/t/x": ""}, "hugo"),
        ({"config.toml": HUGO_CONFIG}, None),  # no Hugo directory
        ({"config.toml": "[tool]\nx = 1\n", "content/a.md": ""}, None),  # no Hugo key
        ({"mkdocs.yml": "site_name: x\n", "docs/index.md": ""}, "mkdocs"),
        ({"mkdocs.yaml": "site_name: x\n"}, "mkdocs"),
        ({"_config.yml": "title: x\n", "Gemfile": ""}, "jekyll"),
        ({"_config.yml": "title: x\n", "_posts/2024-01-01-a.md": ""}, "jekyll"),
        ({"_config.yml": "title: x\n"}, None),
        ({".eleventy.js": "module.exports = {}", "index.md": ""}, "eleventy"),
        ({"eleventy.config.mjs": "export default {}"}, "eleventy"),
    ],
)
def test_sniff(tmp_path, files, expected):
    assert sniff(write_tree(tmp_path, files)) == expected


def test_symlinked_marker_does_not_count(tmp_path):
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "hugo.toml").symlink_to(tmp_path / "elsewhere")
    assert sniff(tmp_path) is None


def test_plain_html_builds_nothing(tmp_path):
    tree = write_tree(tmp_path, {"index.html": "x", "www/index.html": "y"})
    assert detect(tree, BuildConfig()) == BuildPlan(None, None, "")
    assert detect(tree, parse_config(b'publish = "www"')) == BuildPlan(None, None, "www")


def test_generator_defaults(tmp_path):
    hugo = write_tree(tmp_path / "h", {"hugo.toml": ""})
    assert detect(hugo, BuildConfig()) == BuildPlan("hugo", "hugo --minify", "public")
    docs = write_tree(tmp_path / "m", {"mkdocs.yml": "site_name: x\n"})
    assert detect(docs, BuildConfig()) == BuildPlan("mkdocs", "mkdocs build", "site")
    jekyll = write_tree(tmp_path / "j", {"_config.yml": "", "Gemfile": ""})
    assert detect(jekyll, BuildConfig()) == BuildPlan("jekyll", "jekyll build", "_site")
    eleventy = write_tree(tmp_path / "e", {"eleventy.config.js": ""})
    assert detect(eleventy, BuildConfig()) == BuildPlan("eleventy", "npx @11ty/eleventy", "_site")


def test_configured_publish_overrides_the_default(tmp_path):
    tree = write_tree(tmp_path, {"hugo.toml": 'publishDir = "out"\n'})
    assert detect(tree, parse_config(b'[build]\npublish = "out"')).publish == "out"


def test_configured_command_wins(tmp_path):
    tree = write_tree(tmp_path, {"hugo.toml": ""})
    config = parse_config(b'[build]\ncommand = "make site"\npublish = "dist"')
    assert detect(tree, config) == BuildPlan("hugo", "make site", "dist")  # guessed for the record
    plain = write_tree(tmp_path / "p", {"Makefile": ""})
    assert detect(plain, config) == BuildPlan(None, "make site", "dist")


def test_pinned_generator_without_markers(tmp_path):
    tree = write_tree(tmp_path, {"index.html": ""})
    config = parse_config(b'[build.generator]\nname = "mkdocs"')
    assert detect(tree, config) == BuildPlan("mkdocs", "mkdocs build", "site")


def test_check_pin():
    pinned = parse_config(b'[build.generator]\nname = "hugo"\nversion = "0.111"')
    check_pin(pinned, "hugo", "0.111.3")
    check_pin(pinned, "hugo", "0.111")
    check_pin(BuildConfig(), "hugo", None)
    check_pin(parse_config(b'[build.generator]\nname = "hugo"'), "hugo", None)  # no version pin
    with pytest.raises(ConfigError, match="this host has hugo 0.1110.1"):
        check_pin(pinned, "hugo", "0.1110.1")
    with pytest.raises(ConfigError, match="this host has hugo 0.112.0"):
        check_pin(pinned, "hugo", "0.112.0")
    with pytest.raises(ConfigError, match="hugo is not installed here"):
        check_pin(pinned, "hugo", None)
    with pytest.raises(ConfigError, match="the build uses mkdocs"):
        check_pin(pinned, "mkdocs", "1.6.1")


@pytest.mark.integration
def test_generator_version_of_installed_tools():
    path = f"{sys.prefix}/bin:/usr/bin:/bin"
    hugo = generator_version("hugo", path)
    assert hugo is not None and hugo.startswith("0.")
    mkdocs = generator_version("mkdocs", path)
    assert mkdocs is not None and mkdocs.startswith("1.")
    assert generator_version("jekyll", "/nonexistent") is None
    assert generator_version(None, path) is None
