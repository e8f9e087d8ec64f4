"""Builds through a real stack: detection, generators, live output, isolation, failures.

One stack for the module (``ecstatic up`` on free ports, build timeout lowered so the
timeout test is quick); every site is pushed with the real ``git`` client and served by
Caddy under its ``<name>.localhost`` Host header.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from .stackdriver import (
    Stack,
    commit,
    deploy_log,
    deploys,
    git,
    host_of,
    make_repo,
    metric_samples,
    push,
    running_stack,
    searchable_home,
    with_token,
)

pytestmark = pytest.mark.integration

BUILD_TIMEOUT = 6  # seconds, for this module's stack


@pytest.fixture(scope="module")
def stack():
    with searchable_home() as home:
        with running_stack(home, ECSTATIC_BUILD_TIMEOUT_SECONDS=str(BUILD_TIMEOUT)) as stack:
            yield stack


@pytest.fixture(scope="module")
def token(stack: Stack) -> str:
    return stack.create_user("builder")


@pytest.fixture
def new_site(stack: Stack, token: str, tmp_path: Path):
    """Create a site and a source repository with ``files``; returns (site, repo, url)."""

    def make(name: str, files: dict[str, bytes], author: str = "Alice"):
        created = stack.api("POST", "/v1/sites", token, json={"name": name})
        assert created.status_code == 201, created.text
        site = created.json()
        repo = make_repo(tmp_path / name, files, author=author)
        return site, repo, with_token(site["git_url"], token)

    return make


def _toml(command: str, publish: str = "out", environment: str = "") -> bytes:
    text = f"[build]\ncommand = '''{command}'''\npublish = \"{publish}\"\n"
    if environment:
        text += f"environment = {environment}\n"
    return text.encode()


def _only_deploy(stack: Stack, token: str, site: dict) -> dict:
    found = deploys(stack, token, site["id"])
    assert len(found) == 1, found
    return found[0]


def _assert_step_seconds(deploy: dict) -> None:
    steps = deploy["step_seconds"]
    assert {"checkout", "build", "publish", "activate"} <= set(steps), steps
    assert all(isinstance(v, (int, float)) and v >= 0 for v in steps.values()), steps


def _hugo_version() -> str:
    out = subprocess.run(["hugo", "version"], capture_output=True, text=True, check=True).stdout
    return re.search(r"v(\d+\.\d+\.\d+)", out).group(1)


# -- generators ---------------------------------------------------------------------------


def test_hugo_site_is_detected_built_and_served(stack: Stack, token: str, new_site):
    site, repo, url = new_site(
        "hugo-blog",
        {
            "hugo.toml": b'baseURL = "http://hugo-blog.localhost/"\ntitle = "Hugo Blog"\n'
            b'disableKinds = ["taxonomy", "term", "RSS", "sitemap"]\n',
            "layouts/_default/single.html": b"<!doctype html><title>{{ .Title }}</title>"
            b"<h1>{{ .Title }}</h1><main>{{ .Content }}</main>",
            "layouts/index.html": b"<!doctype html><h1>Home of {{ .Site.Title }}</h1>",
            "content/posts/hello.md": b"---\ntitle: Hello From Hugo\n---\nSome *rendered* text.\n",
        },
    )
    pushed = push(repo, url, "main")
    assert pushed.returncode == 0, pushed.stderr
    expected_generator = f"hugo {_hugo_version()}"
    assert f"building with {expected_generator}: hugo --minify" in pushed.remote, pushed.stderr
    assert f"live at {site['url']}" in pushed.remote, pushed.stderr

    page = stack.page(host_of(site["url"]), "/posts/hello/")
    assert page.status_code == 200, page.status_code
    # Hugo rendered the Markdown through the layout (and --minify dropped the quotes).
    assert "<h1>Hello From Hugo</h1>" in page.text, page.text
    assert "<em>rendered</em>" in page.text, page.text
    home = stack.page(host_of(site["url"]), "/")
    assert home.status_code == 200 and "Home of Hugo Blog" in home.text, home.text

    deploy = _only_deploy(stack, token, site)
    assert deploy["state"] == "live" and deploy["current"], deploy
    assert deploy["generator"] == expected_generator, deploy
    _assert_step_seconds(deploy)
    assert deploy["file_count"] >= 2 and deploy["bytes"] > 0, deploy


def test_mkdocs_material_site_is_built_with_its_theme_assets(stack: Stack, token: str, new_site):
    site, repo, url = new_site(
        "mk-docs",
        {
            "mkdocs.yml": b"site_name: Handbook\ntheme:\n  name: material\n"
            b"nav:\n  - Welcome: index.md\n  - Guide: guide.md\n",
            "docs/index.md": b"# Welcome aboard\n\nThe handbook's first page.\n",
            "docs/guide.md": b"# The guide\n\n```python\nprint('hi')\n```\n",
        },
    )
    pushed = push(repo, url, "main")
    assert pushed.returncode == 0, pushed.stderr
    version = importlib.metadata.version("mkdocs")
    assert f"building with mkdocs {version}: mkdocs build" in pushed.remote, pushed.stderr

    host = host_of(site["url"])
    home = stack.page(host, "/")
    assert home.status_code == 200, home.status_code
    assert "Welcome aboard" in home.text and "md-header" in home.text, home.text[:2000]
    guide = stack.page(host, "/guide/")
    assert guide.status_code == 200 and "The guide" in guide.text

    # The material theme's own stylesheet and script, as the page links them.
    css = re.search(r'href="(assets/stylesheets/main\.[0-9a-f]+\.min\.css)"', home.text)
    js = re.search(r'src="(assets/javascripts/bundle\.[0-9a-f]+\.min\.js)"', home.text)
    assert css and js, home.text[:3000]
    style = stack.page(host, "/" + css.group(1))
    assert style.status_code == 200 and "text/css" in style.headers["Content-Type"]
    assert len(style.content) > 10_000 and b".md-header" in style.content
    script = stack.page(host, "/" + js.group(1))
    assert script.status_code == 200 and len(script.content) > 10_000

    deploy = _only_deploy(stack, token, site)
    assert deploy["state"] == "live" and deploy["generator"] == f"mkdocs {version}", deploy
    _assert_step_seconds(deploy)


def test_ecstatic_toml_command_publish_and_environment(stack: Stack, token: str, new_site):
    command = (
        'mkdir -p out/about && printf "%s" "$GREETING from $SITE_COLOR" > out/index.html'
        " && cp about.txt out/about/index.html && echo made it"
    )
    site, repo, url = new_site(
        "custom-build",
        {
            "ecstatic.toml": _toml(
                command, environment='{ GREETING = "Hello", SITE_COLOR = "teal" }'
            ),
            "about.txt": b"about us",
            "index.html": b"the unbuilt root must not be published",
        },
    )
    pushed = push(repo, url, "main")
    assert pushed.returncode == 0, pushed.stderr
    assert "made it" in pushed.remote, pushed.stderr

    host = host_of(site["url"])
    assert stack.page(host, "/").content == b"Hello from teal"
    assert stack.page(host, "/about/").content == b"about us"
    assert stack.page(host, "/about.txt").status_code == 404  # only "out" is published

    deploy = _only_deploy(stack, token, site)
    assert deploy["state"] == "live" and deploy["generator"] is None, deploy
    assert deploy["file_count"] == 2 and deploy["bytes"] == len(b"Hello from teal" + b"about us")
    _assert_step_seconds(deploy)


# -- output streamed live -----------------------------------------------------------------

LIVE_GAP: dict[str, float] = {}


def test_build_output_reaches_the_pusher_as_it_is_printed(stack: Stack, token: str, new_site):
    site, repo, url = new_site(
        "live-lines",
        {
            "ecstatic.toml": _toml(
                "echo first; sleep 3; echo second; mkdir -p out; echo done > out/index.html"
            )
        },
    )
    pushed = push(repo, url, "main")
    assert pushed.returncode == 0, pushed.stderr
    first, second = pushed.arrival("first"), pushed.arrival("second")
    LIVE_GAP["seconds"] = second - first
    print(f"live output: 'first' at {first:.2f}s, 'second' at {second:.2f}s of the push")
    assert second - first >= 2.0, pushed.lines
    # and "first" was not held back until the push ended
    assert pushed.seconds - first >= 2.0, (first, pushed.seconds)
    assert stack.page(host_of(site["url"]), "/").content == b"done\n"


# -- isolation ----------------------------------------------------------------------------


def test_builds_see_no_secrets_no_data_no_network_and_not_root(stack: Stack, token: str, new_site):
    home = stack.env["ECSTATIC_HOME"]
    ports = {name: stack.env[f"ECSTATIC_{name}_PORT"] for name in ("API", "GIT", "HTTP")}
    probe = (
        "import socket, sys\n"
        "port = int(sys.argv[1])\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', port), timeout=3).close()\n"
        "    print('probe', port, 'connected')\n"
        "except OSError as exc:\n"
        "    print('probe', port, 'refused', type(exc).__name__)\n"
    )
    command = "\n".join(
        [
            "echo ENV-BEGIN; env; echo ENV-END",
            'echo PROC-BEGIN; cat /proc/*/environ | tr "\\000" "\\n"; echo PROC-END',
            f"ls {home}; echo ls-exit=$?",
            f"ls {Path(home).parent}; echo ls-parent-exit=$?",
            "echo uid=$(id -u)",
            *(f"python3 probe.py {port}" for port in ports.values()),
            "mkdir -p out && echo isolated > out/index.html",
        ]
    )
    site, repo, url = new_site(
        "isolated",
        {
            "ecstatic.toml": _toml(command, environment='{ MY_SETTING = "visible" }'),
            "probe.py": probe.encode(),
        },
    )
    pushed = push(repo, url, "main")
    assert pushed.returncode == 0, pushed.stderr
    lines = pushed.remote

    def section(begin: str, end: str) -> list[str]:
        return lines[lines.index(begin) + 1 : lines.index(end)]

    env = section("ENV-BEGIN", "ENV-END")
    proc = section("PROC-BEGIN", "PROC-END")
    # The prints did run: the build's own variables are there...
    assert "MY_SETTING=visible" in env and "HOME=/build-home" in env, env
    assert "MY_SETTING=visible" in proc, proc
    # ...and nothing of the host's: no setting, token, credential, password or CDN key.
    for shown in (env, proc):
        text = "\n".join(shown)
        for secret in ("ECSTATIC", "ecs_", "ecsd_", "BUNNY", token):
            assert secret not in text, (secret, shown)
        assert "password" not in text.lower(), shown
    assert not [v for v in env if v.split("=", 1)[0] not in _SANDBOX_VARIABLES], env

    assert "ls-exit=0" not in lines and any(line.startswith("ls-exit=") for line in lines)
    assert any(f"cannot access '{home}'" in line for line in lines), lines
    uid = next(line for line in lines if line.startswith("uid="))
    assert uid != "uid=0" and uid[4:].isdigit(), uid
    for port in ports.values():
        assert f"probe {port} connected" not in lines, lines
        assert any(line.startswith(f"probe {port} refused") for line in lines), lines

    # The log kept at the api says the same.
    deploy = _only_deploy(stack, token, site)
    kept = _wait_for_log(stack, token, site["id"], deploy["id"], "isolated")
    for port in ports.values():
        assert any(line.startswith(f"probe {port} refused") for line in kept), kept
    assert uid in kept
    assert stack.page(host_of(site["url"]), "/").content == b"isolated\n"


# What the sandbox sets (services/build/bwrap.py environment_for), the user's one and
# what the shell adds; anything else would have leaked in from the host.
_SANDBOX_VARIABLES = {
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR", "CI", "PWD", "SHLVL", "_",
    "MY_SETTING",
}  # fmt: skip


def _wait_for_log(stack, token, site_id, deploy_id, last_line_contains, timeout=10.0):
    """The kept log, once it holds the deploy's end (lines are shipped in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        kept = deploy_log(stack, token, site_id, deploy_id)["lines"]
        if any(last_line_contains in line for line in kept) or time.monotonic() > deadline:
            return kept
        time.sleep(0.2)


