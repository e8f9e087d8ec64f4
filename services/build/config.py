"""Parse a site's ``ecstatic.toml`` into a ``BuildConfig``, refusing anything unsafe.

The file is pushed by the site's owner, so it is untrusted input. Netlify's names are used::

    publish = "dist"              # legacy top-level form, still accepted

    [build]
    command = "hugo --minify"     # run as ``sh -c COMMAND`` inside the sandbox
    publish = "public"            # wins over the top-level ``publish``
    environment = { HUGO_ENV = "production" }

    [build.generator]             # optional pin, checked against the host's tools
    name = "hugo"                 # one of GENERATORS
    version = "0.111"             # a prefix of the installed version

Every refusal is a ``ConfigError`` whose ``message`` is one line, fit for a
``remote: deploy rejected:`` line. Nothing else escapes ``parse_config``: a hypothesis
test feeds it arbitrary bytes.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field

__all__ = [
    "CONFIG_FILE",
    "GENERATORS",
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "BuildConfig",
    "ConfigError",
    "check_environment",
    "parse_config",
]

CONFIG_FILE = "ecstatic.toml"
MAX_CONFIG_BYTES = 64 * 1024
MAX_DEPTH = 8  # arrays/inline tables; the schema itself needs 2
GENERATORS = ("hugo", "mkdocs", "jekyll", "eleventy")
MAX_ENV_VARS = 64
MAX_ENV_NAME = 128
MAX_ENV_VALUE = 4096
MAX_COMMAND = 4096

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = {"PATH", "HOME"}
_RESERVED_PREFIXES = ("LD_", "ECSTATIC_")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
_TOP_KEYS = ("build", "publish")
_BUILD_KEYS = ("command", "environment", "generator", "publish")
_GENERATOR_KEYS = ("name", "version")


class ConfigError(ValueError):
    """``ecstatic.toml`` is refused; ``message`` is one line telling the pusher why."""

    def __init__(self, message: str):
        """Keep ``message`` for the pusher."""
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class BuildConfig:
    """How a site is built and what gets published.

    Attributes:
        command: The build command, or None to auto-detect (see ``detect.py``).
        publish: Directory to publish, relative to the repository root and normalised
            (``"public"``, ``"docs/site"``). ``""`` means "the default": the detected
            generator's output directory, or the root when nothing is built.
        environment: Extra variables for the build command (validated names).
        generator: A pinned generator name from ``GENERATORS``, or None.
        generator_version: A pinned version prefix (``"0.111"``), or None.
    """

    command: str | None = None
    publish: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    generator: str | None = None
    generator_version: str | None = None


def parse_config(data: bytes | None) -> BuildConfig:
    """Parse the raw bytes of ``ecstatic.toml`` (None when the file is absent).

    Raises:
        ConfigError: oversized, not UTF-8, nested too deeply, invalid TOML (with line
            and column), unknown keys, wrong types, an unsafe ``publish`` or environment.
    """
    if data is None:
        return BuildConfig()
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{CONFIG_FILE} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{CONFIG_FILE} is not UTF-8 (byte {exc.start})") from None
    return _from_text(text)


def _from_text(text: str) -> BuildConfig:
    depth = _max_depth(text)
    if depth > MAX_DEPTH:
        raise ConfigError(f"{CONFIG_FILE} nests arrays or tables {depth} deep (limit {MAX_DEPTH})")
    try:
        settings = tomllib.loads(text)
    except ValueError as exc:
        # TOMLDecodeError ends with "(at line L, column C)"; a bare ValueError comes from
        # int() refusing a 4,300+ digit integer, which tomllib does not wrap.
        raise ConfigError(f"{CONFIG_FILE} is not valid TOML: {_one_line(str(exc))}") from None
    except RecursionError:
        # Backstop for anything the depth pre-check misjudged: tomllib recurses.
        raise ConfigError(f"{CONFIG_FILE} nests too deeply") from None
    _known(settings, _TOP_KEYS, "")
    build = _table(settings.get("build", {}), "build")
    _known(build, _BUILD_KEYS, "build.")
    publish = build.get("publish", settings.get("publish", ""))
    key = "build.publish" if "publish" in build else "publish"
    generator, version = _generator(build.get("generator"))
    return BuildConfig(
        command=_command(build.get("command")),
        publish=_publish(_string(publish, key), key),
        environment=check_environment(_table(build.get("environment", {}), "build.environment")),
        generator=generator,
        generator_version=version,
    )


def check_environment(env: dict) -> dict[str, str]:
    """Validate build environment variables (also used by the sandbox as a second check).

    Raises:
        ConfigError: bad or reserved names, non-string values, too many or too long.
    """
    if len(env) > MAX_ENV_VARS:
        raise _reject(f"build.environment has {len(env)} variables (limit {MAX_ENV_VARS})")
    checked: dict[str, str] = {}
    for name, value in env.items():
        shown = _shown(name)
        if len(name) > MAX_ENV_NAME or not _ENV_NAME.fullmatch(name):
            raise _reject(
                f"build.environment: {shown} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
            )
        if name in _RESERVED or name.startswith(_RESERVED_PREFIXES):
            raise _reject(f"build.environment: {shown} is reserved and cannot be set")
        value = _string(value, f"build.environment.{name}")
        if len(value) > MAX_ENV_VALUE:
            raise _reject(f"build.environment.{name} is longer than {MAX_ENV_VALUE} characters")
        if "\x00" in value:
            raise _reject(f"build.environment.{name} contains a NUL character")
        checked[name] = value
    return checked


# -- internals ------------------------------------------------------------------------


def _max_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting outside strings and comments, in one linear pass.

    Approximate on purpose (table headers count 1-2, which the limit allows): it only
    has to keep tomllib's recursion far from Python's limit; tomllib stays the judge.
    """
    depth = deepest = i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in "\"'":
            i = _skip_string(text, i)
            continue
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return deepest


