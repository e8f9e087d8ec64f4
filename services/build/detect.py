"""Decide how to build a checked-out tree when ``ecstatic.toml`` names no command.

Only file names and a bounded read of a config file are looked at; nothing in the tree
is executed here. Order matters: a Hugo site may also hold an ``index.html``.

============  =========================================================  =============
generator     recognised by                                              command
============  =========================================================  =============
hugo          ``hugo.toml|yaml|json``; ``config/_default/``; or          ``hugo --minify``
              ``config.toml|yaml|json`` with a Hugo key plus
              ``content/``, ``layouts/``, ``themes/`` or ``archetypes/``
mkdocs        ``mkdocs.yml`` / ``mkdocs.yaml``                           ``mkdocs build``
jekyll        ``_config.yml`` + ``Gemfile``, ``_layouts/`` or ``_posts/``  ``jekyll build``
eleventy      ``.eleventy.js``, ``eleventy.config.{js,mjs,cjs}``           ``npx @11ty/eleventy``
(none)        anything else: plain files, published as they are          (no build)
============  =========================================================  =============

``mkdocs build`` is not ``--strict``: a broken link is a warning in the live log, as it
is on a laptop; sites that want warnings to fail set ``command`` themselves. Jekyll runs
without ``bundle exec`` and Eleventy through ``npx``: with no network in the sandbox
(see ``bwrap.py``) they work only with what the host or a committed ``node_modules``
provides.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from services.build.config import BuildConfig, ConfigError

__all__ = ["DEFAULTS", "BuildPlan", "check_pin", "detect", "generator_version"]

# generator -> (command, publish directory, version command)
DEFAULTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "hugo": ("hugo --minify", "public", ("hugo", "version")),
    "mkdocs": ("mkdocs build", "site", ("mkdocs", "--version")),
    "jekyll": ("jekyll build", "_site", ("jekyll", "--version")),
    "eleventy": ("npx @11ty/eleventy", "_site", ("eleventy", "--version")),
}
_HUGO_FILES = ("hugo.toml", "hugo.yaml", "hugo.yml", "hugo.json")
_GENERIC_CONFIGS = ("config.toml", "config.yaml", "config.yml", "config.json")
_HUGO_DIRS = ("content", "layouts", "themes", "archetypes")
# Keys only Hugo's site config uses (case-insensitive, as Hugo reads them).
_HUGO_MARKERS = re.compile(
    r"""^\s*["']?(baseurl|languagecode|theme|defaultcontentlanguage|paginate|"""
    r"""\[(params|taxonomies|markup|menu|outputs|module)\b)""",
    re.IGNORECASE | re.MULTILINE,
)
_ELEVENTY_FILES = (
    ".eleventy.js",
    "eleventy.config.js",
    "eleventy.config.mjs",
    "eleventy.config.cjs",
)
_VERSION = re.compile(r"\bv?(\d+\.\d+(?:\.\d+)?)")
_MAX_SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class BuildPlan:
    """What to run and what to publish.

    Attributes:
        generator: ``hugo``, ``mkdocs``, ``jekyll``, ``eleventy``, or None (plain files
            or an unrecognised custom command).
        command: The build command, or None when nothing is built.
        publish: Directory to publish, relative to the tree ("" is the root).
    """

    generator: str | None
    command: str | None
    publish: str


def detect(tree: Path, config: BuildConfig) -> BuildPlan:
    """The build plan for a checked-out ``tree`` under ``config``.

    A configured command always wins (the generator is then the pin, or a guess for the
    deploy record); a pinned generator without a command uses that generator's defaults;
    otherwise the tree decides. A configured ``publish`` overrides the default directory.
    """
    if config.command is not None:
        return BuildPlan(config.generator or sniff(tree), config.command, config.publish)
    generator = config.generator or sniff(tree)
    if generator is None:
        return BuildPlan(None, None, config.publish)
    command, publish, _ = DEFAULTS[generator]
    return BuildPlan(generator, command, config.publish or publish)


def sniff(tree: Path) -> str | None:
    """The generator a tree's files point to, or None for plain files."""
    if any(_is_file(tree / name) for name in _HUGO_FILES) or (tree / "config/_default").is_dir():
        return "hugo"
    if any((tree / d).is_dir() for d in _HUGO_DIRS):
        for name in _GENERIC_CONFIGS:
            if _is_file(tree / name) and _HUGO_MARKERS.search(_head(tree / name)):
                return "hugo"
    if _is_file(tree / "mkdocs.yml") or _is_file(tree / "mkdocs.yaml"):
        return "mkdocs"
    if _is_file(tree / "_config.yml") and (
        _is_file(tree / "Gemfile") or (tree / "_layouts").is_dir() or (tree / "_posts").is_dir()
    ):
        return "jekyll"
    if any(_is_file(tree / name) for name in _ELEVENTY_FILES):
        return "eleventy"
    return None


def generator_version(generator: str | None, path: str, timeout: float = 20.0) -> str | None:
    """The installed version of ``generator`` (``"0.111.3"``), for the deploy record.

    Runs the generator's own version command (our installed tool, no user input) with
    ``path`` as PATH, normally ``Sandbox.path()`` so it is the binary the build uses.
    None when the generator is unknown, missing, or prints no version.
    """
    if generator not in DEFAULTS:
        return None
    argv = list(DEFAULTS[generator][2])
    executable = shutil.which(argv[0], path=path)
    if executable is None:
        return None
    try:
        done = subprocess.run(
            [executable, *argv[1:]],
            capture_output=True,
            env={"PATH": path, "LANG": "C.UTF-8"},
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(done.stdout.decode("utf-8", "replace"))
    return match.group(1) if done.returncode == 0 and match else None


def check_pin(config: BuildConfig, generator: str | None, version: str | None) -> None:
    """Refuse the deploy when the pinned generator version is not what the host has.

    A pin is a version prefix on dot boundaries: ``0.111`` matches ``0.111.3``, not
    ``0.1110``.

    Raises:
        ConfigError: the pin cannot be honoured.
    """
    pin = config.generator_version
    if pin is None or config.generator is None:
        return
    name = config.generator
    if generator != name:
        raise ConfigError(f"ecstatic.toml pins {name} {pin} but the build uses {generator}")
    if version is None:
        raise ConfigError(f"ecstatic.toml pins {name} {pin} but {name} is not installed here")
    if not (version == pin or version.startswith(pin + ".")):
        raise ConfigError(f"ecstatic.toml pins {name} {pin} but this host has {name} {version}")


def _is_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _head(path: Path) -> str:
    with path.open("rb") as handle:
        return handle.read(_MAX_SNIFF_BYTES).decode("utf-8", "replace")
