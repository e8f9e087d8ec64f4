"""The ``ecstatic`` command: run the local stack, serve targets, administer users."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.core.config import Config, ConfigError
from services.core.private_files import owner_only

__all__ = ["main"]


def _quickstart(config: Config) -> str:
    api = config.public_url
    site = config.site_url("hello")
    ecstatic = Path(sys.executable).parent / "ecstatic"
    auth = '-H "Authorization: Bearer $TOKEN"'
    stats = f"{api}/v1/sites/$SITE/stats"
    return f"""
Ecstatic is up.
  api, git and query: {api}   (git remotes under {api}/git/)
  sites:              {config.site_scheme}://<name>.{config.sites_domain}:{config.port("http")}/
  prometheus:         http://127.0.0.1:{config.port("prometheus")}/
  state:              {config.home}

Quickstart (copy and paste):
  export ECSTATIC_HOME={config.home}
  TOKEN=$({ecstatic} admin create-user alice | tail -n1)
  SITE=$(curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
         -d '{{"name":"hello"}}' {api}/v1/sites \\
         | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  mkdir -p hello && cd hello && echo '<h1>Hello from Ecstatic</h1>' > index.html
  git init -q -b main && git add .
  git -c user.name=me -c user.email=me@example.com commit -qm hello
  git push http://alice:$TOKEN@{api.split("://", 1)[1]}/git/$SITE.git main
  curl {site}    # or open it in a browser
  sleep 3        # the intake batches the access log about once a second
  # curl counts as a bot (browsers do not), and bots are left out unless asked for:
  curl {auth} "{stats}/breakdown?dimension=path&period=24h&bots=include"
`{ecstatic} status` shows every part; `{ecstatic} down` stops them.
"""


def cmd_up(config: Config, args) -> int:
    from services.cli.stack import Stack, StackError

    try:
        Stack(config).up(timeout=args.timeout)
    except StackError as exc:
        print(f"ecstatic up failed: {exc}", file=sys.stderr)
        return 1
    print(_quickstart(config))
    return 0


def cmd_down(config: Config, args) -> int:
    from services.cli.stack import Stack

    print("stopped" if Stack(config).down() else "not running")
    return 0


def cmd_start_stop(config: Config, args) -> int:
    from services.cli.stack import Stack

    result = Stack(config).control(args.command, args.parts)
    print(result.stdout.strip())
    return 0 if result.returncode == 0 else 1


def cmd_restart(config: Config, args) -> int:
    from services.cli.stack import Stack, StackError

    stack = Stack(config)
    for name in args.parts:
        try:
            program = stack.restart(name, timeout=args.timeout)
        except StackError as exc:
            print(f"ecstatic restart failed: {exc}", file=sys.stderr)
            return 1
        print(f"{name} restarted ({program})")
    return 0


def status_report(config: Config) -> dict:
    """Each part with its URL, supervisor state and health, plus Prometheus targets."""
    from services.cli.stack import Stack, parts

    stack = Stack(config)
    states = stack.states()
    health = stack.health()
    return {
        "home": str(config.home),
        "api_url": config.public_url,
        "git_url": f"{config.public_url}/git",
        "query_url": config.public_url,
        "sites_url": f"{config.site_scheme}://<name>.{config.sites_domain}:{config.port('http')}/",
        "prometheus_url": f"http://127.0.0.1:{config.port('prometheus')}",
        "parts": [
            {
                "name": p.name,
                "url": p.health_url,
                "state": states.get(p.name, "UNKNOWN"),
                "healthy": health[p.name],
            }
            for p in parts(config)
        ],
        "targets": stack.prometheus_targets(),
    }


def cmd_status(config: Config, args) -> int:
    report = status_report(config)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"home: {report['home']}\napi/query: {report['api_url']}  git: {report['git_url']}")
        for part in report["parts"]:
            mark = "healthy" if part["healthy"] else "UNHEALTHY"
            print(f"  {part['name']:<14} {part['state']:<9} {mark:<10} {part['url']}")
        print("prometheus targets:")
        for target in report["targets"] or [{"job": "(prometheus down)", "health": "-", "url": ""}]:
            print(f"  {target['job']:<14} {target['health']:<9} {target['url']}")
    return 0 if all(p["healthy"] for p in report["parts"]) else 1


def cmd_serve(config: Config, args) -> int:
    from services import targets
    from services.server import serve

    try:
        targets.resolve(args.targets)
    except targets.TargetError as exc:
        print(f"ecstatic serve: {exc}", file=sys.stderr)
        return 2
    serve(args.targets, config)
    return 0


def cmd_create_user(config: Config, args) -> int:
    from services.core.errors import EcstaticError
    from services.falcon_apps.api.store import MetadataStore

    config.api_db.parent.mkdir(parents=True, exist_ok=True)
    try:
        user, token = MetadataStore(config.api_db).create_user(args.name)
    except EcstaticError as exc:
        print(f"ecstatic admin create-user: {exc.message}", file=sys.stderr)
        return 1
    print(f"created user {user['name']} ({user['id']}); API token (shown once):")
    print(token)
    return 0


def parser() -> argparse.ArgumentParser:
    """The command-line grammar."""
    p = argparse.ArgumentParser(prog="ecstatic", description="Ecstatic static-site host")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local stack in the background and wait until healthy")
    up.add_argument("--timeout", type=float, default=120.0)
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the local stack").set_defaults(func=cmd_down)
    for name in ("start", "stop"):
        sp = sub.add_parser(name, help=f"{name} parts of the running stack (e.g. api intake-query)")
        sp.add_argument("parts", nargs="+")
        sp.set_defaults(func=cmd_start_stop)
    rs = sub.add_parser(
        "restart",
        help="restart parts of the running stack; intake-query hands over (no line lost)",
    )
    rs.add_argument("parts", nargs="+")
    rs.add_argument("--timeout", type=float, default=120.0)
    rs.set_defaults(func=cmd_restart)
    st = sub.add_parser("status", help="each part with its URL and health, and Prometheus targets")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    serve = sub.add_parser(
        "serve", help="run targets in this process, e.g. api or intake,query or all"
    )
    serve.add_argument("targets")
    serve.set_defaults(func=cmd_serve)
    admin = sub.add_parser("admin", help="administration").add_subparsers(
        dest="admin", required=True
    )
    cu = admin.add_parser("create-user", help="create a user; prints its API token last")
    cu.add_argument("name")
    cu.set_defaults(func=cmd_create_user)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ecstatic`` console script."""
    owner_only()  # before anything is created: configs, logs, the api database
    args = parser().parse_args(argv)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"ecstatic: {exc}", file=sys.stderr)
        return 2
    return args.func(config, args)


if __name__ == "__main__":
    sys.exit(main())