# -- failures -----------------------------------------------------------------------------

V1 = b"<!doctype html><h1>Version one</h1>\n" + bytes(range(256))


def test_failing_build_leaves_the_previous_version_served(stack: Stack, token: str, new_site):
    site, repo, url = new_site("breaks", {"index.html": V1})
    assert push(repo, url, "main").returncode == 0
    host = host_of(site["url"])
    assert stack.page(host, "/").content == V1

    commit(
        repo,
        {
            "ecstatic.toml": _toml(
                "echo compiling; echo 'error: template broken at line 7' >&2;"
                " echo 'the last words' >&2; exit 2"
            )
        },
        "break the build",
    )
    pushed = push(repo, url, "main")
    lines = pushed.remote
    failed = [line for line in lines if "deploy failed" in line]
    assert failed == ["error: deploy failed: the build command exited with status 2"], lines
    assert "error: template broken at line 7" in lines and "the last words" in lines, lines
    assert lines.index("the last words") < lines.index(failed[0])
    assert "error: the live site was not changed" in lines, lines

    assert stack.page(host, "/").content == V1  # byte for byte
    newest, first = deploys(stack, token, site["id"])
    assert (newest["state"], newest["reason"]) == ("failed", "build_failed"), newest
    assert first["state"] == "live" and first["current"] and not newest["current"]
    site_now = stack.api("GET", f"/v1/sites/{site['id']}", token).json()
    assert site_now["live_deploy"]["id"] == first["id"]


