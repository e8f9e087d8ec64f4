"""The build step of a deploy, as a library: checked-out tree in, files to publish out.

A leaf package (it imports only the standard library and itself), so any room, such as
the git receiver's deploy pipeline, can call it. The usual sequence::

    config = parse_config(raw_toml_or_None)              # ConfigError -> reject the push
    plan = detect(tree, config)                          # BuildPlan(generator, command, publish)
    version = generator_version(plan.generator, sandbox.path())
    check_pin(config, plan.generator, version)           # ConfigError when the pin differs
    if plan.command is None:                             # plain files: publish tree/plan.publish
        ...
    result = run(plan.command, tree, fresh_workdir, on_line=send_to_pusher,
                 publish=plan.publish, environment=config.environment,
                 limits=BuildLimits(), sandbox=sandbox, slot=slot)
    # result.ok -> publish result.publish_dir; else report result.reason/message/tail

``config`` parses ``ecstatic.toml``; ``detect`` picks a generator; ``sandbox`` runs the
command under bubblewrap (``bwrap`` builds its command line); ``workspace`` prepares and
checks the work directory; ``limits`` holds ``BuildLimits`` and ``BuildResult``.
"""

from services.build.bwrap import Sandbox
from services.build.config import BuildConfig, ConfigError, parse_config
from services.build.detect import BuildPlan, check_pin, detect, generator_version
from services.build.limits import REASONS, BuildLimits, BuildResult
from services.build.sandbox import run

__all__ = [
    "REASONS",
    "BuildConfig",
    "BuildLimits",
    "BuildPlan",
    "BuildResult",
    "ConfigError",
    "Sandbox",
    "check_pin",
    "detect",
    "generator_version",
    "parse_config",
    "run",
]