def _skip_string(text: str, i: int) -> int:
    """Index just past the string starting at ``text[i]`` (or the end of the text)."""
    quote = text[i]
    delimiter = quote * 3 if text.startswith(quote * 3, i) else quote
    i += len(delimiter)
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
        elif text.startswith(delimiter, i):
            return i + len(delimiter)
        elif text[i] == "\n" and len(delimiter) == 1:
            return i  # unterminated single-line string: tomllib reports it
        else:
            i += 1
    return i


def _known(table: dict, keys: tuple[str, ...], prefix: str) -> None:
    unknown = sorted(set(table) - set(keys))
    if unknown:
        names = ", ".join(_shown(prefix + key) for key in unknown[:5])
        raise _reject(f"unknown key {names} (known: {', '.join(prefix + k for k in keys)})")


def _table(value, key: str) -> dict:
    if not isinstance(value, dict):
        raise _reject(f"{key} must be a table, not {_kind(value)}")
    return value


def _string(value, key: str) -> str:
    if not isinstance(value, str):
        raise _reject(f"{key} must be a string, not {_kind(value)}")
    return value


def _command(value) -> str | None:
    if value is None:
        return None
    command = _string(value, "build.command").strip()
    if not command:
        raise _reject("build.command is empty (remove it to auto-detect)")
    if len(command) > MAX_COMMAND or "\x00" in command:
        raise _reject(f"build.command must be under {MAX_COMMAND} characters, without NUL")
    return command


def _publish(publish: str, key: str) -> str:
    # Stays inside the tree: relative, no "..", no ".git", no NUL or backslash.
    bad = f"{key} = {_shown(publish)} must be a relative directory inside the repository"
    if publish.startswith("/") or "\\" in publish or "\x00" in publish or len(publish) > 1000:
        raise _reject(bad)
    parts = [p for p in publish.split("/") if p not in ("", ".")]
    if any(p == ".." or p.lower() == ".git" for p in parts):
        raise _reject(bad)
    return "/".join(parts)


def _generator(value) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    table = _table(value, "build.generator")
    _known(table, _GENERATOR_KEYS, "build.generator.")
    if "name" not in table:
        raise _reject(f"build.generator needs a name ({', '.join(GENERATORS)})")
    name = _string(table["name"], "build.generator.name")
    if name not in GENERATORS:
        raise _reject(f"build.generator.name {_shown(name)} is not one of {', '.join(GENERATORS)}")
    version = table.get("version")
    if version is not None:
        version = _string(version, "build.generator.version").removeprefix("v")
        if not _VERSION.fullmatch(version):
            raise _reject(f"build.generator.version {_shown(version)} is not a version")
    return name, version


def _reject(message: str) -> ConfigError:
    return ConfigError(f"{CONFIG_FILE}: {message}")


def _kind(value) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), "a date or time")


def _shown(text: str) -> str:
    # repr() escapes newlines and control characters, so the message stays one line.
    return repr(text if len(text) <= 60 else text[:60] + "...")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