TIMEOUT_ACCURACY: dict[str, float] = {}


def test_build_over_its_timeout_is_stopped_in_time(stack: Stack, token: str, new_site):
    site, repo, url = new_site("slowpoke", {"index.html": V1})
    assert push(repo, url, "main").returncode == 0
    commit(repo, {"ecstatic.toml": _toml("echo sleeping; sleep 60")}, "sleep forever")

    pushed = push(repo, url, "main", timeout=60)
    began = pushed.arrival("sleeping")
    ended = next(at for at, line in pushed.lines if "deploy failed" in line)
    TIMEOUT_ACCURACY["seconds"] = ended - began
    print(f"timeout: limit {BUILD_TIMEOUT}s, stopped after {ended - began:.2f}s of sleeping")
    assert BUILD_TIMEOUT - 1.5 <= ended - began <= BUILD_TIMEOUT + 3, pushed.lines
    assert f"error: deploy failed: the build timed out after {BUILD_TIMEOUT} s" in pushed.remote
    assert pushed.seconds < BUILD_TIMEOUT + 10

    newest = deploys(stack, token, site["id"])[0]
    assert (newest["state"], newest["reason"]) == ("failed", "build_timeout"), newest
    assert stack.page(host_of(site["url"]), "/").content == V1


@pytest.mark.parametrize(
    "config, why",
    [
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests arrays or tables 5000 deep"),
        (b'[build]\ncommand = "make"\nfrobnicate = true\n', "unknown key 'build.frobnicate'"),
    ],
    ids=["5000-levels", "unknown-key"],
)
def test_malformed_config_is_refused_before_the_branch_moves(
    stack: Stack, token: str, new_site, config: bytes, why: str
):
    name = "refused-" + ("deep" if b"[[[" in config else "key")
    site, repo, url = new_site(name, {"index.html": V1})
    assert push(repo, url, "main").returncode == 0
    old = git(repo, "rev-parse", "HEAD").stdout.strip()
    new = commit(repo, {"ecstatic.toml": config}, "bad config")

    pushed = push(repo, url, "main")
    assert pushed.returncode != 0, pushed.stderr
    refusal = [line for line in pushed.remote if line.startswith("error: deploy rejected:")]
    assert refusal and why in refusal[0], pushed.stderr
    assert "[remote rejected] main -> main (deploy rejected:" in pushed.stderr, pushed.stderr

    remote = git(repo, "ls-remote", url, "refs/heads/main").stdout.split()
    assert remote[0] == old != new, remote
    assert len(deploys(stack, token, site["id"])) == 1  # no deploy was even queued
    assert stack.page(host_of(site["url"]), "/").content == V1


