"""A git receiver built from the intake pieces this suite tests, plus a server to run it.

The deploy pipeline is being rewritten elsewhere, so these tests wire their own small
deployer from real parts: ``plan_checkout`` refuses before the ref moves (``update``),
and ``post-receive`` publishes with ``iter_files`` into a real ``LocalCDN`` under
numbered release ids. Everything in front of dulwich is the production chain:
``ErrorGuard -> BasicAuth -> guard (PushGate, BodyGuard) -> dulwich + our handlers``.

Run as a script, it serves that app under gunicorn (gthread, one worker) for tests that
need a separate process: memory, kill -9, slow sockets, log output.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from dulwich.errors import HookError
from dulwich.hooks import Hook
from dulwich.web import make_wsgi_chain

from services.cdn.local import LocalCDN
from services.git.auth import ENV_SITE, ENV_SITE_ID, BasicAuth
from services.git.backend import SiteBackend, SiteRepos
from services.git.checkout import DeployRejected, Limits, iter_files, plan_checkout
from services.git.gate import guard
from services.git.limits import IntakeLimits
from services.git.locks import SiteLocks
from services.git.middleware import ClosingIterator, ErrorGuard
from services.git.receive import make_handlers

_ZERO = b"0" * 40


class CheckHook(Hook):
    def __init__(self, repo, limits):
        self._repo, self._limits = repo, limits

    def execute(self, ref, old, new):
        if new == _ZERO:
            return b"", b""
        try:
            plan_checkout(self._repo.object_store, new, self._limits)
        except DeployRejected as exc:
            raise HookError(f"deploy rejected: {exc.message}") from exc
        return b"", b""


class PublishHook(Hook):
    def __init__(self, room, repo, site_id, site):
        self._room, self._repo, self._site_id, self._site = room, repo, site_id, site

    def execute(self, client_refs):
        lines = []
        for _old, new, ref in client_refs:
            if ref != b"refs/heads/main" or new == _ZERO:
                continue
            store = self._repo.object_store
            with self._room.locks.hold(self._site_id):
                try:
                    plan = plan_checkout(store, new, self._room.limits)
                    release = f"{next(self._room.numbers):08d}-{plan.commit[:12]}"
                    result = self._room.cdn.publish(
                        self._site_id,
                        self._site["hostnames"],
                        release,
                        iter_files(store, plan, self._room.limits),
                    )
                except DeployRejected as exc:
                    lines.append(f"error: deploy rejected: {exc.message}")
                    lines.append("error: the live site was not changed")
                    continue
            lines.append(f"published {result.file_count} files as release {release}")
            lines.append(f"live at {self._site['url']}")
        return "".join(f"{line}\n" for line in lines).encode()


class Room:
    """The app: real repos, real CDN, production intake chain; ``authorizer`` is a fake."""

    def __init__(self, root: Path, authorizer, limits: Limits, intake: IntakeLimits):
        self.root = Path(root)
        self.repos = SiteRepos(self.root / "git")
        self.cdn = LocalCDN(self.root / "cdn", sync=False)
        self.locks = SiteLocks(self.root / "git" / ".locks", timeout=30)
        self.limits = limits
        self.repos.sweep()
        self.cdn.sweep()
        # Deploy numbers come from the api in production; here, carry on from the disk.
        done = [r.name for r in (self.root / "cdn" / "releases").glob("*/[0-9]*")]
        self.numbers = itertools.count(1 + max((int(n[:8]) for n in done), default=0))
        handlers = make_handlers(intake)
        chain = guard(self._git(handlers), intake, self.root / "git" / ".spool")
        self.app = ErrorGuard(BasicAuth(chain, authorizer))

    def _git(self, handlers):
        def app(environ, start_response):
            site_id, site = environ[ENV_SITE_ID], environ[ENV_SITE]

            def hooks(repo):
                return {
                    "update": CheckHook(repo, self.limits),
                    "post-receive": PublishHook(self, repo, site_id, site),
                }

            backend = SiteBackend(self.repos, site_id, f"/git/{site_id}.git", hooks)
            result = make_wsgi_chain(backend, handlers=handlers)(environ, start_response)
            return ClosingIterator(result, backend.close)

        return app


def main() -> None:
    """``python room_kit.py ROOT SPEC_JSON``: serve a Room under gunicorn on a free port."""
    sys.path.insert(0, str(Path(__file__).parent))
    from git_kit import FakeAuthorizer, make_site
    from gunicorn.app.base import BaseApplication

    from services.core.logs import logging_dict, setup_logging

    root, spec = Path(sys.argv[1]), json.loads(sys.argv[2])
    authorizer = FakeAuthorizer()
    for site_id, name, token in spec["sites"]:
        site = make_site(site_id, name)
        site["user_id"] = spec.get("users", {}).get(token, token)
        authorizer.add(token, site)
    room = Room(root, authorizer, Limits(**spec["limits"]), IntakeLimits(**spec["intake"]))
    setup_logging("INFO", "git-test")

    class Server(BaseApplication):
        def load_config(self):
            for key, value in {
                "bind": [f"127.0.0.1:{spec['port']}"],
                "workers": 1,
                "worker_class": "gthread",
                "threads": spec.get("threads", 8),
                "timeout": 120,
                "accesslog": None,
                "errorlog": "-",
                "logconfig_dict": logging_dict("INFO", "git-test"),
                "control_socket_disable": True,
            }.items():
                self.cfg.set(key, value)

        def load(self):
            return room.app

    Server().run()


if __name__ == "__main__":
    main()
