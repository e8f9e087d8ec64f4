"""Real generators, detected and built inside the sandbox."""

import re
import sys
from pathlib import Path

import pytest
from build_kit import BASE_UID, write_tree

from services.build.bwrap import Sandbox
from services.build.config import parse_config
from services.build.detect import check_pin, detect, generator_version
from services.build.limits import BuildLimits
from services.build.sandbox import run

pytestmark = pytest.mark.integration

LIMITS = BuildLimits(timeout_seconds=120)
VENV = Path(sys.prefix)  # holds mkdocs and mkdocs-material


def build(tree: Path, workdir: Path, sandbox: Sandbox, config=None):
    config = config or parse_config((tree / "ecstatic.toml").read_bytes())
    plan = detect(tree, config)
    lines: list[str] = []
    result = run(
        plan.command,
        tree,
        workdir,
        on_line=lines.append,
        publish=plan.publish,
        environment=config.environment,
        limits=LIMITS,
        sandbox=sandbox,
    )
    assert result.ok, (result.reason, result.message, lines)
    return plan, result


def test_hugo_site(work_root):
    tree = write_tree(
        work_root / "hugo-src",
        {
            "ecstatic.toml": '[build.environment]\nHUGO_PARAMS_GREETING = "from the environment"\n'
            '[build.generator]\nname = "hugo"\nversion = "0.111"\n',
            "hugo.toml": 'baseURL = "https://blog.example.org/"\ntitle = "Test blog"\n'
            'disableKinds = ["taxonomy", "term", "RSS", "sitemap"]\n',
            "layouts/_default/baseof.html": "<!doctype html>\n<html>\n  <head>\n"
            "    <title>{{ .Title }} | {{ .Site.Title }}</title>\n  </head>\n"
            '  <body>\n    {{ block "main" . }}{{ end }}\n  </body>\n</html>\n',
            "layouts/_default/single.html": '{{ define "main" }}<article>{{ .Content }}</article>'
            "<p>{{ .Site.Params.greeting }}</p>{{ end }}\n",
            "layouts/_default/list.html": '{{ define "main" }}{{ range .Pages }}'
            '<a href="{{ .RelPermalink }}">{{ .Title }}</a>{{ end }}{{ end }}\n',
            "layouts/index.html": '{{ define "main" }}<h1>Home of {{ .Site.Title }}</h1>'
            '{{ range .Site.RegularPages }}<a href="{{ .RelPermalink }}">{{ .Title }}</a>'
            "{{ end }}{{ end }}\n",
            "content/posts/hello.md": '---\ntitle: "Hello world"\n---\n\n'
            "This is the **first post**, built in a sandbox.\n",
        },
    )
    sandbox = Sandbox(base_uid=BASE_UID)
    plan, result = build(tree, work_root / "hugo-work", sandbox)
    assert plan.generator == "hugo" and plan.command == "hugo --minify"
    assert result.publish_dir == work_root / "hugo-work" / "public"
    post = (result.publish_dir / "posts/hello/index.html").read_text()
    assert "<strong>first post</strong>, built in a sandbox." in post
    assert "from the environment" in post
    assert "<title>Hello world | Test blog</title>" in post
    assert "\n  " not in post  # minified
    home = (result.publish_dir / "index.html").read_text()
    assert "Home of Test blog" in home and "/posts/hello/" in home
    version = generator_version("hugo", sandbox.path())
    check_pin(parse_config((tree / "ecstatic.toml").read_bytes()), plan.generator, version)


def test_mkdocs_material_site(work_root):
    tree = write_tree(
        work_root / "docs-src",
        {
            "ecstatic.toml": "",
            "mkdocs.yml": "site_name: Sandbox docs\ntheme:\n  name: material\n"
            "nav:\n  - Home: index.md\n  - Guide: guide.md\n",
            "docs/index.md": "# Welcome\n\nThese docs were built **offline** in bubblewrap.\n",
            "docs/guide.md": "# Guide\n\nSee the [home page](index.md).\n",
        },
    )
    sandbox = Sandbox(base_uid=BASE_UID, toolchains=(VENV,), hidden=(work_root / "home",))
    plan, result = build(tree, work_root / "docs-work", sandbox)
    assert plan == plan.__class__("mkdocs", "mkdocs build", "site")
    site = result.publish_dir
    index = (site / "index.html").read_text()
    assert "These docs were built <strong>offline</strong> in bubblewrap." in index
    assert "Sandbox docs" in index and (site / "guide/index.html").is_file()
    css = re.search(r'href="(assets/stylesheets/main\.[0-9a-f]+\.min\.css)"', index)
    js = re.search(r'src="(assets/javascripts/bundle\.[0-9a-f]+\.min\.js)"', index)
    assert css and js, "material theme assets are not linked"
    assert (site / css.group(1)).stat().st_size > 10_000
    assert (site / js.group(1)).stat().st_size > 10_000
    assert generator_version("mkdocs", sandbox.path()).startswith("1.")