# -- metrics ------------------------------------------------------------------------------


def test_git_metrics_count_what_the_builds_did(stack: Stack, token: str):
    """Runs last: counts the deploys the tests above made."""
    url = f"http://127.0.0.1:{stack.env['ECSTATIC_GIT_PORT']}/metrics"
    text = requests.get(url, timeout=10).text

    def labelled(name: str) -> dict[tuple, float]:
        samples = metric_samples(text, name)
        assert samples, f"{name} missing from {url}"
        return samples

    outcomes = {dict(k)["outcome"] + "/" + dict(k)["reason"]: v
                for k, v in labelled("ecstatic_git_deploys_total").items()}  # fmt: skip
    sites = stack.api("GET", "/v1/sites", token).json()["sites"]
    records = [d for s in sites for d in deploys(stack, token, s["id"])]
    live = sum(d["state"] == "live" for d in records)
    assert live >= 8, records
    assert outcomes.get("live/none") == live, (outcomes, live)
    assert outcomes.get("failed/build_failed", 0) >= 1, outcomes
    assert outcomes.get("failed/build_timeout", 0) >= 1, outcomes

    steps = {
        dict(k)["step"]: v
        for k, v in labelled("ecstatic_git_deploy_step_duration_seconds_count").items()
    }  # noqa: E501
    for step in ("checkout", "build", "publish", "activate", "record"):
        assert steps.get(step, 0) >= live, (step, steps)

    # Every deploy that ran a build command said so in its log (failed ones included).
    logs = [deploy_log(stack, token, d["site_id"], d["id"])["lines"] for d in records]
    built = sum(any(line.startswith("building with") for line in lines) for lines in logs)
    assert built >= 7, records
    builds = labelled("ecstatic_git_build_duration_seconds_count")
    assert sum(builds.values()) == built, (builds, built)

    files = {dict(k)["result"]: v for k, v in labelled("ecstatic_git_deploy_files_total").items()}
    assert set(files) >= {"uploaded", "skipped"}, files
    uploaded = labelled("ecstatic_git_deploy_uploaded_bytes_total")
    assert len(uploaded) == 1 and list(uploaded.values())[0] >= 0

    # Prometheus scrapes the same process as its "git" target.
    prometheus = f"http://127.0.0.1:{stack.prometheus_port}/api/v1/query"
    deadline = time.monotonic() + 30
    while True:
        answer = requests.get(
            prometheus, params={"query": 'ecstatic_git_deploys_total{job="git"}'}, timeout=5
        ).json()["data"]["result"]
        if answer or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {r["metric"]["outcome"] for r in answer} >= {"live", "failed"}, answer
